// The benchmark's probes of what leases promise, with load from several isolates of one deployment: how soon a
// revocation is in force everywhere (g), and that a key driven at an even pace is admitted what one exact limiter would
// admit, never a window over its limit (h); and how soon a change's webhook arrives (x).
// Every load here is bounded in time and count and stops by itself; each request has its own timeout.
import { createServer } from "node:http";

/** How long a single request may take before it counts as failed (status 0). */
const REQUEST_TIMEOUT_MS = 5_000;
const now = () => performance.now();
/** How far the wall clock (Date.now, what the server decides on) is ahead of the monotonic one (`now`), in ms. */
const wallMinusMonotonic = () => Date.now() - (performance.timeOrigin + performance.now());
const round = (x) => Math.round(x * 10) / 10;

/** One request: when it left, when its answer came (ms, this process's monotonic clock) and its status (0: failed). */
async function timed(url, headers) {
  const sent = now();
  try {
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    await res.arrayBuffer();
    return { sent, done: now(), status: res.status };
  } catch {
    return { sent, done: now(), status: 0 };
  }
}

function countBy(records, f) {
  const counts = {};
  for (const r of records) counts[f(r)] = (counts[f(r)] ?? 0) + 1;
  return counts;
}

/**
 * (g) Loads one key from every isolate (`connections` requests in flight each, back to back), revokes it through
 * `revoke()` once `warmMs` have passed, and goes on for `afterMs` past the revocation's answer. Per isolate: when its
 * first refusal and its last admission came, relative to the revocation's answer (negative: before it), and how many
 * requests it admitted after the answer (`admittedAfterAnswer`: answered 200 after it; `admittedSentAfterAnswer`: sent
 * after it and answered 200, so surely decided after the revocation was in force at the key's object).
 */
export async function revocationProbe({ isolates, path, headers, revoke, connections = 4, warmMs = 2_000, afterMs = 2_000 }) {
  const start = now();
  // A hard stop whatever happens to the revocation, so the load always ends.
  let stopAt = start + warmMs + 10_000;
  const records = isolates.map(() => []);
  const loops = isolates.flatMap((isolate, i) =>
    Array.from({ length: connections }, async (_, c) => {
      while (now() < stopAt) records[i].push(await timed(isolate.url + path, headers(i, c)));
    }),
  );
  await new Promise((resolve) => setTimeout(resolve, warmMs));
  const revokeSent = now();
  const res = await revoke().catch(() => null);
  const answered = now();
  stopAt = Math.min(stopAt, answered + afterMs);
  await Promise.all(loops);
  // Anything but 200 (say 503 change_pending, or 0: no answer) is reported: the revocation was then not in force at
  // its answer.
  const revocationStatus = res?.status ?? 0;
  await res?.arrayBuffer();
  const perIsolate = isolates.map((isolate, i) => {
    const all = records[i];
    const refusals = all.filter((r) => r.status >= 400 && r.status < 500 && r.done >= revokeSent);
    const admittedAfter = all.filter((r) => r.status === 200 && r.done > answered);
    const firstRefusal = refusals.length ? Math.min(...refusals.map((r) => r.done)) - answered : null;
    const lastAdmission = admittedAfter.length ? Math.max(...admittedAfter.map((r) => r.done)) - answered : null;
    return {
      isolate: isolate.name,
      requests: all.length,
      admittedBeforeRevocation: all.filter((r) => r.status === 200 && r.done < revokeSent).length,
      firstRefusalAfterAnswerMs: firstRefusal === null ? null : round(firstRefusal),
      firstRefusalStatus: refusals.find((r) => r.done - answered === firstRefusal)?.status ?? null,
      lastAdmissionAfterAnswerMs: lastAdmission === null ? null : round(lastAdmission),
      admittedAfterAnswer: admittedAfter.length,
      admittedSentAfterAnswer: admittedAfter.filter((r) => r.sent > answered).length,
      statusesAfterAnswer: countBy(
        all.filter((r) => r.done > answered),
        (r) => r.status,
      ),
    };
  });
  // In force everywhere: each isolate refuses, and admits nothing any later, by then.
  const seenEverywhereMs = Math.max(
    ...perIsolate.map((p) => Math.max(p.firstRefusalAfterAnswerMs ?? Infinity, p.lastAdmissionAfterAnswerMs ?? 0)),
  );
  return {
    revocationStatus,
    revocationAnswerMs: round(answered - revokeSent),
    connectionsPerIsolate: connections,
    afterMs,
    perIsolate,
    seenEverywhereMs: round(seenEverywhereMs),
  };
}

/** The most of `times` (ascending) in any window [t, t + windowMs). */
function busiest(times, windowMs) {
  let most = 0;
  for (let i = 0, j = 0; j < times.length; j++) {
    while (times[j] - times[i] >= windowMs) i++;
    most = Math.max(most, j - i + 1);
  }
  return most;
}

/** What one exact sliding-log limiter (at most `limit` in any window (t - windowMs, t]) admits of these arrivals. */
function idealAdmissions(arrivals, limit, windowMs) {
  const log = [];
  for (const t of arrivals) {
    let inWindow = 0;
    for (let k = log.length - 1; k >= 0 && log[k] > t - windowMs; k--) inWindow++;
    if (inWindow < limit) log.push(t);
  }
  return log;
}

/**
 * (h) An open-loop load of one key: `rate` requests a second in all, at an even pace, dealt in turn to the isolates, for `seconds`.
 * The key admits at most `limit` in any window of `windowSeconds`. Reports what was admitted in each window of
 * `windowSeconds` from the start, the busiest sliding window, and what one exact limiter would have admitted of the
 * same arrivals. A request is decided somewhere between its sending and its answer, so the busiest window is counted
 * three ways: by answer time and by sending time (each off by a request's latency at a window's edges), and `surely`:
 * requests both sent and answered within one window, a count the real one can only exceed (so above the limit it
 * proves over-admission).
 */
export async function accuracyProbe({ isolates, path, headers, limit, windowSeconds, rate = 100, seconds = 30, maxInFlight = 500 }) {
  const windowMs = windowSeconds * 1000;
  const interval = 1000 / rate;
  const total = Math.round(rate * seconds);
  const start = now();
  const wallAhead = wallMinusMonotonic();
  const drift = { min: 0, max: 0 };
  const sampleDrift = () => {
    const d = wallMinusMonotonic() - wallAhead;
    drift.min = Math.min(drift.min, d);
    drift.max = Math.max(drift.max, d);
    return d;
  };
  const pending = [];
  let inFlight = 0;
  let skipped = 0;
  for (let k = 0; k < total; k++) {
    const due = start + k * interval;
    const wait = due - now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    // A server that stops answering must not pile up requests without bound: past maxInFlight, arrivals are dropped.
    if (inFlight >= maxInFlight) {
      skipped++;
      continue;
    }
    const i = k % isolates.length;
    if (k % 50 === 0) sampleDrift();
    inFlight++;
    pending.push(
      timed(isolates[i].url + path, headers(i)).then((r) => {
        inFlight--;
        return { ...r, isolate: i };
      }),
    );
  }
  const records = (await Promise.all(pending)).map((r) => ({ ...r, sent: r.sent - start, done: r.done - start }));
  // The objects decide on the wall clock, the probe times on the monotonic one: should the machine's wall clock gain on
  // it during the run, windows end early by that much on the objects' side, and `surely` shows it as over-admission.
  // How far it moved (ms, sampled every 50 requests) is reported beside the count.
  const end = sampleDrift();
  const clockDriftMs = { end: round(end), min: round(drift.min), max: round(drift.max) };
  const admitted = records.filter((r) => r.status === 200).sort((a, b) => a.sent - b.sent);
  const windows = Array.from({ length: Math.ceil(seconds / windowSeconds) }, (_, w) => ({
    fromSecond: w * windowSeconds,
    sent: records.filter((r) => Math.floor(r.sent / windowMs) === w).length,
    admitted: admitted.filter((r) => Math.floor(r.sent / windowMs) === w).length,
  }));
  let surely = 0;
  for (const a of admitted) {
    surely = Math.max(surely, admitted.filter((r) => r.sent >= a.sent && r.done < a.sent + windowMs).length);
  }
  const bySent = busiest(
    admitted.map((r) => r.sent),
    windowMs,
  );
  const byAnswer = busiest(
    admitted.map((r) => r.done).sort((a, b) => a - b),
    windowMs,
  );
  const ideal = idealAdmissions(
    records.map((r) => r.sent).sort((a, b) => a - b),
    limit,
    windowMs,
  ).length;
  const latencies = records.map((r) => r.done - r.sent).sort((a, b) => a - b);
  return {
    limit,
    windowSeconds,
    ratePerSecond: rate,
    seconds,
    isolates: isolates.map((s) => s.name),
    sent: records.length,
    skipped,
    statuses: countBy(records, (r) => r.status),
    admittedPerIsolate: isolates.map((_, i) => admitted.filter((r) => r.isolate === i).length),
    admittedPerWindow: windows,
    busiestWindow: { surely, bySent, byAnswer },
    clockDriftMs,
    overAdmission: Math.max(0, surely - limit),
    admitted: admitted.length,
    idealAdmitted: ideal,
    underAdmission: ideal > 0 ? Math.round((1 - admitted.length / ideal) * 1000) / 1000 : 0,
    latencyMs: {
      p50: round(latencies[Math.floor(latencies.length * 0.5)] ?? 0),
      p99: round(latencies[Math.floor(latencies.length * 0.99)] ?? 0),
    },
  };
}

/**
 * (x) How soon a change's webhook arrives: `changes` times, `change()` makes one (a key created) and answers the id its
 * event names; a receiver on 127.0.0.2 notes when each arrives. The latency is from the change's answer to the first
 * attempt's arrival, one change at a time (`gapMs` apart), so each measures the path, not a queue of them.
 */
export async function webhookProbe({ change, changes = 40, gapMs = 100, timeoutMs = 15_000 }) {
  const arrived = new Map();
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      try {
        const id = JSON.parse(body)?.data?.key?.id;
        if (id && !arrived.has(id)) arrived.set(id, Date.now());
      } catch {}
      res.writeHead(204).end();
    });
  });
  // Another loopback address than Keygate's own (127.0.0.1): an endpoint on Keygate's own host is refused.
  await new Promise((done) => server.listen(0, "127.0.0.2", done));
  const url = `http://127.0.0.2:${server.address().port}/hooks`;
  try {
    const answered = new Map();
    return await (async () => {
      const register = await change.register(url);
      await new Promise((r) => setTimeout(r, 1000));
      for (let i = 0; i < changes; i++) {
        const id = await change.make(i);
        answered.set(id, Date.now());
        await new Promise((r) => setTimeout(r, gapMs));
      }
      const deadline = Date.now() + timeoutMs;
      while (arrived.size < changes && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const latencies = [...answered]
        .filter(([id]) => arrived.has(id))
        .map(([id, at]) => arrived.get(id) - at)
        .sort((a, b) => a - b);
      const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? null;
      return {
        endpoint: register,
        changes,
        delivered: latencies.length,
        firstAttemptMs: { p50: q(0.5), p95: q(0.95), max: latencies.at(-1) ?? null },
      };
    })();
  } finally {
    server.close();
  }
}
