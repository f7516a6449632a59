// npm run bench: builds the worker, serves it with Miniflare on 127.0.0.1 in front of a small local upstream, seeds an
// account and keys, drives load against each scenario for a bounded time (ROUNDS x DURATION_SECONDS each), prints
// requests/s and latency, and writes bench/results.json.
import { generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { Worker } from "node:worker_threads";
import autocannon from "autocannon";
import { startKeygate } from "../scripts/keygate-server.mjs";

const DURATION_SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const KEYS = Number(process.env.BENCH_KEYS ?? 1_000);
const OPERATOR_TOKEN = "bench-operator-token-0123456789abcdef0123";
const PORT = 8799;
const base = `http://127.0.0.1:${PORT}`;

// Miniflare keeps D1 and Durable Object storage in a temporary directory. On tmpfs, a storage commit costs what the
// code does, not this machine's disk flush, which production Durable Object storage does not have either.
if (existsSync("/dev/shm")) process.env.TMPDIR = "/dev/shm";

// The gateway scenario forwards to this upstream; the direct scenario loads it without Keygate in between.
const upstream = new Worker(new URL("./upstream.mjs", import.meta.url));
const upstreamPort = await new Promise((resolve, reject) => {
  upstream.once("message", resolve);
  upstream.once("error", reject);
});
const upstreamBase = `http://127.0.0.1:${upstreamPort}`;
// A fresh assertion key each run: the gateway signs one assertion per forwarded request, as it would in production.
const assertionKey = { ...generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" }), kid: "bench" };

let mf;
try {
  ({ mf } = await startKeygate({
    port: PORT,
    bindings: {
      OPERATOR_TOKEN,
      ALLOW_HTTP: "true",
      UPSTREAM_URL: upstreamBase,
      GATEWAY_ROUTES: JSON.stringify([{ pattern: "/*", access: "full" }]),
      ASSERTION_SIGNING_KEYS: JSON.stringify([assertionKey]),
    },
    entry: readFileSync("bench/counting.mjs", "utf8"),
    assets: false,
  }));

  const post = async (path, body, key) => {
    const res = await fetch(base + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  // A limit no scenario can reach, so every request does the full work of an admitted one.
  const rateLimit = { limit: 1_000_000, windowSeconds: 60 };
  const { key: hot } = await post("/v1/accounts", { name: "bench", rateLimit, admin: { email: "bench@example.com" } }, OPERATOR_TOKEN);
  const keys = [];
  for (let i = 0; i < KEYS; i++) keys.push((await post("/v1/api-keys", { name: `bench ${i}` }, hot.key)).key);

  const scenarios = [
    { name: "bare", title: "GET /health, no authentication", path: "/health", distinct: 1, headers: () => ({}) },
    { name: "hotKey", title: "GET /v1/whoami, one key", path: "/v1/whoami", distinct: 1, headers: () => ({ "X-API-Key": hot.key }) },
    {
      name: "manyKeys",
      title: `GET /v1/whoami, ${KEYS} keys in turn`,
      path: "/v1/whoami",
      distinct: KEYS,
      headers: (i) => ({ "X-API-Key": keys[i % KEYS] }),
    },
    {
      name: "gateway",
      title: "GET /v1/data through the gateway to a local upstream, one key",
      path: "/v1/data",
      distinct: 1,
      headers: () => ({ "X-API-Key": hot.key }),
    },
    // The same requests, key header included, straight to the upstream: what the gateway adds is the difference.
    {
      name: "direct",
      title: "GET /v1/data straight to the local upstream, no Keygate",
      base: upstreamBase,
      path: "/v1/data",
      distinct: 1,
      headers: () => ({ "X-API-Key": hot.key }),
    },
  ];
  const urlOf = (s) => (s.base ?? base) + s.path;

  // Scenarios take turns over several rounds and each keeps its median round: the machine's noise (other tenants,
  // disk latency) then weighs on every scenario alike instead of on whichever ran during a bad moment.
  const rounds = Object.fromEntries(scenarios.map((s) => [s.name, []]));
  const counts = {};
  // Warm-up: one request per distinct credential right before each measurement, so it sees the steady state (each
  // key's counter is in memory and its lastUsedAt was just written), not counters waking up after a pause.
  const warmUp = async (s) => {
    for (let i = 0; i < s.distinct; i++) await fetch(urlOf(s), { headers: s.headers(i) });
  };
  for (const s of scenarios) {
    await warmUp(s);
    const probe = await fetch(urlOf(s), { headers: { ...s.headers(0), "X-Bench-Count": "1" } });
    if (probe.status !== 200) throw new Error(`${s.name}: probe answered ${probe.status}`);
    // Without Keygate in the path there is nothing to count.
    if (s.base) {
      counts[s.name] = { d1: 0, do: 0 };
      continue;
    }
    counts[s.name] = Object.fromEntries(
      probe.headers
        .get("X-Bench-Counts")
        .split(";")
        .map((kv) => kv.split("="))
        .map(([k, v]) => [k, Number(v)]),
    );
  }
  for (let round = 1; round <= ROUNDS; round++) {
    for (const s of scenarios) {
      await warmUp(s);
      let n = 0;
      const run = await autocannon({
        url: urlOf(s),
        connections: CONNECTIONS,
        duration: DURATION_SECONDS,
        requests: [{ setupRequest: (req) => ({ ...req, headers: { ...req.headers, ...s.headers(n++) } }) }],
      });
      const failed = run.non2xx + run.errors + run.timeouts;
      if (failed > 0) throw new Error(`${s.name}: ${failed} requests failed`);
      rounds[s.name].push({
        requestsPerSecond: Math.round(run.requests.average),
        latencyMs: { p50: run.latency.p50, p99: run.latency.p99 },
      });
      console.log(
        `round ${round} ${s.name.padEnd(9)} ${String(Math.round(run.requests.average)).padStart(6)} req/s  p50 ${run.latency.p50} ms  p99 ${run.latency.p99} ms`,
      );
    }
  }
  const results = {};
  for (const s of scenarios) {
    const sorted = [...rounds[s.name]].sort((x, y) => x.requestsPerSecond - y.requestsPerSecond);
    const median = sorted[Math.floor(sorted.length / 2)];
    results[s.name] = {
      title: s.title,
      ...median,
      rounds: rounds[s.name].map((r) => r.requestsPerSecond),
      d1RoundTripsPerRequest: counts[s.name].d1,
      durableObjectCallsPerRequest: counts[s.name].do,
    };
    console.log(
      `${s.name.padEnd(9)} ${String(median.requestsPerSecond).padStart(6)} req/s (median)  p50 ${median.latencyMs.p50} ms  p99 ${median.latencyMs.p99} ms  D1 ${counts[s.name].d1}  DO ${counts[s.name].do}`,
    );
  }

  const ratio = (a, b) => Math.round((results[a].requestsPerSecond / results[b].requestsPerSecond) * 100) / 100;
  const report = {
    date: new Date().toISOString().slice(0, 10),
    node: process.version,
    durationSeconds: DURATION_SECONDS,
    rounds: ROUNDS,
    connections: CONNECTIONS,
    scenarios: results,
    ratios: {
      hotKeyToBare: ratio("hotKey", "bare"),
      manyKeysToBare: ratio("manyKeys", "bare"),
      gatewayToDirect: ratio("gateway", "direct"),
      // What forwarding adds to an authenticated request that Keygate answers itself.
      gatewayToHotKey: ratio("gateway", "hotKey"),
    },
  };
  console.log(
    `ratios: b/a ${report.ratios.hotKeyToBare}  c/a ${report.ratios.manyKeysToBare}  d/e ${report.ratios.gatewayToDirect}  d/b ${report.ratios.gatewayToHotKey}`,
  );
  writeFileSync("bench/results.json", `${JSON.stringify(report, null, 2)}\n`);
} finally {
  await mf?.dispose();
  await upstream.terminate();
}
