import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

// What Cloudflare checks only at deploy time, checked here: every Durable Object class the Worker binds was created by
// a migration (or renamed from a class one created), renames come after the class they rename, and the Worker exports
// every bound class.
const toml = readFileSync("wrangler.toml", "utf8");
const index = readFileSync("src/index.ts", "utf8");

const blocks = (header: string) =>
  toml
    .split(`[[${header}]]`)
    .slice(1)
    .map((b) => b.split(/\n\[/)[0] ?? "");
const list = (block: string, key: string) =>
  [...(new RegExp(`${key}\\s*=\\s*\\[([^\\]]*)\\]`).exec(block)?.[1] ?? "").matchAll(/"([^"]+)"/g)].map((m) => m[1]);
const renames = (block: string) =>
  [...block.matchAll(/\{\s*from\s*=\s*"([^"]+)",\s*to\s*=\s*"([^"]+)"\s*\}/g)].map((m) => ({ from: m[1], to: m[2] }));

describe("Durable Object migrations", () => {
  it("create or rename into every bound class, in order, and the Worker exports each", () => {
    const bound = blocks("durable_objects.bindings").map((b) => /class_name\s*=\s*"([^"]+)"/.exec(b)?.[1]);
    expect(bound.sort()).toEqual(["AccountObject", "Counter", "KeyObject", "KeyRelay"]);
    const live = new Set<string>();
    const tags: string[] = [];
    for (const block of blocks("migrations")) {
      tags.push(/tag\s*=\s*"([^"]+)"/.exec(block)?.[1] ?? "");
      for (const { from, to } of renames(block)) {
        expect(live.has(from as string), `${from} exists before it is renamed`).toBe(true);
        live.delete(from as string);
        live.add(to as string);
      }
      for (const created of list(block, "new_sqlite_classes")) live.add(created as string);
    }
    expect(tags).toEqual(["v1", "v2", "v3", "v4"]);
    expect([...live].sort()).toEqual(["AccountObject", "Counter", "KeyObject", "KeyRelay"]);
    for (const name of bound) expect(index).toMatch(new RegExp(`export \\{ ${name} \\}`));
  });
});
