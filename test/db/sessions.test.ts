import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, callWith, createKey, expectProblem, provision } from "../helpers";

const BOOKMARK = /^[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{32}$/;

/** The real D1, noting how each session is opened (the Sessions API): what a request's reads were asked to catch up with. */
function noting(opened: string[]): D1Database {
  return new Proxy(env.DB, {
    get(target, prop) {
      if (prop === "withSession")
        return (arg: string) => {
          opened.push(arg);
          return target.withSession(arg);
        };
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

describe("reads through D1 sessions, and bookmarks", () => {
  it("answers a change with its bookmark; a read sent with it is read from a copy caught up with it and sees the change", async () => {
    const { key } = await provision();
    const made = await call("/v1/api-keys", { key: key.key, body: { name: "bookmarked" } });
    expect(made.status).toBe(201);
    const bookmark = made.headers.get("Keygate-Bookmark") as string;
    expect(bookmark).toMatch(BOOKMARK);
    const { id } = await made.json<{ id: string }>();

    const opened: string[] = [];
    const read = await callWith({ DB: noting(opened) }, `/v1/api-keys/${id}`, { key: key.key, headers: { "Keygate-Bookmark": bookmark } });
    expect(read.status).toBe(200);
    expect(await read.json()).toMatchObject({ id, name: "bookmarked" });
    expect(opened).toEqual([bookmark]);
    // Without one, the nearest copy; a malformed one is no bookmark.
    for (const sent of [undefined, "not a bookmark"]) {
      opened.length = 0;
      const headers: Record<string, string> = sent === undefined ? {} : { "Keygate-Bookmark": sent };
      expect((await callWith({ DB: noting(opened) }, `/v1/api-keys/${id}`, { key: key.key, headers })).status).toBe(200);
      expect(opened).toEqual(["first-unconstrained"]);
    }
  });

  it("opens no session for a request that reads nothing", async () => {
    const opened: string[] = [];
    const res = await callWith({ DB: noting(opened) }, "/health");
    expect(res.status).toBe(200);
    expect(res.headers.get("Keygate-Bookmark")).toBeNull();
    expect(opened).toEqual([]);
  });

  it("hands a revocation's bookmark to the key's object, whose next read of the key catches up with it", async () => {
    const { key } = await provision();
    const k = await createKey(key.key);
    expect((await call("/v1/whoami", { key: k.key })).status).toBe(200);
    const revoked = await call(`/v1/api-keys/${k.id}`, { method: "DELETE", key: key.key });
    expect(revoked.status).toBe(200);
    const answered = revoked.headers.get("Keygate-Bookmark") as string;
    const told = await runInDurableObject(env.KEYS.getByName(`key:${k.id}`), (instance) => Reflect.get(instance, "bookmark") as string);
    expect(told).toMatch(BOOKMARK);
    // Taken after the revocation was written, and no later than the answer's.
    expect(told <= answered).toBe(true);
    await expectProblem(await call("/v1/whoami", { key: k.key }), 401, "key_revoked");
  });
});
