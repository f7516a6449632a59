import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { LEASE_MS } from "../../src/core/lease";
import type { Counter } from "../../src/counters/counter-object";
import { Holdings, holdings } from "../../src/counters/held";
import { leasedCall } from "../../src/counters/leased-call";
import { SlidingLog } from "../../src/counters/sliding-log";
import { authorizeKey } from "../../src/keys/authorize";
import { makeDeps } from "../../src/platform/deps";
import { ApiError } from "../../src/platform/errors";
import { faultyObjects } from "../faults";
import { call, callWith, createAgent, createKey, expectProblem, memberWithKey, provision, WIDGET_ORIGIN } from "../helpers";

/** One request's Deps for calling the key path directly, as an isolate would (on these bindings, if given), and its context. */
function request(overrides: Partial<Cloudflare.Env> = {}) {
  const ctx = createExecutionContext();
  return { deps: makeDeps({ ...env, ...overrides }, ctx), ctx };
}

/**
 * One request on the key path of `isolate`, after its background work (a renewal, a cancellation) has ended: how it was
 * admitted (from a lease, counted by the object, or unlimited because the object was down in open mode), or the
 * status the app answers (429 over the limit, an ApiError's own; anything else thrown is a 500).
 */
async function outcome(key: string, isolate: Holdings, overrides: Partial<Cloudflare.Env> = {}, cost = 1, credits?: number) {
  const { deps, ctx } = request(overrides);
  try {
    const verdict = await authorizeKey(deps, { key, method: "bearer", need: "any", cost, credits }, isolate);
    if (!verdict.ok) return "refused";
    const [spent] = verdict.spent;
    if (verdict.unlimited || !spent) return "unlimited";
    if (!spent.allowed) return spent.exhausted ? 402 : 429;
    return spent.leased ? "leased" : "counted";
  } catch (err) {
    return err instanceof ApiError ? err.status : 500;
  } finally {
    await waitOnExecutionContext(ctx);
  }
}

const tally = (outcomes: unknown[]) => {
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[String(o)] = (counts[String(o)] ?? 0) + 1;
  return counts;
};

/**
 * A fresh hot key (limit 100,000 a minute) and an isolate holding a lease of it, on a clock the test moves (so the
 * lease ends only when the test says). `admitted`: the requests it admitted so far.
 */
async function leasedKey() {
  const { key } = await provision();
  const hot = await createKey(key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
  const clock = { now: Date.now() };
  const isolate = new Holdings(() => clock.now);
  const name = `key:${hot.id}`;
  let admitted = 0;
  while (isolate.available(name) === 0) {
    expect(await outcome(hot.key, isolate)).toMatch(/leased|counted/);
    admitted += 1;
    expect(admitted).toBeLessThan(100);
  }
  return { hot, isolate, clock, name, admitted };
}

/**
 * leasedKey, with two admissions of the lease spent: the lease's end then holds admissions spent beside the unspent
 * ones, so taking the unspent ones back twice would show.
 */
async function partlySpentLease() {
  const leased = await leasedKey();
  for (let i = 0; i < 2; i++) expect(await outcome(leased.hot.key, leased.isolate)).toBe("leased");
  expect(leased.isolate.available(leased.name)).toBeGreaterThan(0);
  return { ...leased, admitted: leased.admitted + 2 };
}

/** What the key's object counts as spent: its limit less what it has left, asked by a call that spends and leases nothing. */
async function countedByObject(keyId: string): Promise<number> {
  const tag = { id: crypto.randomUUID(), deadline: Date.now() + 10_000 };
  const answer = await env.KEYS.getByName(`key:${keyId}`).authorize({ keyId, method: "bearer", need: "any", tag, cost: 0 });
  if (!answer.ok) throw new Error("the object refused the key");
  const [limit] = answer.granted.limits;
  if (!limit) throw new Error("the key has no limit");
  return limit.limit - limit.remaining;
}

describe("leases", () => {
  it("serve a hot key's requests with few object calls, headers counting down exactly", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 1000, windowSeconds: 60 } });
    const observed = faultyObjects(env.KEYS, {});
    const remaining: number[] = [];
    for (let i = 0; i < 200; i++) {
      const res = await callWith({ KEYS: observed }, "/v1/whoami", { key: hot.key });
      expect(res.status).toBe(200);
      remaining.push(Number(res.headers.get("X-RateLimit-Remaining")));
    }
    expect(remaining).toEqual(Array.from({ length: 200 }, (_, i) => 999 - i));
    expect(observed.calls("authorize")).toBeLessThan(60);
  });

  it("answer a hot key's refusals in the isolate, with no call, until its limit could admit again; a revocation ends that at once", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 100, windowSeconds: 60 } });
    const observed = faultyObjects(env.KEYS, {});
    const whoami = () => callWith({ KEYS: observed }, "/v1/whoami", { key: hot.key });
    let admitted = 0;
    for (let res = await whoami(); res.status === 200; res = await whoami()) admitted += 1;
    expect(admitted).toBe(100);
    const calls = observed.calls("authorize");
    for (let i = 0; i < 20; i++) {
      const res = await whoami();
      await expectProblem(res, 429, "rate_limited");
      expect(Number(res.headers.get("Retry-After"))).toBeGreaterThan(50);
      expect(res.headers.get("X-RateLimit-Remaining")).toBe("0");
    }
    expect(observed.calls("authorize")).toBe(calls);
    expect((await call(`/v1/api-keys/${hot.id}`, { method: "DELETE", key: key.key })).status).toBe(200);
    await expectProblem(await whoami(), 401, "key_revoked");
  });

  it("end in the isolate that revokes the key at once, and the object refuses every other isolate at once", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 1000, windowSeconds: 60 } });
    const other = new Holdings();
    for (let i = 0; i < 50; i++) {
      expect((await call("/v1/whoami", { key: hot.key })).status).toBe(200);
      expect((await authorizeKey(request().deps, { key: hot.key, method: "bearer", need: "any" }, other)).ok).toBe(true);
    }
    expect(other.get(`key:${hot.id}`)?.leases.available(Date.now())).toBeGreaterThan(0);
    expect((await call(`/v1/api-keys/${hot.id}`, { method: "DELETE", key: key.key })).status).toBe(200);
    await expectProblem(await call("/v1/whoami", { key: hot.key }), 401, "key_revoked");
    // The other isolate holds a lease: it may spend it until the lease ends (at most a second), never after.
    const now = Date.now();
    expect((await authorizeKey(request().deps, { key: hot.key, method: "bearer", need: "any" }, other)).ok).toBe(true);
    other.now = () => now + 1000;
    expect(await authorizeKey(request().deps, { key: hot.key, method: "bearer", need: "any" }, other)).toEqual({
      ok: false,
      code: "key_revoked",
    });
  });

  it("let two isolates sharing one object admit no more than the limit between them, holding the rest", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 50, windowSeconds: 60 } });
    const isolates = [new Holdings(), new Holdings()];
    const verdicts = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        authorizeKey(request().deps, { key: limited.key, method: "bearer", need: "any" }, isolates[i % 2]),
      ),
    );
    const admitted = verdicts.filter((v) => v.ok && (v.unlimited || v.spent.every((s) => s.allowed))).length;
    expect(admitted).toBeLessThanOrEqual(50);
    // Under-admission is bounded by what the isolates still hold unspent.
    const held = isolates.reduce((n, h) => n + (h.get(`key:${limited.id}`)?.leases.available(Date.now()) ?? 0), 0);
    expect(admitted + held).toBeGreaterThanOrEqual(50);
  });

  it("lease a hot plain counter too: concurrent handshakes of one agent admit exactly its limit", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    // A long deadline: 150 concurrent handshakes on this machine must not turn into 503s.
    const answers = await Promise.all(
      Array.from({ length: 150 }, () =>
        callWith({ HANDSHAKE_AGENT_RATE_LIMIT: "40/60", RATE_LIMIT_TIMEOUT_MS: "20000" }, "/v1/handshake", {
          headers: { Origin: WIDGET_ORIGIN },
          body: { agentId: agent.id },
        }),
      ),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(40);
    expect(statuses.filter((s) => s === 429)).toHaveLength(110);
  }, 30_000);

  it("decide a request from a held lease at once, with no promise and no call: the leased path awaits nothing", async () => {
    const { isolate, name } = await leasedKey();
    const answer = leasedCall(
      request().deps,
      {
        name,
        stub: env.KEYS.getByName(name),
        cost: 1,
        ask: () => Promise.reject(new Error("a held lease decides without a call")),
      },
      isolate,
    );
    expect(answer).not.toBeInstanceOf(Promise);
    expect(answer).toMatchObject({ ok: true, spent: { allowed: true, leased: true, name } });
  });

  it("give a refused request's admission back to the lease it came from", async () => {
    const { key } = await provision();
    const { key: memberKey } = await memberWithKey(key.key);
    let remaining = 0;
    for (let i = 0; i < 50; i++)
      remaining = Number((await call("/v1/whoami", { key: memberKey.key })).headers.get("X-RateLimit-Remaining"));
    // Members may not create keys here: the handler refuses (403) after the admission was spent from the lease.
    await expectProblem(await call("/v1/api-keys", { key: memberKey.key, body: { name: "x" } }), 403, "insufficient_role");
    const next = await call("/v1/whoami", { key: memberKey.key });
    expect(Number(next.headers.get("X-RateLimit-Remaining"))).toBe(remaining - 1);
  });

  it("take back a whole lease at once, in memory and in storage, and nothing more", async () => {
    const stub = env.COUNTERS.getByName(`lease-return:${crypto.randomUUID()}`);
    await runInDurableObject(stub, async (_: Counter, state) => {
      const log = new SlidingLog(state.storage.sql, () => 1_000_000);
      const limits = [{ name: "default", limit: 1000, windowSeconds: 60 }];
      // A hot log (60 admissions in its last second) leases half a second's worth beside the next one.
      for (let i = 0; i < 60; i++) log.admit({ limits });
      const leased = log.admit({ limits, lease: true });
      expect(leased).toMatchObject({ allowed: true, lease: { id: 1_001_000, units: 30, ms: 1000 }, limits: [{ remaining: 909 }] });
      await log.saved();
      const rows = () => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM hits WHERE at = 1001000").one().n;
      expect(rows()).toBe(30);
      log.refundLease(1_001_000, 15);
      expect(rows()).toBe(15);
      log.refundLease(1_001_000, 50);
      expect(rows()).toBe(0);
      expect(log.admit({ limits })).toMatchObject({ allowed: true, limits: [{ remaining: 938 }] });
    });
  });

  it("write a quiet moment's admission in the step that decides it, and let those close behind it share one write", async () => {
    const stub = env.COUNTERS.getByName(`quiet-write:${crypto.randomUUID()}`);
    await runInDurableObject(stub, async (_: Counter, state) => {
      let now = 1_000_000;
      const log = new SlidingLog(state.storage.sql, () => now);
      const limits = [{ name: "default", limit: 10, windowSeconds: 60 }];
      const rows = () => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM hits").one().n;
      // Nothing written for a while: stored before anything is awaited, in the commit of the step that decided it.
      log.admit({ limits });
      const first = log.saved();
      expect(rows()).toBe(1);
      // 3 ms later: these wait to share one write, and one given back before it is never written.
      now += 3;
      log.admit({ limits });
      const second = log.saved();
      const refunded = log.admit({ limits });
      expect(log.saved()).toBe(second);
      expect(rows()).toBe(1);
      log.refund(refunded.at, refunded.costs);
      await Promise.all([first, second]);
      expect(rows()).toBe(2);
      // 5 ms after the last write: quiet again.
      now += 5;
      log.admit({ limits });
      const third = log.saved();
      expect(rows()).toBe(3);
      await third;
      // A new instance counts what this one counted.
      const restarted = new SlidingLog(state.storage.sql, () => now);
      expect(restarted.admit({ limits })).toMatchObject({ allowed: true, limits: [{ remaining: 6 }] });
      expect(log.admit({ limits })).toMatchObject({ allowed: true, limits: [{ remaining: 6 }] });
    });
  });

  it("renew a hot key's lease with one call of the isolate, the requests beside it waiting for it", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const observed = faultyObjects(env.KEYS, {});
    for (let i = 0; i < 60; i++) await callWith({ KEYS: observed }, "/v1/whoami", { key: hot.key });
    const before = observed.calls("authorize");
    const burst = await Promise.all(Array.from({ length: 300 }, () => callWith({ KEYS: observed }, "/v1/whoami", { key: hot.key })));
    expect(burst.map((r) => r.status).filter((s) => s !== 200)).toEqual([]);
    expect(observed.calls("authorize") - before).toBeLessThan(30);
  });

  it("refuse no request for want of credits while those of this isolate's ended leases are on their way back", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { credits: { remaining: 1000 }, rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const name = `key:${hot.id}`;
    const stub = env.KEYS.getByName(name);
    const tag = () => ({ id: crypto.randomUUID(), deadline: Date.now() + 10_000 });
    const direct = (extra: { credits?: number; lease?: boolean; wanted?: number; perUnit?: number } = {}) =>
      stub.authorize({ keyId: hot.id, method: "bearer", need: "any", cost: 1, ...extra, tag: tag() });
    // The key is hot; this isolate holds two leases of it with their credits, on a clock the test moves.
    for (let i = 0; i < 60; i++) await direct();
    const clock = { now: Date.now() };
    const isolate = new Holdings(() => clock.now);
    for (let i = 0; i < 2; i++) {
      const leased = await direct({ credits: 1, lease: true, wanted: 64, perUnit: 1 });
      if (!leased.ok || !leased.granted.lease) throw new Error("no lease");
      isolate.hold(name, clock.now, leased.principal, leased.granted.lease, leased.granted.limits, leased.granted.credits);
    }
    const held = isolate.available(name);
    expect(held).toBeGreaterThan(66);
    // Every other credit is spent, and the leases end unspent: their credits go back with this isolate's next call.
    const rest = (await stub.credits(hot.id))?.remaining ?? 0;
    expect(await direct({ credits: rest })).toMatchObject({ ok: true, granted: { allowed: true } });
    clock.now += LEASE_MS + 1;
    expect(isolate.owing(name)).toBe(held);
    // That call (A) is slow to arrive; a request too big to wait for it (B, 65) calls beside it and arrives first,
    // when the balance is empty.
    const late = faultyObjects(env.KEYS, { authorize: { kind: "late-call", ms: 300, times: 1 } });
    const a = outcome(hot.key, isolate, { KEYS: late }, 1, 1);
    await late.reached("authorize");
    const b = outcome(hot.key, isolate, { KEYS: late }, 65, 65);
    expect(await a).toBe("counted");
    expect(await b).toBe("counted");
    // The balance, with what this isolate holds of a lease A brought, is what the two requests left.
    const inLeases = isolate.creditsLeft(name, { remaining: 0, nextRefillAt: null })?.remaining ?? 0;
    expect(((await stub.credits(hot.id))?.remaining ?? 0) + inLeases).toBe(held - 66);
  });

  it("never keep a request waiting on another request's call past that call's deadline, even when it never settles", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const clock = { now: Date.now() };
    const isolate = new Holdings(() => clock.now);
    const name = `key:${hot.id}`;
    while (isolate.available(name) === 0) expect(await outcome(hot.key, isolate)).toMatch(/leased|counted/);
    // The lease has ended: the next request must call, or wait for a call of this isolate in flight.
    clock.now += LEASE_MS;
    const start = Date.now();
    // The call of a request the runtime cancelled (its client went away) never settles; its deadline was 100 ms away.
    isolate.track(name, new Promise<never>(() => {}), () => true, 100);
    expect(isolate.inFlight(name)).toBeDefined();
    // The next requests wait for it at most until then, then ask for themselves; later ones do not wait at all.
    const waiting = outcome(hot.key, isolate);
    await new Promise((resolve) => setTimeout(resolve, 150));
    clock.now += 150;
    expect(await waiting).toMatch(/leased|counted/);
    expect(Date.now() - start).toBeLessThan(2_000);
    expect(isolate.inFlight(name)).toBeUndefined();
  });

  it("ask for a hot key's next lease before the current one runs out, so no request waits for the object", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const isolate = new Holdings();
    const served: boolean[] = [];
    for (let i = 0; i < 300; i++) {
      const { deps, ctx } = request();
      const verdict = await authorizeKey(deps, { key: hot.key, method: "bearer", need: "any" }, isolate);
      await waitOnExecutionContext(ctx);
      served.push(verdict.ok && verdict.spent[0]?.leased === true);
    }
    // Once the key is hot (the first lease), every request is served from a lease, however many leases it takes.
    const first = served.indexOf(true);
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(40);
    expect(served.slice(first).every(Boolean)).toBe(true);
  });

  it("give a key gone cold single admissions, however many of its requests meet in one isolate: the client gets its whole limit", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 60, windowSeconds: 3600 } });
    const name = `key:${limited.id}`;
    const clock = { now: Date.now() };
    await runInDurableObject(env.KEYS.getByName(name), (object) => {
      object.clock = () => clock.now;
    });
    const isolate = new Holdings(() => clock.now);
    let admitted = 0;
    // A burst makes the key hot: this isolate holds a lease.
    while (isolate.available(name) === 0) {
      expect(await outcome(limited.key, isolate)).toMatch(/leased|counted/);
      admitted += 1;
    }
    // A second later the key is cold (nothing in its last second): three requests meet in this isolate, one calling
    // while the others wait for it. The ended lease goes back; a cold key is owed single admissions.
    clock.now += LEASE_MS;
    const met = await Promise.all([0, 1, 2].map(() => outcome(limited.key, isolate)));
    expect(met.every((o) => o === "counted")).toBe(true);
    admitted += met.length;
    // The isolate serves the key no more; the client goes on from another, slowly (never hot there).
    const other = new Holdings(() => clock.now);
    for (let i = 0; i < 60; i++) {
      clock.now += 1000;
      if ((await outcome(limited.key, other)) === "counted") admitted += 1;
    }
    expect(admitted).toBe(60);
  });
});

describe("leases when the key's object fails", () => {
  const failures = [
    { name: "throws", fault: { kind: "throw" } as const },
    { name: "stalls", fault: { kind: "stall" } as const },
  ];

  for (const { name, fault } of failures) {
    it(`spend only the current lease when the renewal ${name}, then each request asks for itself: 503 in closed mode`, async () => {
      const { hot, isolate, name: counter, admitted } = await leasedKey();
      const held = isolate.available(counter);
      const failing = faultyObjects(env.KEYS, { authorize: fault });
      const bindings = { KEYS: failing, RATE_LIMIT_TIMEOUT_MS: "100" };
      const outcomes = await Promise.all(Array.from({ length: held + 10 }, () => outcome(hot.key, isolate, bindings)));
      expect(tally(outcomes)).toEqual({ leased: held, 503: 10 });
      // The renewal, then every request the lease could not serve.
      expect(failing.calls("authorize")).toBeGreaterThanOrEqual(11);
      expect(await countedByObject(hot.id)).toBe(admitted + held);
    });

    it(`spend only the current lease when the renewal ${name}, then admit unlimited in open mode`, async () => {
      const { hot, isolate, name: counter, admitted } = await leasedKey();
      const held = isolate.available(counter);
      const failing = faultyObjects(env.KEYS, { authorize: fault });
      const bindings = { KEYS: failing, RATE_LIMIT_TIMEOUT_MS: "100", RATE_LIMIT_FAILURE_MODE: "open" };
      const outcomes = await Promise.all(Array.from({ length: held + 10 }, () => outcome(hot.key, isolate, bindings)));
      expect(tally(outcomes)).toEqual({ leased: held, unlimited: 10 });
      expect(failing.calls("authorize")).toBeGreaterThanOrEqual(11);
      expect(await countedByObject(hot.id)).toBe(admitted + held);
    });
  }

  it("answer 503, never 500, over HTTP when the renewal fails, having admitted no more than the lease held", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const counter = `key:${hot.id}`;
    for (let i = 0; holdings.available(counter) === 0; i++) {
      expect((await call("/v1/whoami", { key: hot.key })).status).toBe(200);
      expect(i).toBeLessThan(100);
    }
    const held = holdings.available(counter);
    const failing = { KEYS: faultyObjects(env.KEYS, { authorize: { kind: "throw" } }) };
    const statuses = (await Promise.all(Array.from({ length: held + 10 }, () => callWith(failing, "/v1/whoami", { key: hot.key })))).map(
      (r) => r.status,
    );
    // The lease may end while the burst runs on a slow machine: then fewer are admitted, never more.
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(held);
    expect(statuses.filter((s) => s !== 200).every((s) => s === 503)).toBe(true);
    expect(statuses.filter((s) => s === 503).length).toBeGreaterThanOrEqual(10);
  });

  it("take back what an ended lease left when the call returning it fails before reaching the object", async () => {
    const { hot, isolate, clock, name, admitted } = await partlySpentLease();
    clock.now += LEASE_MS;
    const failing = faultyObjects(env.KEYS, { authorize: { kind: "throw" } });
    expect(await outcome(hot.key, isolate, { KEYS: failing })).toBe(503);
    // Only what was spent counts: the unspent admissions came back (with the call's cancellation).
    expect(await countedByObject(hot.id)).toBe(admitted);
    // And once only: the next call does not return them again.
    expect(await outcome(hot.key, isolate)).toMatch(/leased|counted/);
    clock.now += LEASE_MS;
    expect(await outcome(hot.key, isolate, {}, 0)).toMatch(/leased|counted/);
    // What the isolate holds now is counted as spent until it comes back.
    expect(await countedByObject(hot.id)).toBe(admitted + 1 + isolate.available(name));
  });

  it("take back a lease's unspent admissions once, and the lease granted to the call, when the answer comes too late", async () => {
    const { hot, isolate, clock, name, admitted } = await partlySpentLease();
    clock.now += LEASE_MS;
    const failing = faultyObjects(env.KEYS, { authorize: { kind: "late-answer", ms: 300 } });
    expect(await outcome(hot.key, isolate, { KEYS: failing, RATE_LIMIT_TIMEOUT_MS: "100" })).toBe(503);
    await failing.settled();
    // The object took the unspent admissions back when the call reached it; the call's own admission and the lease
    // granted beside it went back with the cancellation, since the isolate never got them.
    expect(await countedByObject(hot.id)).toBe(admitted);
    expect(await outcome(hot.key, isolate)).toMatch(/leased|counted/);
    clock.now += LEASE_MS;
    expect(await outcome(hot.key, isolate, {}, 0)).toMatch(/leased|counted/);
    // What the isolate holds now is counted as spent until it comes back.
    expect(await countedByObject(hot.id)).toBe(admitted + 1 + isolate.available(name));
  });

  it("lose at most what an ended lease left, and never count it twice, when neither the call nor its cancellation arrives", async () => {
    const { hot, isolate, clock, name, admitted } = await partlySpentLease();
    const unspent = isolate.available(name);
    clock.now += LEASE_MS;
    const failing = faultyObjects(env.KEYS, { authorize: { kind: "throw" }, cancel: { kind: "throw" } });
    expect(await outcome(hot.key, isolate, { KEYS: failing })).toBe(503);
    const counted = await countedByObject(hot.id);
    expect(counted).toBeGreaterThanOrEqual(admitted);
    expect(counted).toBeLessThanOrEqual(admitted + unspent);
    // Once the object answers again, the next call returns nothing twice: what was lost stays lost, nothing more.
    expect(await outcome(hot.key, isolate)).toMatch(/leased|counted/);
    clock.now += LEASE_MS;
    expect(await outcome(hot.key, isolate, {}, 0)).toMatch(/leased|counted/);
    expect(await countedByObject(hot.id)).toBe(counted + 1 + isolate.available(name));
  });
});

describe("a client at an even pace, through the key's real object and three isolates' leases", () => {
  /**
   * Sends `rate` requests a second at an even pace for `seconds`, one after another, dealt in turn to three isolates,
   * on a clock shared by the isolates and the key's object that moves by the pace between requests. Counts admissions.
   */
  async function drive(policy: { limit: number; windowSeconds: number }, rate: number, seconds: number) {
    const { key } = await provision();
    const driven = await createKey(key.key, { rateLimit: policy });
    const clock = { now: Date.now() };
    await runInDurableObject(env.KEYS.getByName(`key:${driven.id}`), (object) => {
      object.clock = () => clock.now;
    });
    const isolates = [0, 1, 2].map(() => new Holdings(() => clock.now));
    const outcomes: unknown[] = [];
    for (let i = 0; i < rate * seconds; i++) {
      outcomes.push(await outcome(driven.key, isolates[i % 3] as Holdings));
      clock.now += 1000 / rate;
    }
    const counts = tally(outcomes);
    return { admitted: (counts.leased ?? 0) + (counts.counted ?? 0), leased: counts.leased ?? 0, counts };
  }

  it("refuses nothing at 0.9x of the limit over three windows, leases spent included", async () => {
    const { admitted, leased, counts } = await drive({ limit: 500, windowSeconds: 2 }, 225, 6);
    expect(admitted).toBe(1350);
    expect(Object.keys(counts).sort()).toEqual(["counted", "leased"]);
    // The key was hot enough to lease: the guarantee covers what leases admit.
    expect(leased).toBeGreaterThan(0);
  }, 120_000);

  it("admits the limit at 10x, no more and at most 5% less, over three windows", async () => {
    const { admitted } = await drive({ limit: 100, windowSeconds: 1 }, 1000, 3);
    expect(admitted).toBeLessThanOrEqual(300);
    expect(admitted).toBeGreaterThanOrEqual(285);
  }, 120_000);
});
