// npm run bench:scale (or npm run bench -- --scale): Keygate with a million keys in D1.
// Serves the built worker with Miniflare on 127.0.0.1 (as bench/run.mjs does), provisions one account through the API
// (its admin accepts the invitation, so the login below checks a real password hash), then writes straight into the
// local D1, in multi-row INSERTs of a few hundred rows each (no API call per row): 10,000 accounts, 100,000 users
// (10 an account), 1,000,000 keys (the API's account gets 100,000, the other 9,999 about 90 each) and an audit event
// per key. Seeded keys are plain (`sk_` + 64 hex) with the id their hash gives (core/ids.ts keyIdOf), as the API mints
// them. Their creation times span two years; some are never used, idle, expiring, revoked or reported leaked, so the
// hygiene query has something to count. The big account's usage rollup (its object, as GET /v1/account/usage reads it)
// is filled through the real path: messages on the usage queue, each one key's day of hours, for SCALE_USAGE_KEYS keys
// over 31 days.
// Then it measures, each a few times in a row (median and slowest): a login (POST /v1/auth/login); the big account's
// key list (GET /v1/api-keys?limit=100, the first page and the 100th, reached by following nextCursor); its usage
// over 31 days; its key hygiene; its audit (GET /v1/account's recent events, and the dashboard's activity page). Login,
// hygiene and audit are also measured before the seeding, on the nearly empty database, for comparison.
// Last, (c) as bench/run.mjs measures it, GET /v1/whoami with keys in turn, twice, taking turns over SCALE_ROUNDS
// rounds of SCALE_SECONDS: over 1,000 keys (warmed up before each round, as run.mjs does), and over 100,000 keys
// (10 of each account) that continue from round to round, so every request is its key's first: a cold object that
// reads its key from D1 among a million. The same two runs go before the seeding as well, over 1,000 and 10,000 keys
// of the big account with D1 otherwise nearly empty: what a million rows cost a cold key is the difference. Each run
// reports the workerd process's CPU per request. Targets: c over 100,000 keys >= 0.9 of c over 1,000; page 100 within
// 2x page 1. Prints everything and writes bench/scale-results.json. Sizes can be made smaller with SCALE_* for a quick
// look (then the results file is left as it is unless SCALE_WRITE=1).
import { createHash, randomBytes } from "node:crypto";
import { existsSync, writeFileSync } from "node:fs";
import autocannon from "autocannon";
import { startKeygate } from "../scripts/keygate-server.mjs";
import { readKey } from "../src/core/key-format.ts";
import { quantile } from "./fixed-rate.mjs";
import { settler, workerdCpu } from "./server-cpu.mjs";

const env = process.env;
const ACCOUNTS = Number(env.SCALE_ACCOUNTS ?? 10_000);
const USERS_PER_ACCOUNT = 10;
const KEYS = Number(env.SCALE_KEYS ?? 1_000_000);
/** Keys of the account provisioned through the API, the one listed, checked for hygiene and audited. */
const BIG_KEYS = Number(env.SCALE_BIG_KEYS ?? 100_000);
/** Keys of each account in (c)'s large set: 10 x 10,000 accounts = 100,000 keys. */
const COLD_PER_ACCOUNT = 10;
const SMALL = Number(env.SCALE_SMALL ?? 1_000);
/** Keys of the big account seeded before the rest, for (c) on a nearly empty D1: SMALL warm ones and these cold ones. */
const EARLY_COLD = Number(env.SCALE_EARLY_COLD ?? 10_000);
const EARLY = SMALL + EARLY_COLD;
/** Keys of the big account whose 31 days of hours reach its rollup through the usage queue. */
const USAGE_KEYS = Number(env.SCALE_USAGE_KEYS ?? 1_000);
const USAGE_DAYS = 31;
const ROUNDS = Number(env.SCALE_ROUNDS ?? 3);
const SECONDS = Number(env.SCALE_SECONDS ?? 10);
const CONNECTIONS = Number(env.SCALE_CONNECTIONS ?? 32);
/** How many times each query is timed. */
const REPEAT = Number(env.SCALE_REPEAT ?? 10);
const FULL = KEYS === 1_000_000 && ACCOUNTS === 10_000 && BIG_KEYS === 100_000;
const WRITE = FULL || env.SCALE_WRITE === "1";
/** How the runs on the seeded database are labelled. */
const AT_SCALE = KEYS === 1_000_000 ? "1M keys" : `${KEYS} keys`;
const OPERATOR_TOKEN = "scale-operator-token-0123456789abcdef0123";
const PASSWORD = "scale bench passphrase 7";
const PORT = 8798;
const base = `http://127.0.0.1:${PORT}`;
const DAY = 86_400_000;
const HOUR = 3_600_000;

if (BIG_KEYS + (ACCOUNTS - 1) * (COLD_PER_ACCOUNT + 1) > KEYS) throw new Error("SCALE_KEYS is too small for the accounts' keys");
if (SMALL > ACCOUNTS - 1) throw new Error("SCALE_SMALL takes one key of each account but the big one");
// Miniflare's D1 and Durable Object storage on tmpfs, as in bench/run.mjs.
if (existsSync("/dev/shm")) env.TMPDIR = "/dev/shm";

const sha256 = (text) => createHash("sha256").update(text).digest("hex");
/** As core/ids.ts keyIdOf: the id a key's hash gives. */
const keyIdOf = (hash) => `key_${sha256(`keygate key id\n${hash}`).slice(0, 24)}`;
const newId = (kind) => `${kind}_${randomBytes(12).toString("hex")}`;
const iso = (ms) => new Date(ms).toISOString();
const round1 = (x) => Math.round(x * 10) / 10;
const ratio = (a, b) => Math.round((a / b) * 100) / 100;

/** Milliseconds of `n` calls of `fn` one after another: median, slowest, fastest, every one. */
async function timed(n, fn) {
  const ms = [];
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    await fn(i);
    ms.push(performance.now() - started);
  }
  return summary(ms);
}

/** Median, slowest and fastest of milliseconds, and every one. */
function summary(ms) {
  const sorted = [...ms].sort((a, b) => a - b);
  return { p50: round1(quantile(sorted, 0.5)), max: round1(sorted.at(-1)), min: round1(sorted[0]), runs: ms.map(round1) };
}

/**
 * Multi-row INSERTs of `columns` into `table`, each under ~90 KB of SQL (D1 refuses a statement much longer), sent
 * 25 statements to a batch (one transaction); the next batch is built while the last one is written.
 */
function inserter(db, table, columns) {
  const head = `INSERT INTO ${table} (${columns.join(", ")}) VALUES `;
  let rows = [];
  let size = 0;
  let statements = [];
  let writing = Promise.resolve();
  let count = 0;
  const literal = (v) => (v === null ? "NULL" : typeof v === "number" ? String(v) : `'${String(v).replaceAll("'", "''")}'`);
  const cut = () => {
    if (rows.length === 0) return;
    statements.push(db.prepare(head + rows.join(",")));
    rows = [];
    size = 0;
  };
  const send = async () => {
    cut();
    if (statements.length === 0) return;
    const sending = statements;
    statements = [];
    await writing;
    // Miniflare's proxy frees a statement once nothing here refers to it, which may reach workerd before the batch
    // naming it does: the statements are held until their batch is written.
    writing = db.batch(sending).then(() => sending.length);
  };
  return {
    async add(values) {
      const row = `(${values.map(literal).join(",")})`;
      rows.push(row);
      size += row.length + 1;
      count += 1;
      if (size > 90_000) cut();
      if (statements.length >= 25) await send();
    },
    async done() {
      await send();
      await writing;
      return count;
    },
  };
}

let mf;
try {
  const started = performance.now();
  ({ mf } = await startKeygate({
    port: PORT,
    bindings: {
      OPERATOR_TOKEN,
      ALLOW_HTTP: "true",
      // A login answers an access token signed with it.
      JWT_SIGNING_KEYS: JSON.stringify([{ kid: "scale", secret: randomBytes(32).toString("hex") }]),
    },
    entry: (await import("node:fs")).readFileSync("bench/counting.mjs", "utf8"),
    assets: false,
  }));
  const serverCpu = workerdCpu();
  const settle = settler(serverCpu, 30_000);
  const db = await mf.getD1Database("DB");

  const send = async (method, path, { key, body, headers = {} } = {}) => {
    const res = await fetch(base + path, {
      method,
      headers: {
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...(key ? { Authorization: `Bearer ${key}` } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
    return { res, text };
  };
  const json = async (method, path, init) => JSON.parse((await send(method, path, init)).text);

  // The big account, its admin (who sets a password through the invitation) and the admin's key, through the API.
  const rateLimit = { limit: 1_000_000, windowSeconds: 60 };
  const adminEmail = "scale-admin@example.com";
  const provisioned = await json("POST", "/v1/accounts", {
    key: OPERATOR_TOKEN,
    body: { name: "scale big", rateLimit, admin: { email: adminEmail } },
  });
  const big = { id: provisioned.account.id, adminId: provisioned.admin.id, key: provisioned.key.key };
  await json("POST", "/v1/auth/accept-invitation", { body: { token: provisioned.admin.invitation.token, password: PASSWORD } });
  if (keyIdOf(sha256(big.key)) !== provisioned.key.id)
    throw new Error(`keyIdOf here (${keyIdOf(sha256(big.key))}) is not the worker's (${provisioned.key.id})`);

  /** A dashboard session cookie of the big account's admin, from the login form. */
  const dashboardCookie = async () => {
    const form = await fetch(`${base}/dashboard/login`, {
      method: "POST",
      redirect: "manual",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: base, Accept: "text/html", "CF-Connecting-IP": "10.9.1.1" },
      body: new URLSearchParams({ email: adminEmail, password: PASSWORD }).toString(),
    });
    const cookie = /^([^=]+=[^;]+);/.exec(form.headers.get("Set-Cookie") ?? "")?.[1];
    if (form.status !== 303 || !cookie) throw new Error(`dashboard login: ${form.status} ${await form.text()}`);
    return cookie;
  };

  /** What one request of each measured query costs the worker: D1 round trips and Durable Object calls. */
  const countsOf = async (path, init = {}) => {
    const res = await fetch(base + path, { ...init, headers: { ...init.headers, "X-Bench-Count": "1" } });
    await res.arrayBuffer();
    const counts = Object.fromEntries(
      (res.headers.get("X-Bench-Counts") ?? "")
        .split(";")
        .filter(Boolean)
        .map((kv) => kv.split("="))
        .map(([k, v]) => [k, Number(v)]),
    );
    return { status: res.status, d1: counts.d1, do: counts.do };
  };

  /** Login, hygiene and audit: on the database as it is now. */
  const queries = async (cookie) => {
    const login = await timed(REPEAT, (i) =>
      send("POST", "/v1/auth/login", { body: { email: adminEmail, password: PASSWORD }, headers: { "CF-Connecting-IP": `10.8.${i}.1` } }),
    );
    const hygiene = await timed(REPEAT, () => send("GET", "/v1/account/key-hygiene", { key: big.key }));
    const account = await timed(REPEAT, () => send("GET", "/v1/account", { key: big.key }));
    const activity = await timed(REPEAT, () => send("GET", "/dashboard/activity", { headers: { Cookie: cookie, Accept: "text/html" } }));
    return {
      login: { ...login, ...(await countsOf("/v1/auth/login", loginInit())) },
      keyHygiene: { ...hygiene, ...(await countsOf("/v1/account/key-hygiene", { headers: { Authorization: `Bearer ${big.key}` } })) },
      accountWithRecentEvents: { ...account, ...(await countsOf("/v1/account", { headers: { Authorization: `Bearer ${big.key}` } })) },
      dashboardActivity: { ...activity, ...(await countsOf("/dashboard/activity", { headers: { Cookie: cookie, Accept: "text/html" } })) },
    };
  };
  const loginInit = () => ({
    method: "POST",
    headers: { "Content-Type": "application/json", "CF-Connecting-IP": "10.7.0.1" },
    body: JSON.stringify({ email: adminEmail, password: PASSWORD }),
  });
  const show = (label, q) =>
    console.log(`${label.padEnd(34)} p50 ${String(q.p50).padStart(7)} ms  max ${String(q.max).padStart(7)} ms  D1 ${q.d1}  DO ${q.do}`);

  const now = Date.now();
  const twoYears = 730 * DAY;
  /**
   * A seeded key's row and its audit event. `active` keys ((c)'s, the usage keys) stay so; the rest: a quarter never
   * used, a quarter used lately, a quarter idle since soon after their creation, a quarter used within the year; a fifth
   * expire in six months; one in 50 is revoked; one in 1,000 was reported leaked.
   */
  const addKey = async (keys, audit, { raw, hash, id, a, j, accountId, users, created, active }) => {
    const lastUsed =
      j % 4 === 0
        ? null
        : j % 4 === 1
          ? Math.max(created, now - (j % 30) * DAY)
          : j % 4 === 2
            ? created + DAY
            : Math.max(created, now - (j % 365) * DAY);
    const revoked = !active && j % 50 === 49 ? Math.min(now - DAY, created + 2 * DAY) : null;
    await keys.add([
      id,
      accountId,
      users[j % users.length],
      users[0],
      `key ${a}.${j}`,
      "sk",
      raw.slice(3, 11),
      hash,
      '["*"]',
      j % 5 === 0 ? iso(now + 180 * DAY) : null,
      iso(created),
      lastUsed === null ? null : iso(Math.min(lastUsed, now - 1000)),
      lastUsed === null ? null : "header",
      revoked === null ? null : iso(revoked),
      revoked === null ? null : users[0],
      !active && j % 1000 === 999 ? iso(Math.min(now - 1000, created + 3 * DAY)) : null,
    ]);
    await audit.add([newId("evt"), accountId, users[0], "key.created", id, iso(created), "seed"]);
  };
  /** A new plain key of the account's prefix: raw, its hash, and the id its hash gives. */
  const mint = () => {
    const raw = `sk_${randomBytes(32).toString("hex")}`;
    const hash = sha256(raw);
    return { raw, hash, id: keyIdOf(hash) };
  };
  const keyColumns = [
    "id",
    "account_id",
    "owner_id",
    "created_by",
    "name",
    "prefix",
    "start",
    "hash",
    "scopes",
    "expires_at",
    "created_at",
    "last_used_at",
    "last_auth_method",
    "revoked_at",
    "revoked_by",
    "leaked_at",
  ];
  const auditColumns = ["id", "account_id", "actor", "action", "target", "created_at", "request_id"];

  /**
   * (c): GET /v1/whoami with keys in turn, over `small` keys (warmed up before each round, as bench/run.mjs does) and
   * over `cold` keys, continuing from round to round so that each request is its key's first: they take turns over
   * ROUNDS rounds. The last cold key is left for a probe of what a cold key costs the worker.
   */
  const turns = async (label, small, cold) => {
    const probe = (key) => countsOf("/v1/whoami", { headers: { "X-API-Key": key } });
    const coldProbe = await probe(cold.at(-1));
    const rounds = { small: [], large: [] };
    let nextCold = 0;
    for (let r = 1; r <= ROUNDS; r++) {
      for (const which of ["small", "large"]) {
        const keys = which === "small" ? small : cold;
        if (which === "small") for (const key of small) await send("GET", "/v1/whoami", { headers: { "X-API-Key": key } });
        const settled = await settle();
        const usable = which === "small" ? keys.length : keys.length - 1;
        let n = which === "small" ? 0 : nextCold;
        const first = n;
        const cpuBefore = serverCpu();
        const run = await autocannon({
          url: `${base}/v1/whoami`,
          connections: CONNECTIONS,
          duration: SECONDS,
          requests: [{ setupRequest: (req) => ({ ...req, headers: { ...req.headers, "X-API-Key": keys[n++ % usable] } }) }],
        });
        if (which === "large") nextCold = n;
        const failed = run.non2xx + run.errors + run.timeouts;
        rounds[which].push({
          requestsPerSecond: Math.round(run.requests.average),
          latencyMs: { p50: run.latency.p50, p99: run.latency.p99 },
          requests: run.requests.total,
          // The server's CPU over the run per request, work in the background (usage flushes) included.
          serverCpuUsPerRequest: cpuBefore === null ? null : Math.round(((serverCpu() - cpuBefore) * 1000) / run.requests.total),
          failed,
          ...(which === "large" ? { keysFrom: first, keysTo: n } : {}),
        });
        console.log(
          `${label}: round ${r} c over ${keys.length} keys: ${Math.round(run.requests.average)} req/s  p50 ${run.latency.p50} ms  p99 ${run.latency.p99} ms  server CPU ${rounds[which].at(-1).serverCpuUsPerRequest} µs/request  failed ${failed}  (quiet after ${settled} ms)`,
        );
        if (failed > 0) throw new Error(`c over ${keys.length} keys: ${failed} requests failed`);
      }
    }
    const median = (runs) => [...runs].sort((x, y) => x.requestsPerSecond - y.requestsPerSecond)[Math.floor(runs.length / 2)];
    const smallProbe = await probe(small[0]);
    const result = {
      small: {
        title: `GET /v1/whoami, ${small.length} keys in turn, warmed up`,
        ...median(rounds.small),
        rounds: rounds.small,
        probe: smallProbe,
      },
      large: {
        title: `GET /v1/whoami, ${cold.length} keys in turn, each request its key's first (a cold object reading D1)`,
        ...median(rounds.large),
        rounds: rounds.large,
        distinctKeysUsed: Math.min(nextCold, cold.length - 1),
        wrappedAround: nextCold > cold.length - 1,
        probe: coldProbe,
      },
    };
    result.largeToSmall = ratio(result.large.requestsPerSecond, result.small.requestsPerSecond);
    result.largeToSmallPerRound = rounds.large.map((l, i) => ratio(l.requestsPerSecond, rounds.small[i].requestsPerSecond));
    console.log(
      `${label}: c over ${cold.length} keys / c over ${small.length}: ${result.largeToSmall} (per round ${result.largeToSmallPerRound.join(", ")}); cold key: D1 ${coldProbe.d1} in the worker, DO ${coldProbe.do}; warm key: D1 ${smallProbe.d1}, DO ${smallProbe.do}`,
    );
    return result;
  };

  const cookie = await dashboardCookie();
  await settle();
  const empty = await queries(cookie);
  for (const [name, q] of Object.entries(empty)) show(`before seeding: ${name}`, q);

  // (c) before the seeding too: SMALL + EARLY_COLD keys of the big account (its newest), D1 otherwise nearly empty.
  const early = { small: [], cold: [] };
  {
    const keys = inserter(db, "api_keys", keyColumns);
    const audit = inserter(db, "audit_events", auditColumns);
    for (let j = 0; j < EARLY; j++) {
      const k = mint();
      (j < SMALL ? early.small : early.cold).push(k.raw);
      const created = now - DAY + j * 1000;
      await addKey(keys, audit, { ...k, a: 0, j, accountId: big.id, users: [big.adminId], created, active: true });
    }
    await keys.done();
    await audit.done();
  }
  const manyKeysBefore = await turns(`${EARLY + 1} keys in D1`, early.small, early.cold);

  // The seeding, straight into D1.
  const seedStarted = performance.now();
  const accountRows = inserter(db, "accounts", [
    "id",
    "name",
    "key_prefix",
    "rate_limit",
    "rate_limit_window_seconds",
    "key_format",
    "leak_response",
    "created_at",
  ]);
  const userRows = inserter(db, "users", ["id", "account_id", "email", "role", "disabled", "grants", "created_at"]);
  const keyRows = inserter(db, "api_keys", keyColumns);
  const auditRows = inserter(db, "audit_events", auditColumns);
  /** (c)'s keys, raw: 10 of each account (the large set), and one more of SMALL accounts (the small set). */
  const coldKeys = [];
  const smallKeys = [];
  /** Ids of the big account's keys whose hours are sent to its rollup. */
  const usageKeyIds = [];
  let seededKeys = 1 + EARLY; // the big account's admin key, from the API, and its early keys
  const otherKeys = KEYS - BIG_KEYS;
  // Accounts first, then their users, then keys and audit events: each names what comes before it.
  const accountsSeeded = [];
  for (let a = 0; a < ACCOUNTS; a++) {
    const id = a === 0 ? big.id : newId("acc");
    const created = now - twoYears - DAY + a * 1000;
    if (a > 0) await accountRows.add([id, `scale ${a}`, "sk", 1_000_000, 60, "plain", "notify", iso(created)]);
    accountsSeeded.push({ id, created, users: a === 0 ? [big.adminId] : [] });
  }
  const seeded = { accounts: (await accountRows.done()) + 1 };
  for (const [a, { id, created, users }] of accountsSeeded.entries()) {
    for (let u = users.length; u < USERS_PER_ACCOUNT; u++) {
      const userId = newId("usr");
      users.push(userId);
      await userRows.add([userId, id, `u${a}.${u}@scale.example`, u === 0 ? "admin" : "member", 0, '["*"]', iso(created + u * 60_000)]);
    }
  }
  seeded.users = (await userRows.done()) + 1;
  for (let a = 0; a < ACCOUNTS; a++) {
    const isBig = a === 0;
    const { id: accountId, users } = accountsSeeded[a];
    // The other accounts share what the big one leaves, the first ones one key more.
    const n = isBig ? BIG_KEYS - 1 - EARLY : Math.floor(otherKeys / (ACCOUNTS - 1)) + (a <= otherKeys % (ACCOUNTS - 1) ? 1 : 0);
    const span = twoYears / n;
    for (let j = 0; j < n; j++) {
      const { raw, hash, id } = mint();
      if (j < COLD_PER_ACCOUNT) coldKeys.push(raw);
      else if (j === COLD_PER_ACCOUNT && a >= 1 && a <= SMALL) smallKeys.push(raw);
      const usageKey = isBig && j > COLD_PER_ACCOUNT && usageKeyIds.length < USAGE_KEYS;
      if (usageKey) usageKeyIds.push(id);
      await addKey(keyRows, auditRows, {
        raw,
        hash,
        id,
        a,
        j,
        accountId,
        users,
        created: now - twoYears + Math.floor(j * span) + (a % 1000),
        active: j <= COLD_PER_ACCOUNT || usageKey,
      });
      seededKeys += 1;
    }
    if (a % 1000 === 999)
      console.log(`seeded ${a + 1} accounts, ${seededKeys} keys, ${Math.round((performance.now() - seedStarted) / 1000)} s`);
  }
  seeded.keys = (await keyRows.done()) + 1 + EARLY;
  seeded.auditEvents = (await auditRows.done()) + EARLY;
  const inD1 = await db
    .prepare(
      "SELECT (SELECT count(*) FROM accounts) AS accounts, (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM api_keys) AS keys, (SELECT count(*) FROM audit_events) AS auditEvents, (SELECT count(*) FROM api_keys WHERE account_id = ?) AS bigAccountKeys",
    )
    .bind(big.id)
    .first();
  // The database's size on disk: what D1's 10 GB ceiling would see of these rows and their indexes.
  const { meta } = await db.prepare("SELECT 1").run();
  inD1.megabytes = meta.size_after === undefined ? null : Math.round(meta.size_after / 1e6);
  const seedSeconds = Math.round((performance.now() - seedStarted) / 1000);
  console.log(`seeded in ${seedSeconds} s: ${JSON.stringify(seeded)}; in D1: ${JSON.stringify(inD1)}`);
  if (inD1.keys !== KEYS || inD1.bigAccountKeys !== BIG_KEYS) throw new Error("D1 does not hold the keys seeded");
  // A seeded key, as the worker reads it: plain, of the account's prefix.
  const shape = readKey(coldKeys[0], "kg");
  if (shape === null || shape === "mistyped" || shape.format !== "plain") throw new Error(`a seeded key reads as ${JSON.stringify(shape)}`);

  // The big account's rollup, through the usage queue as keys' objects fill it: each message one key's day of hours.
  const usageStarted = performance.now();
  const queue = await mf.getQueueProducer("USAGE");
  const lastHour = Math.floor(now / HOUR) * HOUR;
  let expectedAdmitted = 0;
  let messages = [];
  let sent = 0;
  for (const [k, keyId] of usageKeyIds.entries()) {
    for (let d = 0; d < USAGE_DAYS; d++) {
      const hours = [];
      for (let h = 0; h < 24; h++) {
        const t = lastHour - (d * 24 + h) * HOUR;
        const admitted = ((k + d * 24 + h) % 50) + 1;
        expectedAdmitted += admitted;
        hours.push({ hour: iso(t), admitted, rateLimited: h === 0 ? 1 : 0, creditsSpent: 0, rev: 1 });
      }
      messages.push({ body: { usage: { keyId, accountId: big.id, hours } } });
      // Well under Queues' 256 KB a batch (a message is about 2 KB).
      if (messages.length === 50) {
        await queue.sendBatch(messages);
        sent += messages.length;
        messages = [];
      }
    }
  }
  if (messages.length > 0) await queue.sendBatch(messages);
  sent += messages.length;
  const from = iso(now - USAGE_DAYS * DAY);
  const to = iso(now);
  const usagePath = `/v1/account/usage?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`;
  let rolledUp = 0;
  const sentFor = new Set(usageKeyIds);
  for (let waited = 0; rolledUp < expectedAdmitted && waited < 600; waited += 2) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const usage = await json("GET", usagePath, { key: big.key });
    // The usage keys' own totals: the keys (c) used before the seeding are the big account's too, and send theirs.
    rolledUp = usage.keys.filter((k) => sentFor.has(k.keyId)).reduce((n, k) => n + k.admitted, 0);
  }
  const usageSeedSeconds = Math.round((performance.now() - usageStarted) / 1000);
  console.log(
    `usage: ${sent} messages, ${usageKeyIds.length} keys x ${USAGE_DAYS * 24} hours in the rollup after ${usageSeedSeconds} s (${rolledUp} of ${expectedAdmitted} admissions)`,
  );
  if (rolledUp !== expectedAdmitted) throw new Error("the rollup did not take in every message within 10 minutes");

  // The queries, on a million keys.
  await settle();
  const full = await queries(cookie);
  const pagePath = (cursor) => `/v1/api-keys?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
  let cursor = null;
  let listed = 0;
  for (let p = 1; p < 100; p++) {
    const page = await json("GET", pagePath(cursor), { key: big.key });
    listed += page.data.length;
    cursor = page.nextCursor;
    if (!cursor) throw new Error(`the listing ended at page ${p}`);
  }
  // The two pages take turns, so neither has the other's warm-up or a bad moment of the machine to itself.
  const onPage1 = [];
  const onPage100 = [];
  const time = async (into, fn) => {
    const started = performance.now();
    await fn();
    into.push(performance.now() - started);
  };
  for (let i = 0; i < REPEAT; i++) {
    await time(onPage1, () => send("GET", pagePath(null), { key: big.key }));
    await time(onPage100, () => send("GET", pagePath(cursor), { key: big.key }));
  }
  const page1 = summary(onPage1);
  const page100 = summary(onPage100);
  const page100Body = await json("GET", pagePath(cursor), { key: big.key });
  const auth = { headers: { Authorization: `Bearer ${big.key}` } };
  const listing = {
    firstPage: { ...page1, ...(await countsOf(pagePath(null), auth)) },
    page100: { ...page100, ...(await countsOf(pagePath(cursor), auth)) },
    keysOnPages1To99: listed,
    keysOnPage100: page100Body.data.length,
  };
  const usage = { ...(await timed(REPEAT, () => send("GET", usagePath, { key: big.key }))), ...(await countsOf(usagePath, auth)) };
  for (const [name, q] of Object.entries(full)) show(`${AT_SCALE}: ${name}`, q);
  show(`${AT_SCALE}: list, page 1`, listing.firstPage);
  show(`${AT_SCALE}: list, page 100`, listing.page100);
  show(`${AT_SCALE}: account usage, 31 days`, usage);

  const manyKeys = await turns(`${AT_SCALE} in D1`, smallKeys, coldKeys);
  const pageRatio = ratio(listing.page100.p50, listing.firstPage.p50);
  const targets = {
    manyKeysLargeToSmall: {
      value: manyKeys.largeToSmall,
      target: ">= 0.9",
      met: manyKeys.largeToSmall >= 0.9,
      perRound: manyKeys.largeToSmallPerRound,
    },
    listingPage100ToPage1: { value: pageRatio, target: "<= 2", met: pageRatio <= 2 },
  };
  // What the million rows cost a cold key: the same cold run against the nearly empty D1, before the seeding.
  const coldAfterToBefore = ratio(manyKeys.large.requestsPerSecond, manyKeysBefore.large.requestsPerSecond);
  console.log(`cold keys, ${AT_SCALE} in D1 / ${EARLY + 1} keys in D1: ${coldAfterToBefore}`);
  for (const [name, t] of Object.entries(targets)) console.log(`target ${name}: ${t.value} (${t.target}) ${t.met ? "met" : "NOT met"}`);

  const report = {
    date: new Date().toISOString().slice(0, 10),
    node: process.version,
    seeded: { ...seeded, inD1, seconds: seedSeconds },
    usageRollup: {
      keys: usageKeyIds.length,
      hoursPerKey: USAGE_DAYS * 24,
      rows: usageKeyIds.length * USAGE_DAYS * 24,
      queueMessages: sent,
      admissions: expectedAdmitted,
      secondsUntilRolledUp: usageSeedSeconds,
    },
    repeat: REPEAT,
    note: "Latencies in ms, one request at a time, median (p50) and slowest (max) of `repeat`; d1 and do: D1 round trips and Durable Object calls the worker made for one such request.",
    beforeSeeding: empty,
    withMillionKeys: { ...full, listing, accountUsage31Days: usage },
    manyKeys: {
      seconds: SECONDS,
      rounds: ROUNDS,
      connections: CONNECTIONS,
      withMillionKeys: manyKeys,
      beforeSeeding: { keysInD1: EARLY + 1, ...manyKeysBefore },
      coldWithMillionKeysToBeforeSeeding: coldAfterToBefore,
    },
    targets,
    totalSeconds: Math.round((performance.now() - started) / 1000),
  };
  if (WRITE) writeFileSync("bench/scale-results.json", `${JSON.stringify(report, null, 2)}\n`);
  else console.log("(smaller than the full run: bench/scale-results.json left as it is)");
  console.log(`done in ${report.totalSeconds} s`);
} finally {
  await mf?.dispose();
}
