// Open-loop load at a fixed rate, for latency that measures the work a request does rather than the queue in front of
// a saturated server. Requests are due at even intervals and sent when due over at most `connections` keep-alive
// connections; a request's latency runs from when it was due to its answer's end, so time spent waiting for a free
// connection or behind a slow answer counts (no coordinated omission).
// autocannon's own rate options do not do this: each connection sends its share of a second's requests back to back
// at the start of the second and then idles, so every second begins with a burst at full concurrency.
import { Agent, request } from "node:http";

/** How long one request may take before it counts as failed. */
const REQUEST_TIMEOUT_MS = 10_000;
const round = (x) => Math.round(x * 10) / 10;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The `q` quantile of ascending `sorted` (nearest rank). */
export const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;

/**
 * GETs `url` `rate` times a second for `seconds`, with `headers(i)` on the i-th request. Answers the latency
 * percentiles (ms, from each request's due time) and every latency (ascending), the rate achieved, and the requests
 * that failed or were not 2xx.
 */
export async function fixedRate({ url, rate, seconds, connections, headers }) {
  const target = new URL(url);
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const interval = 1000 / rate;
  const total = Math.round(rate * seconds);
  const latencies = [];
  const statuses = {};
  const one = (i, due) =>
    new Promise((resolve) => {
      const done = (status) => {
        latencies.push(performance.now() - due);
        statuses[status] = (statuses[status] ?? 0) + 1;
        resolve();
      };
      const req = request({ host: target.hostname, port: target.port, path: target.pathname, headers: headers(i), agent }, (res) => {
        res.resume();
        res.on("end", () => done(res.statusCode));
        res.on("error", () => done(0));
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy());
      req.on("error", () => done(0));
      req.end();
    });
  const pending = [];
  const start = performance.now();
  for (let i = 0; i < total; ) {
    // Everything due by now leaves now; then sleep until the next one is due.
    const now = performance.now();
    for (; i < total && start + i * interval <= now; i++) pending.push(one(i, start + i * interval));
    if (i < total) await sleep(Math.max(0, start + i * interval - performance.now()));
  }
  await Promise.all(pending);
  const elapsed = (performance.now() - start) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const ok = Object.entries(statuses).reduce((n, [status, count]) => n + (status >= 200 && status < 300 ? count : 0), 0);
  return {
    requests: total,
    achievedPerSecond: Math.round(total / elapsed),
    latencyMs: { p50: round(quantile(latencies, 0.5)), p90: round(quantile(latencies, 0.9)), p99: round(quantile(latencies, 0.99)) },
    latencies,
    failed: total - ok,
    statuses,
  };
}
