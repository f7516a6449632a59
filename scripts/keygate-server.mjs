// Serves the built worker with Miniflare on 127.0.0.1, with a fresh in-memory D1 (migrated) and Durable Objects.
// Used by the benchmark and the browser test; `wrangler dev` puts a proxy in front that caps throughput.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { convertV4MiniflareOptions, Miniflare } from "miniflare";

/**
 * Builds (`wrangler deploy --dry-run --outdir dist`) and starts Keygate on `port`. `entry`, when given, is the source
 * of a module that wraps `./index.js` and becomes the main module.
 * `assets: false` leaves out the static assets (the demo page).
 * @param {{ port: number, bindings: Record<string, string>, entry?: string, assets?: boolean }} options
 */
export async function startKeygate({ port, bindings, entry, assets = true }) {
  execFileSync("sh", ["scripts/wrangler.sh", "deploy", "--dry-run", "--outdir", "dist"], { stdio: "ignore" });
  const toml = readFileSync("wrangler.toml", "utf8");
  const compatibilityDate = /compatibility_date\s*=\s*"([^"]+)"/.exec(toml)?.[1];
  const modules = [{ type: "ESModule", path: resolve("dist/index.js") }];
  if (entry) modules.unshift({ type: "ESModule", path: resolve("dist/entry.mjs"), contents: entry });
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      host: "127.0.0.1",
      port,
      modulesRoot: resolve("dist"),
      modules,
      compatibilityDate,
      d1Databases: ["DB"],
      durableObjects: { KEYS: { className: "KeyObject", useSQLite: true }, COUNTERS: { className: "Counter", useSQLite: true } },
      bindings: { RESOURCE_TYPES: "mailbox,process,project", ...bindings },
      // As wrangler.toml's [assets]: the Worker answers first and reads public/ through ASSETS. Locally the assets
      // router is a JavaScript Worker in front of Keygate that halves every scenario's throughput, so the benchmark
      // leaves it out (it serves no demo page) and measures Keygate's own cost.
      ...(assets
        ? {
            assets: {
              directory: resolve("public"),
              binding: "ASSETS",
              routerConfig: { has_user_worker: true, invoke_user_worker_ahead_of_assets: true },
            },
          }
        : {}),
    }),
  );
  const url = await mf.ready;
  const db = await mf.getD1Database("DB");
  for (const file of readdirSync("migrations")
    .filter((f) => f.endsWith(".sql"))
    .sort()) {
    const statements = readFileSync(`migrations/${file}`, "utf8")
      .split("--> statement-breakpoint")
      .map((s) => s.trim())
      .filter(Boolean);
    await db.batch(statements.map((s) => db.prepare(s)));
  }
  return { mf, url: url.origin };
}
