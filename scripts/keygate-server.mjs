// Serves the built worker with Miniflare on 127.0.0.1, with a fresh in-memory D1 (migrated) and Durable Objects.
// Used by the benchmark, the fuzzers and the browser test; `wrangler dev` puts a proxy in front that caps throughput.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { convertV4MiniflareOptions, Miniflare } from "miniflare";

/** The name of isolate `i` (0-based) when Keygate runs in several: the first one holds the Durable Object classes. */
const isolateName = (i) => (i === 0 ? "keygate" : `keygate-${i + 1}`);

/**
 * Builds (`wrangler deploy --dry-run`, into a directory of its own, so servers started side by side never read a
 * half-written bundle of another's build) and starts Keygate on `port`. `entry`, when given, is the source
 * of a module that wraps `./index.js` and becomes the main module.
 * `assets: false` leaves out the static assets (the demo page).
 *
 * `isolates` (default 1): how many Workers run the same bundle, as several isolates of one deployment would. They
 * share the D1 database, and the Durable Object bindings (KEYS, RELAYS, COUNTERS, ACCOUNTS) of every one point at the first one's
 * classes, so all reach the same objects. Either a count, or one object of extra bindings per isolate (e.g. a setting
 * only one of them has). `url` is the first isolate behind Miniflare's entry Worker, as with a single one; `urls` has
 * each isolate's own address on 127.0.0.1, straight to its Worker (with one isolate, just `url`). `names` are the
 * isolates' Worker names: a request to `url` with the header `MF-Route-Override: <name>` reaches that isolate through
 * the same entry Worker as the first one.
 * `inspectorPort`, when given, opens the runtime's inspector there (a CPU profile of the isolates under load).
 * @param {{ port: number, bindings: Record<string, string>, entry?: string, assets?: boolean,
 *   isolates?: number | Record<string, string>[], inspectorPort?: number }} options
 * @returns {Promise<{ mf: Miniflare, url: string, urls: string[], names: string[] }>}
 */
export async function startKeygate({ port, bindings, entry, assets = true, isolates = 1, inspectorPort }) {
  const dist = mkdtempSync(join(tmpdir(), "keygate-build-"));
  execFileSync("sh", ["scripts/wrangler.sh", "deploy", "--dry-run", "--outdir", dist], { stdio: "ignore" });
  const toml = readFileSync("wrangler.toml", "utf8");
  const compatibilityDate = /compatibility_date\s*=\s*"([^"]+)"/.exec(toml)?.[1];
  const modules = [{ type: "ESModule", path: join(dist, "index.js") }];
  if (entry) modules.unshift({ type: "ESModule", path: join(dist, "entry.mjs"), contents: entry });
  const extra = typeof isolates === "number" ? Array.from({ length: Math.max(1, isolates) }, () => ({})) : isolates;
  const several = extra.length > 1;
  /** @param {string} className @param {number} i */
  const durableObject = (className, i) => ({ className, useSQLite: true, ...(i > 0 ? { scriptName: isolateName(0) } : {}) });
  const worker = (i) => ({
    ...(several ? { name: isolateName(i), unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }] } : {}),
    modulesRoot: dist,
    modules,
    compatibilityDate,
    d1Databases: ["DB"],
    durableObjects: {
      KEYS: durableObject("KeyObject", i),
      RELAYS: durableObject("KeyRelay", i),
      COUNTERS: durableObject("Counter", i),
      ACCOUNTS: durableObject("AccountObject", i),
    },
    bindings: { RESOURCE_TYPES: "mailbox,process,project", ...bindings, ...extra[i] },
    // As wrangler.toml's queues: every isolate sends events and usage, the first consumes them.
    queueProducers: { EVENTS: "keygate-events", USAGE: "keygate-usage" },
    ...(i === 0
      ? {
          queueConsumers: {
            "keygate-events": { maxBatchSize: 10, maxBatchTimeout: 1, maxRetries: 10 },
            "keygate-usage": { maxBatchSize: 100, maxBatchTimeout: 2, maxRetries: 10 },
          },
        }
      : {}),
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
  });
  const shared = { host: "127.0.0.1", port, ...(inspectorPort ? { inspectorPort } : {}) };
  const mf = new Miniflare(
    convertV4MiniflareOptions(several ? { ...shared, workers: extra.map((_, i) => worker(i)) } : { ...shared, ...worker(0) }),
  );
  // Miniflare has read the bundle once it is ready.
  const url = (await mf.ready.finally(() => rmSync(dist, { recursive: true, force: true }))).origin;
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
  const names = extra.map((_, i) => isolateName(i));
  const urls = several ? await Promise.all(names.map(async (name) => (await mf.unsafeGetDirectURL(name)).origin)) : [url];
  return { mf, url, urls, names };
}
