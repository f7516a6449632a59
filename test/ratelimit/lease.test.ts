import { describe, expect, it } from "vitest";
import { admitWithLease, LEASE_MIN_RATE, LEASE_MS, leaseMs, leaseSize } from "../../src/core/lease";
import type { Principal } from "../../src/core/principal";
import { decide, type Policy } from "../../src/core/window";
import { Holdings } from "../../src/counters/held";

/** A seeded generator, so every run tests the same arrival patterns. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Scenario = {
  policy: Policy;
  isolates: number;
  seconds: number;
  /** Requests per second across all isolates. */
  rate: number;
  seed: number;
  /** Largest delay between an isolate asking and the object deciding. */
  rttMs: number;
  /** The object refuses the key from this instant on. */
  revokeAt?: number;
  /** Isolate 0 dies at this instant, holding whatever it holds. */
  deathAt?: number;
  /** Requests at an even pace (a client driving its key at a fixed rate) instead of random arrivals. */
  even?: boolean;
};

const KEY = "key_sim";
const PRINCIPAL: Principal = {
  accountId: "acc_sim",
  keyId: KEY,
  userId: "usr_sim",
  role: "admin",
  scopes: ["*"],
  accountSlug: null,
  keyPrefix: "sk",
  rateLimit: { limit: 1, windowSeconds: 1 },
};

type Event =
  | { t: number; kind: "arrive"; isolate: number }
  | { t: number; kind: "decide"; isolate: number; askedAt: number; unspent: { id: number; left: number }[] };

/**
 * Isolates sharing one key's object, driven by an injected clock: each request is served from the isolate's lease (the
 * isolates' own Holdings) or goes to the object, which decides (with the function the Durable Object uses) after a
 * random delay. Returns the
 * instants of every real admission, wherever it was spent, and how many object calls were made.
 */
function simulate(s: Scenario) {
  const next = random(s.seed);
  const log: number[] = [];
  let clock = 0;
  const isolates = Array.from({ length: s.isolates }, () => new Holdings(() => clock));
  const spends: number[] = [];
  let calls = 0;
  const arrivals: Event[] = arrivalTimes(s, next).map((t) => ({ t, kind: "arrive", isolate: Math.floor(next() * s.isolates) }));
  // Calls in flight, ordered by when the object decides them (few at a time: kept sorted by insertion).
  const pending: Event[] = [];
  const dead = (isolate: number, t: number) => isolate === 0 && s.deathAt !== undefined && t >= s.deathAt;
  let a = 0;
  while (a < arrivals.length || pending.length > 0) {
    const e = (
      pending.length > 0 && (a >= arrivals.length || (pending[0] as Event).t <= (arrivals[a] as Event).t) ? pending.shift() : arrivals[a++]
    ) as Event;
    if (dead(e.isolate, e.t)) continue;
    clock = e.t;
    const isolate = isolates[e.isolate] as Holdings;
    // What the isolate spends from its lease (authorizeKey's fromLease), or null.
    const fromLease = () => isolate.get(KEY)?.leases.take(e.t, 1) ?? null;
    if (e.kind === "arrive") {
      if (fromLease() !== null) {
        spends.push(e.t);
        continue;
      }
      calls += 1;
      const decision: Event = {
        t: e.t + next() * s.rttMs,
        kind: "decide",
        isolate: e.isolate,
        askedAt: e.t,
        unspent: isolate.unspent(KEY),
      };
      const i = pending.findIndex((other) => other.t > decision.t);
      pending.splice(i < 0 ? pending.length : i, 0, decision);
      continue;
    }
    for (const { id, left } of e.unspent) {
      for (let n = 0; n < left; n++) log.splice(log.lastIndexOf(id), 1);
    }
    if (s.revokeAt !== undefined && e.t >= s.revokeAt) continue;
    // The object forgets what left every window, as the Durable Object does.
    const expired = log.findIndex((t) => t > e.t - s.policy.windowSeconds * 1000);
    log.splice(0, expired < 0 ? log.length : expired);
    const d = admitWithLease(log, e.t, s.policy, 1, true);
    if (d.lease) isolate.hold(KEY, e.askedAt, PRINCIPAL, d.lease, d.remaining, d.resetAt);
    if (d.allowed) spends.push(e.t);
    else if (fromLease() !== null) spends.push(e.t);
  }
  return { spends: spends.sort((a, b) => a - b), calls, arrivals: arrivals.length };
}

/** The most admissions any window of the policy holds (each window ending at an admission is the worst case). */
function busiestWindow(spends: number[], policy: Policy): number {
  let most = 0;
  let first = 0;
  for (let last = 0; last < spends.length; last++) {
    while ((spends[first] as number) <= (spends[last] as number) - policy.windowSeconds * 1000) first++;
    most = Math.max(most, last - first + 1);
  }
  return most;
}

/** The instants requests arrive at: random (Poisson) or evenly paced. */
function arrivalTimes(s: Scenario, next: () => number): number[] {
  const times: number[] = [];
  for (let t = 0; t < s.seconds * 1000; t += s.even ? 1000 / s.rate : -Math.log(1 - next()) * (1000 / s.rate)) times.push(t);
  return times;
}

/** What one exact limiter admits of the same arrivals: the ideal a leased key is measured against. */
function ideal(s: Scenario): number {
  const log: number[] = [];
  for (const t of arrivalTimes(s, random(s.seed))) if (decide(log, t, s.policy).allowed) log.push(t);
  return log.length;
}

describe("leases (pure, injected clock)", () => {
  it("sizes leases from the key's rate, what is left and the lease's length: none for a slow or nearly spent key", () => {
    expect(leaseSize(LEASE_MIN_RATE - 1, 1000, 1000)).toBe(0);
    expect(leaseSize(100, 1000, 1000)).toBe(50);
    expect(leaseSize(10_000, 1_000_000, 1000)).toBe(64);
    expect(leaseSize(1000, 7, 1000)).toBe(1);
    expect(leaseSize(1000, 3, 1000)).toBe(0);
    // A short lease: half of it at 100/s is a single admission; at 50/s not even one.
    expect(leaseSize(100, 1000, 20)).toBe(1);
    expect(leaseSize(50, 1000, 20)).toBe(0);
  });

  it("lasts a second, or a 50th of a shorter window", () => {
    expect(leaseMs({ limit: 10, windowSeconds: 60 })).toBe(LEASE_MS);
    expect(leaseMs({ limit: 10, windowSeconds: 50 })).toBe(1000);
    expect(leaseMs({ limit: 10, windowSeconds: 2 })).toBe(40);
    expect(leaseMs({ limit: 10, windowSeconds: 1 })).toBe(20);
  });

  const scenarios: Scenario[] = [];
  for (let seed = 1; seed <= 12; seed++) {
    scenarios.push({
      policy: [
        { limit: 100, windowSeconds: 10 },
        { limit: 60, windowSeconds: 60 },
        { limit: 1000, windowSeconds: 1 },
      ][seed % 3] as Policy,
      isolates: 1 + (seed % 4),
      seconds: 20,
      rate: [30, 100, 1000, 3000][seed % 4] as number,
      seed,
      rttMs: [0, 5, 50, 200][seed % 4] as number,
      deathAt: seed % 2 === 0 ? 7_000 : undefined,
    });
  }

  it.each(scenarios)("never lets a window hold more than the limit (seed $seed, $isolates isolates, $rate/s)", (s) => {
    const { spends } = simulate(s);
    expect(spends.length).toBeGreaterThan(0);
    expect(busiestWindow(spends, s.policy)).toBeLessThanOrEqual(s.policy.limit);
  });

  it.each(scenarios.map((s) => ({ ...s, revokeAt: 12_345 })))("admits nothing a second after a revocation (seed $seed)", (s) => {
    const { spends } = simulate(s);
    expect(spends.filter((t) => t >= s.revokeAt).every((t) => t < s.revokeAt + LEASE_MS)).toBe(true);
    expect(spends.some((t) => t < s.revokeAt)).toBe(true);
  });

  it("makes object calls rare for a hot key, whose requests are all admitted while it stays under its limit", () => {
    const s: Scenario = { policy: { limit: 100_000, windowSeconds: 60 }, isolates: 3, seconds: 20, rate: 2000, seed: 7, rttMs: 50 };
    const { spends, calls, arrivals } = simulate(s);
    expect(calls / arrivals).toBeLessThan(0.1);
    expect(spends.length).toBe(ideal(s));
  });

  // A client driving its key at 0.9x, 1x and 10x of its limit for three windows and more, in one isolate and in three:
  // leases may cost at most 1% of what one exact limiter admits at 0.9x, and 5% at and above the limit.
  const loads: (Scenario & { load: number })[] = [];
  for (const policy of [
    { limit: 5, windowSeconds: 1 },
    { limit: 100, windowSeconds: 1 },
    { limit: 1000, windowSeconds: 1 },
    { limit: 50, windowSeconds: 2 },
    { limit: 2000, windowSeconds: 2 },
    { limit: 100, windowSeconds: 10 },
    { limit: 3000, windowSeconds: 60 },
    { limit: 6000, windowSeconds: 60 },
  ])
    for (const load of [0.9, 1, 10])
      for (const isolates of [1, 3])
        for (const even of [true, false]) {
          const rate = (load * policy.limit) / policy.windowSeconds;
          // Three windows, and enough requests for a share to mean something.
          const seconds = Math.max(3 * policy.windowSeconds, Math.ceil(2000 / rate));
          // Delays reorder arrivals; at exactly the limit that alone refuses some of an even client's requests, whatever
          // the limiter (the object must see a window over the limit to admit them), so that load runs without delays.
          loads.push({ policy, load, isolates, even, rate, seconds, seed: loads.length + 1, rttMs: load === 1 ? 0 : 20 });
        }

  it.each(loads)(
    "refuses no more than an exact limiter would, less 1% at 0.9x and 5% above ($policy.limit per $policy.windowSeconds s, $load x, $isolates isolates, even $even)",
    (s) => {
      const { spends } = simulate(s);
      expect(busiestWindow(spends, s.policy)).toBeLessThanOrEqual(s.policy.limit);
      expect(spends.length).toBeGreaterThanOrEqual(Math.floor(ideal(s) * (s.load < 1 ? 0.99 : 0.95)));
    },
  );

  it("strands no more than a dead isolate's lease, and only until that lease has left the window", () => {
    const s: Scenario = { policy: { limit: 100, windowSeconds: 10 }, isolates: 2, seconds: 40, rate: 200, seed: 11, rttMs: 10 };
    const alive = simulate(s).spends;
    const withDeath = simulate({ ...s, deathAt: 5_000 }).spends;
    // From one lease's end plus one window after the death on, the survivors admit what a full budget allows.
    const lateAdmissions = (spends: number[]) => spends.filter((t) => t >= 5_000 + LEASE_MS + 10_000).length;
    expect(lateAdmissions(withDeath)).toBeGreaterThanOrEqual(lateAdmissions(alive) * 0.9);
  });
});
