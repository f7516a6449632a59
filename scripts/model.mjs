// npm run model -- --keys 1e6 --active 1e5 --rps 1e5 --isolates 2000: the load a deployment of N keys (`--active` of
// them used every minute) and R key requests a second, served by I isolates, puts on each part Cloudflare runs it on,
// against that part's published limit, and the first part to saturate.
//
// Where the numbers come from, in three places below and nowhere else:
// - `measured`: per-request counters of the last `npm run bench` (bench/results.json, or `--results <file>`): D1 round
//   trips and object calls per request by scenario, object calls per request by kind of object over whole runs, the
//   server's CPU per request.
// - DESIGN: what the bench does not see because it happens per key, per minute or per isolate rather than per request
//   (the usage flush, last use, the record's reread, the isolate's cache of key ids, leases), read from the code, each
//   with the constant it comes from. When the design changes (usage leaving through a Queue, keys' objects named by
//   hash), this table is what changes.
// - LIMITS: Cloudflare's published limits, each with the page it is published on (README, "Load model").
//
// The model is deliberately simple: requests spread evenly over the active keys (the worst case for every per-isolate
// cache; real traffic is skewed towards fewer keys), one key carrying `--hot-share` of them and one account
// `--account-share` (defaults 5% and 10%); `--active` defaults to a tenth of the keys, `--isolates` to one per 50
// requests a second. Person's requests (`--people-rps`, `--sessions`) are 0 unless given. `--readme` prints README's table of three sizes; `--json` the whole model; `--measure-rows`
// measures DESIGN's bytes per row on the current migrations (node:sqlite) for updating the table.
import { readdirSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";

/** Cloudflare's published limits (Workers Paid), each with where it is published. */
export const LIMITS = {
  /** A Durable Object's soft limit: "An individual Object has a soft limit of 1,000 requests per second." */
  objectRequestsPerSecond: { value: 1_000, url: "https://developers.cloudflare.com/durable-objects/platform/limits/" },
  /**
   * One D1 database runs one query at a time: "If your average query takes 1 ms, you can run approximately 1,000 queries
   * per second." Reads and writes share it. 1 ms is the model's assumption for Keygate's indexed single-row queries.
   */
  d1QueriesPerSecond: { value: 1_000, url: "https://developers.cloudflare.com/d1/platform/limits/" },
  /** "Maximum database size: 10 GB (Workers Paid)", which cannot be raised. */
  d1Bytes: { value: 10e9, url: "https://developers.cloudflare.com/d1/platform/limits/" },
  /** "Per-queue message throughput: 5,000 messages per second"; consumer batches and `sendBatch` at most 100 messages. */
  queueMessagesPerSecond: { value: 5_000, url: "https://developers.cloudflare.com/queues/platform/limits/" },
  queueBatchMessages: { value: 100, url: "https://developers.cloudflare.com/queues/platform/limits/" },
  /**
   * Workers CPU time per request (30 s by default, up to 5 min) and subrequests per request (10,000 on Workers Paid).
   * Neither binds a request that takes milliseconds; what CPU does bound is how many isolates the traffic keeps busy:
   * an isolate runs one thing at a time, so it has at most one CPU-second a second.
   */
  workerCpuMsPerRequest: { value: 30_000, url: "https://developers.cloudflare.com/workers/platform/limits/" },
  subrequestsPerRequest: { value: 10_000, url: "https://developers.cloudflare.com/workers/platform/limits/" },
};

/**
 * What the design costs that the bench's per-request counters do not show: per active key, per minute, per isolate.
 * Each with the code it is read from. A change to those constants, or to the design they describe, changes this table.
 */
export const DESIGN = {
  /**
   * D1 reads of a key's id in the worker: none. The id is worked out from the key's hash (src/core/ids.ts keyIdOf), so
   * the worker names the key's object with no lookup and the object reads the key itself when cold (src/keys/authorize.ts).
   */
  keyIdLookupReads: 0,
  /** A key's object rereads its record (one joined query, src/keys/store.ts loadKey) after RECORD_TTL_MS (src/keys/object.ts). */
  recordTtlMs: 60_000,
  recordReads: 1,
  /**
   * An active key's object sends its changed hours and its last use as one queue message once per FLUSH_INTERVAL_MS
   * (src/usage/tally.ts, src/keys/object.ts sendUsage). The consumer takes batches of up to QUEUE_BATCH (wrangler.toml
   * max_batch_size) and makes one D1 statement per batch for their last uses (src/usage/queue.ts consumeUsage), and one
   * call per account in the batch to its object. Usage history is kept in the objects: no D1 row per key and hour.
   */
  usageFlushMs: 60_000,
  queueMessagesPerActiveKeyPerFlush: 1,
  queueBatch: 100,
  d1StatementsPerBatch: 1,
  usageRowsPerActiveKeyPerDay: 0,
  /**
   * Bytes per row, indexes included, on the current migrations with realistic values (`npm run model -- --measure-rows`:
   * rows inserted in random key order into SQLite with D1's 4 KB pages).
   */
  bytesPerKeyRow: 553,
  /** Below this many admissions a second at its object a key gets no lease: every request calls (src/core/lease.ts LEASE_MIN_RATE). */
  leaseMinRate: 20,
  /** A lease lasts at most LEASE_MS (src/core/lease.ts), so an isolate spending one calls at least once per LEASE_MS. */
  leaseMs: 1_000,
  /**
   * A hot key over its limit: each isolate keeps the refusal until the limit could admit again, LEASE_MS at most
   * (src/counters/held.ts refuse), so it calls once a second however many of its requests are refused.
   */
  refusalMs: 1_000,
  /**
   * A key whose object takes RELAY_AT calls a second spreads its isolates over RELAYS relays, doubled while each would
   * take more than RELAY_LOAD, up to MAX_RELAYS (src/core/lease.ts FanIn); each relay calls the key's object about 3
   * times a second (test/ratelimit/hot-key.test.ts: 8 relays, 24 to 45 calls a second on the object once hot).
   */
  relayAt: 250,
  relays: 8,
  relayLoad: 500,
  maxRelays: 64,
  relayCallsPerSecond: 3,
  /**
   * A person's request is judged by their object (src/counters/sessions.ts): no D1 read once it knows the session; it
   * rereads the person and each live session once per RECORD_TTL_MS (src/counters/trusted.ts), and sends a session's
   * last use through the usage queue once a minute: one message, written with the batch's others in one statement.
   */
  personReadsPerRequest: 0,
  sessionRecordReadsPerMinute: 2,
  sessionLastUsedMs: 60_000,
};

/** The per-request counters the model takes from a bench run. */
export function measured(results) {
  const s = results.scenarios;
  const need = (value, what) => {
    if (typeof value !== "number") throw new Error(`bench results have no ${what}: run npm run bench`);
    return value;
  };
  return {
    date: results.date,
    /** A key whose isolate holds no lease and knows its id: (c), 1,000 keys in turn. */
    coldKey: {
      d1: need(s.manyKeys?.d1RoundTripsPerRequest, "manyKeys.d1RoundTripsPerRequest"),
      objectCalls: need(s.manyKeys?.durableObjectCallsPerRequest, "manyKeys.durableObjectCallsPerRequest"),
      cpuUs: need(s.manyKeys?.serverCpuUsPerRequest, "manyKeys.serverCpuUsPerRequest"),
    },
    /** A hot key spending its isolate's lease: (b). */
    hotKey: {
      d1: need(s.hotKey?.d1RoundTripsPerRequest, "hotKey.d1RoundTripsPerRequest"),
      cpuUs: need(s.hotKey?.serverCpuUsPerRequest, "hotKey.serverCpuUsPerRequest"),
    },
    /** A key of an account with a pool, before its leases: (k)'s counted request. */
    pooledKey: {
      d1: need(s.credits?.d1RoundTripsPerRequest, "credits.d1RoundTripsPerRequest"),
      objectCalls: need(s.credits?.durableObjectCallsPerRequest, "credits.durableObjectCallsPerRequest"),
    },
    /** Object calls per request of a hot key and of its account's pool, over whole runs: (k)'s tally by kind. */
    leasedCallsPerRequest: {
      key: need(s.credits?.objectCallsPerRequest?.key, "credits.objectCallsPerRequest.key"),
      account: need(s.credits?.objectCallsPerRequest?.account, "credits.objectCallsPerRequest.account"),
    },
    /** What a mistyped key costs: no D1, no object. */
    mistypedKey: { d1: results.mistypedKey?.d1 ?? null, objectCalls: results.mistypedKey?.do ?? null },
  };
}

/**
 * Calls a second on the object of one counter (a hot key's, or an account's pool) that takes `rate` requests a second
 * spread over `isolates` isolates: each isolate holding a lease calls at least once per lease and otherwise once per
 * `perRequest` of its requests (the bench's measured share); a counter too slow to lease is called by every request.
 */
export function leasedObjectCalls(rate, isolates, perRequest) {
  if (rate < DESIGN.leaseMinRate) return rate;
  const serving = Math.min(isolates, rate);
  const perIsolate = rate / serving;
  return serving * Math.min(perIsolate, Math.max(1000 / DESIGN.leaseMs, perIsolate * perRequest));
}

/**
 * The calls a second of `direct` calls a second on one key, once its object spreads them (FanIn): on the key's object,
 * and on each of its relays. Below RELAY_AT, all on the object.
 */
export function spread(direct) {
  if (direct < DESIGN.relayAt) return { object: direct, relays: 0, perRelay: 0 };
  let count = DESIGN.relays;
  while (count < DESIGN.maxRelays && direct > count * DESIGN.relayLoad) count *= 2;
  return { object: count * DESIGN.relayCallsPerSecond, relays: count, perRelay: direct / count };
}

/** The load on each part for a deployment, its limit and its utilisation (load / limit), busiest first. */
export function model({ keys, active, rps, isolates, hotShare = 0.05, accountShare = 0.1, peopleRps = 0, sessions = 0 }, m) {
  const hotRps = rps * hotShare;
  const spreadRps = rps - hotRps;
  const perMinute = (n, ms) => (n * 60_000) / ms / 60;
  const reads = {
    keyIds: spreadRps * DESIGN.keyIdLookupReads,
    records: perMinute(active, DESIGN.recordTtlMs) * DESIGN.recordReads,
    perRequest: spreadRps * m.coldKey.d1 + hotRps * m.hotKey.d1,
    people: peopleRps * DESIGN.personReadsPerRequest + (sessions * DESIGN.sessionRecordReadsPerMinute) / 60,
  };
  const keyMessages = perMinute(active, DESIGN.usageFlushMs) * DESIGN.queueMessagesPerActiveKeyPerFlush;
  const sessionMessages = perMinute(sessions, DESIGN.sessionLastUsedMs);
  const queue = keyMessages + sessionMessages;
  const writes = {
    usage: Math.ceil(keyMessages / DESIGN.queueBatch) * DESIGN.d1StatementsPerBatch,
    sessions: Math.ceil(sessionMessages / DESIGN.queueBatch) * DESIGN.d1StatementsPerBatch,
  };
  const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
  const d1Reads = sum(reads);
  const d1Writes = sum(writes);
  const baseBytes = keys * DESIGN.bytesPerKeyRow;
  const bytesPerDay = active * DESIGN.usageRowsPerActiveKeyPerDay * DESIGN.bytesPerKeyRow;
  const daysTo10GB =
    bytesPerDay === 0 ? (baseBytes < LIMITS.d1Bytes.value ? Infinity : 0) : Math.max(0, LIMITS.d1Bytes.value - baseBytes) / bytesPerDay;
  const hotKey = spread(leasedObjectCalls(hotRps, isolates, m.leasedCallsPerRequest.key));
  const hotKeyCalls = hotKey.object;
  // Over its limit, each isolate serving the key calls once per refusal it keeps.
  const refusing = Math.min(isolates, hotRps);
  const refused = spread(hotRps < DESIGN.leaseMinRate ? hotRps : (refusing * 1000) / DESIGN.refusalMs);
  const accountCalls = leasedObjectCalls(rps * accountShare, isolates, m.leasedCallsPerRequest.account);
  const cpuSeconds = (spreadRps * m.coldKey.cpuUs + hotRps * m.hotKey.cpuUs) / 1e6;
  const d1Limit = LIMITS.d1QueriesPerSecond.value;
  const objectLimit = LIMITS.objectRequestsPerSecond.value;
  const parts = [
    {
      part: "D1 reads/s",
      load: d1Reads,
      limit: d1Limit,
      note: `key ids ${round(reads.keyIds)} (worked out from the hash), records ${round(reads.records)} (each active key's object once a minute)${peopleRps ? `, sessions ${round(reads.people)}` : ""}`,
    },
    {
      part: "D1 writes/s",
      load: d1Writes,
      limit: d1Limit,
      note: `usage and last use ${round(writes.usage)} (one statement per queue batch of ${DESIGN.queueBatch})${sessions ? `, sessions ${round(writes.sessions)}` : ""} (one database, reads and writes share it)`,
    },
    { part: "D1 queries/s (reads + writes)", load: d1Reads + d1Writes, limit: d1Limit, note: "one query at a time" },
    {
      part: "D1 size after 30 days",
      load: baseBytes + 30 * bytesPerDay,
      limit: LIMITS.d1Bytes.value,
      unit: "bytes",
      note: `keys ${gb(baseBytes)}, usage +${gb(bytesPerDay)}/day (kept in the objects): 10 GB ${daysTo10GB === Infinity ? "never from traffic" : daysTo10GB < 1 ? "in less than a day" : `in ${round(Math.floor(daysTo10GB))} days`}`,
      daysTo10GB,
      bytesPerDay,
    },
    {
      part: "hot key's object, requests/s",
      load: hotKeyCalls,
      limit: objectLimit,
      note: `${round(hotRps)} requests/s on one key (${hotShare * 100}%) over ${Math.min(isolates, Math.ceil(hotRps)).toLocaleString("en")} isolates${hotKey.relays ? `, spread over ${hotKey.relays} relays` : ""}`,
    },
    {
      part: "hot key's busiest relay, requests/s",
      load: hotKey.perRelay,
      limit: objectLimit,
      note: hotKey.relays ? `its isolates' calls over ${hotKey.relays} relays` : "not spread: no relay",
    },
    {
      part: "hot key's object over its limit, requests/s",
      load: refused.object,
      limit: objectLimit,
      note: `each isolate keeps a refusal a second${refused.relays ? `; over ${refused.relays} relays, ${round(refused.perRelay)} calls/s each` : ""}`,
    },
    {
      part: "account's object, requests/s",
      load: accountCalls,
      limit: objectLimit,
      note: `${round(rps * accountShare)} requests/s on one account's pool or shared limit (${accountShare * 100}%)`,
    },
    {
      part: "Queue messages/s",
      load: queue,
      limit: LIMITS.queueMessagesPerSecond.value,
      note: `usage: one message per active key${sessions ? " and per live session" : ""} per minute, ${round(Math.ceil(queue / DESIGN.queueBatch))} batches/s`,
    },
    {
      part: "CPU ms per request",
      load: Math.max(m.coldKey.cpuUs, m.hotKey.cpuUs) / 1000,
      limit: LIMITS.workerCpuMsPerRequest.value,
      note: "the costlier of a cold key's and a hot key's request",
    },
    {
      part: "subrequests per request",
      load: DESIGN.keyIdLookupReads + m.pooledKey.d1 + m.pooledKey.objectCalls,
      limit: LIMITS.subrequestsPerRequest.value,
      note: "a pooled key's D1 round trips and object calls",
    },
    {
      part: "CPU-seconds/s",
      load: cpuSeconds,
      limit: isolates,
      note: `${round(cpuSeconds / isolates, 2)} of each of ${isolates.toLocaleString("en")} isolates (measured locally: an upper bound)`,
    },
  ].map((p) => ({ ...p, utilisation: p.load / p.limit }));
  const ranked = [...parts].sort((a, b) => b.utilisation - a.utilisation);
  return {
    inputs: { keys, active, rps, isolates, hotShare, accountShare, peopleRps, sessions },
    parts,
    first: ranked[0],
    saturated: ranked.filter((p) => p.utilisation >= 1).map((p) => p.part),
    totals: {
      objectCallsPerSecond: spreadRps * m.coldKey.objectCalls + hotKeyCalls + hotKey.relays * hotKey.perRelay + accountCalls,
      daysTo10GB,
    },
  };
}

const round = (n, digits = 0) => Number(n.toFixed(digits)).toLocaleString("en", { maximumFractionDigits: digits });
const gb = (bytes) => `${round(bytes / 1e9, bytes < 1e8 ? 3 : 1)} GB`;
const pct = (u) => (u >= 10 ? `${round(u)}x` : u >= 1 ? `${round(u, 1)}x` : `${round(u * 100, u < 0.01 ? 2 : 0)}%`);
const show = (p) => (p.unit === "bytes" ? gb(p.load) : round(p.load, p.load < 10 ? 1 : 0));
const showLimit = (p) => (p.unit === "bytes" ? gb(p.limit) : round(p.limit));

function print(result) {
  const { keys, active, rps, isolates } = result.inputs;
  console.log(
    `${keys.toLocaleString("en")} keys, ${active.toLocaleString("en")} active, ${rps.toLocaleString("en")} requests/s, ${isolates.toLocaleString("en")} isolates`,
  );
  const rows = result.parts.map((p) => [p.part, show(p), showLimit(p), pct(p.utilisation), p.note]);
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i].length), ["part", "load", "limit", "used"][i].length));
  const line = (r) =>
    `${r
      .slice(0, 4)
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join("  ")}  ${r[4] ?? ""}`;
  console.log(line(["part", "load", "limit", "used", ""]));
  for (const r of rows) console.log(line(r));
  const { first } = result;
  console.log(
    first.utilisation >= 1
      ? `first to saturate: ${first.part}, at ${pct(first.utilisation)} of its limit (saturated, busiest first: ${result.saturated.join("; ")})`
      : `nothing saturates; closest: ${first.part}, at ${pct(first.utilisation)} of its limit`,
  );
}

/** README's table: three sizes, each part's utilisation, and the first to saturate. */
export const SIZES = [
  { keys: 1e4, active: 1e3, rps: 1e3, isolates: 20 },
  { keys: 1e6, active: 1e5, rps: 1e5, isolates: 2_000 },
  { keys: 1e7, active: 1e6, rps: 1e6, isolates: 20_000 },
];

function readme(m) {
  const results = SIZES.map((s) => model(s, m));
  const head = results.map((r) => `${short(r.inputs.keys)} keys / ${short(r.inputs.rps)} rps`);
  console.log(`| part (limit) | ${head.join(" | ")} |`);
  console.log(`|---|${head.map(() => "---").join("|")}|`);
  for (let i = 0; i < results[0].parts.length; i++) {
    const p0 = results[0].parts[i];
    const limit = p0.part === "CPU-seconds/s" ? "one per isolate" : showLimit(p0);
    const cells = results.map((r) => {
      const p = r.parts[i];
      const cell = `${show(p)} (${pct(p.utilisation)})`;
      return p.utilisation >= 1 ? `**${cell}**` : cell;
    });
    console.log(`| ${p0.part} (${limit}) | ${cells.join(" | ")} |`);
  }
  console.log(`| D1 full (10 GB) in | ${results.map((r) => days(r.totals.daysTo10GB)).join(" | ")} |`);
  console.log(`| first to saturate | ${results.map((r) => (r.first.utilisation >= 1 ? r.first.part : "none")).join(" | ")} |`);
}

const short = (n) => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n));
const days = (d) => (d < 1 ? "less than a day" : d > 3650 ? "over 10 years" : `${round(Math.floor(d))} days`);

/** Bytes per api_keys row on the current migrations, indexes included, with D1's 4 KB pages. */
async function measureRows() {
  const { DatabaseSync } = await import("node:sqlite");
  const { randomBytes } = await import("node:crypto");
  const db = new DatabaseSync(":memory:");
  db.exec("PRAGMA page_size = 4096; PRAGMA foreign_keys = OFF;");
  for (const file of readdirSync("migrations")
    .filter((f) => f.endsWith(".sql"))
    .sort())
    for (const statement of readFileSync(`migrations/${file}`, "utf8").split("--> statement-breakpoint"))
      if (statement.trim()) db.exec(statement);
  const bytes = () => db.prepare("PRAGMA page_count").get().page_count * 4096;
  const hex = (n) => randomBytes(n).toString("hex");
  const at = new Date("2026-12-01T12:00:00.000Z").toISOString();
  const N = 50_000;
  const accounts = Array.from({ length: 100 }, () => `acc_${hex(12)}`);
  const keyIds = [];
  const before = bytes();
  const key = db.prepare(
    `INSERT INTO api_keys (id, account_id, owner_id, created_by, name, prefix, start, hash, scopes, created_at, last_used_at, last_auth_method)
     VALUES (?, ?, ?, ?, ?, 'sk', ?, ?, '["*"]', ?, ?, 'header')`,
  );
  db.exec("BEGIN");
  for (let i = 0; i < N; i++) {
    const id = `key_${hex(12)}`;
    keyIds.push([id, accounts[i % accounts.length]]);
    key.run(id, accounts[i % accounts.length], `usr_${hex(12)}`, `usr_${hex(12)}`, "Production key", `sk_live_${hex(2)}`, hex(32), at, at);
  }
  db.exec("COMMIT");
  const perKey = (bytes() - before) / N;
  console.log(JSON.stringify({ bytesPerKeyRow: Math.round(perKey) }));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      keys: { type: "string", default: "1e6" },
      active: { type: "string" },
      rps: { type: "string", default: "1e5" },
      isolates: { type: "string" },
      "hot-share": { type: "string", default: "0.05" },
      "account-share": { type: "string", default: "0.1" },
      "people-rps": { type: "string", default: "0" },
      sessions: { type: "string", default: "0" },
      results: { type: "string", default: "bench/results.json" },
      json: { type: "boolean", default: false },
      readme: { type: "boolean", default: false },
      "measure-rows": { type: "boolean", default: false },
    },
  });
  if (values["measure-rows"]) {
    await measureRows();
  } else {
    const m = measured(JSON.parse(readFileSync(values.results, "utf8")));
    if (values.readme) readme(m);
    else {
      const number = (name, value) => {
        const n = Number(value);
        if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number, not ${value}`);
        return n;
      };
      const keys = number("keys", values.keys);
      const rps = number("rps", values.rps);
      const result = model(
        {
          keys,
          active: number("active", values.active ?? String(keys / 10)),
          rps,
          isolates: Math.max(1, number("isolates", values.isolates ?? String(Math.ceil(rps / 50)))),
          hotShare: number("hot-share", values["hot-share"]),
          accountShare: number("account-share", values["account-share"]),
          peopleRps: number("people-rps", values["people-rps"]),
          sessions: number("sessions", values.sessions),
        },
        m,
      );
      if (values.json) console.log(JSON.stringify({ measured: m, design: DESIGN, limits: LIMITS, ...result }, null, 2));
      else print(result);
    }
  }
}
