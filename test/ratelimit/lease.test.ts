import { describe, expect, it } from "vitest";
import { admitWithLease, LEASE_MIN_RATE, LEASE_MS, leaseMs, leaseSize, MAX_LEASE } from "../../src/core/lease";
import { type Limit, named, type Policy } from "../../src/core/window";
import { Holdings } from "../../src/counters/held";
import { ideal, KEY, PRINCIPAL, type Scenario, simulate, withinEveryLimit } from "./simulation";

/** Makes KEY hot in `isolate`: a one-admission lease asked for at 0, so its calls may be waited on. */
function holdOne(isolate: Holdings): void {
  isolate.hold(KEY, 0, PRINCIPAL, { id: 20, units: 1, ms: 20 }, [
    { ...named({ limit: 1000, windowSeconds: 1 }), remaining: 100, resetAt: 1000 },
  ]);
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

  it("leases at least what the caller's waiting requests wanted, within the same bounds", () => {
    const spend = [{ limit: named({ limit: 1000, windowSeconds: 1 }), cost: 1 }];
    // A log of 20 admissions in the last second is hot: by its rate alone it leases nothing in a 20 ms lease.
    const hot = () => new Map([["default", Array.from({ length: LEASE_MIN_RATE }, (_, i) => 1000 + i)]]);
    expect(admitWithLease(hot(), 1500, spend, true, 0).lease).toBeNull();
    expect(admitWithLease(hot(), 1500, spend, true, 30).lease).toEqual({ id: 1520, units: 30, ms: 20 });
    // Never more than MAX_LEASE, nor a quarter of what is left; nothing for a caller that cannot hold a lease.
    expect(admitWithLease(hot(), 1500, spend, true, 5000).lease?.units).toBe(MAX_LEASE);
    expect(admitWithLease(hot(), 1500, [{ limit: named({ limit: 41, windowSeconds: 1 }), cost: 1 }], true, 30).lease?.units).toBe(5);
    expect(admitWithLease(hot(), 1500, spend, false, 30).lease).toBeNull();
    // A cold log gets single admissions, however many of the caller's requests waited.
    expect(admitWithLease(new Map([["default", [1000]]]), 1500, spend, true, 30).lease).toBeNull();
  });

  it("counts what the requests waiting on an isolate's call need, for its next call to ask once", async () => {
    const isolate = new Holdings(() => 0);
    holdOne(isolate);
    let answer = (_: boolean) => {};
    isolate.track(KEY, new Promise<boolean>((resolve) => (answer = resolve)), (brought) => brought, 1000);
    const waiting = [isolate.inFlight(KEY, 1), isolate.inFlight(KEY, 5)];
    expect(isolate.hasRoom(KEY)).toBe(true);
    answer(true);
    expect(await Promise.all(waiting)).toEqual([true, true]);
    expect(isolate.wanted(KEY)).toBe(6);
    expect(isolate.wanted(KEY)).toBe(0);
  });

  it("lets no more wait on one call than a lease holds: the next request starts the next call, asking a full lease", () => {
    let now = 0;
    const isolate = new Holdings(() => now);
    holdOne(isolate);
    isolate.track(KEY, new Promise<boolean>(() => {}), (brought) => brought, 1000);
    for (let i = 0; i < MAX_LEASE; i++) expect(isolate.inFlight(KEY, 1)).toBeDefined();
    expect(isolate.hasRoom(KEY)).toBe(false);
    expect(isolate.inFlight(KEY, 1)).toBeUndefined();
    expect(isolate.wanted(KEY)).toBe(MAX_LEASE);
    // A request costing more than a lease holds never waits on one.
    isolate.track(KEY, new Promise<boolean>(() => {}), (brought) => brought, 1000);
    expect(isolate.inFlight(KEY, MAX_LEASE + 1)).toBeUndefined();
    // Past their deadlines the calls are forgotten.
    now = 1000;
    expect(isolate.hasRoom(KEY)).toBe(false);
    expect(isolate.inFlight(KEY, 1)).toBeUndefined();
  });

  it("forgets what waiting requests needed once a lease's time has passed", async () => {
    let now = 0;
    const isolate = new Holdings(() => now);
    holdOne(isolate);
    let answer = (_: boolean) => {};
    isolate.track(KEY, new Promise<boolean>((resolve) => (answer = resolve)), (brought) => brought, 60_000);
    const waiting = isolate.inFlight(KEY, 3);
    answer(true);
    await waiting;
    now = LEASE_MS + 1;
    expect(isolate.wanted(KEY)).toBe(0);
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

  // Two limits on one key, a short and a long one: every lease is counted in both logs, so neither ever holds more.
  const twoLimits: Limit[][] = [
    [
      { name: "second", limit: 3, windowSeconds: 1 },
      { name: "minute", limit: 5, windowSeconds: 60 },
    ],
    [
      { name: "ten", limit: 100, windowSeconds: 10 },
      { name: "minute", limit: 300, windowSeconds: 60 },
    ],
    [
      { name: "second", limit: 100, windowSeconds: 1 },
      { name: "minute", limit: 3000, windowSeconds: 60 },
    ],
  ];
  for (let seed = 13; seed <= 24; seed++) {
    const limits = twoLimits[seed % 3] as Limit[];
    scenarios.push({
      policy: limits[0] as Limit,
      limits,
      isolates: 1 + (seed % 4),
      seconds: 130,
      rate: [30, 100, 1000, 300][seed % 4] as number,
      seed,
      rttMs: [0, 5, 50, 200][seed % 4] as number,
      deathAt: seed % 2 === 0 ? 7_000 : undefined,
    });
  }

  it.each(scenarios)("never lets a window hold more than the limit (seed $seed, $isolates isolates, $rate/s)", async (s) => {
    const { spends } = await simulate(s);
    expect(spends.length).toBeGreaterThan(0);
    expect(withinEveryLimit(spends, s)).toBe(true);
  });

  it.each(scenarios.map((s) => ({ ...s, revokeAt: 12_345 })))("admits nothing a second after a revocation (seed $seed)", async (s) => {
    const { spends } = await simulate(s);
    expect(spends.filter((t) => t >= s.revokeAt).every((t) => t < s.revokeAt + LEASE_MS)).toBe(true);
    expect(spends.some((t) => t < s.revokeAt)).toBe(true);
  });

  it("makes object calls rare for a hot key, whose requests are all admitted while it stays under its limit", async () => {
    const s: Scenario = { policy: { limit: 100_000, windowSeconds: 60 }, isolates: 3, seconds: 20, rate: 2000, seed: 7, rttMs: 50 };
    const { spends, calls, arrivals } = await simulate(s);
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

  // Two limits, driven at 0.9x and 10x of the rate the tighter one allows over the long run, against one exact
  // limiter of both.
  for (const limits of twoLimits.slice(1))
    for (const load of [0.9, 10])
      for (const isolates of [1, 3]) {
        const rate = load * Math.min(...limits.map((l) => l.limit / l.windowSeconds));
        const seconds = Math.max(3 * Math.max(...limits.map((l) => l.windowSeconds)), Math.ceil(2000 / rate));
        loads.push({ policy: limits[0] as Limit, limits, load, isolates, even: false, rate, seconds, seed: loads.length + 1, rttMs: 20 });
      }

  // Calls as long as half a 1 s window's 20 ms lease, and calls longer than the lease (which then brings nothing the
  // requests waiting for it could spend: each asks for itself, as without leases).
  for (const rttMs of [40, 100])
    for (const isolates of [1, 3])
      loads.push({
        policy: { limit: 1000, windowSeconds: 1 },
        load: 0.9,
        isolates,
        even: false,
        rate: 900,
        seconds: 3,
        seed: rttMs + isolates,
        rttMs,
      });

  const SIMULATION_TIMEOUT_MS = 90_000;
  it.each(loads)(
    "refuses no more than an exact limiter would, less 1% at 0.9x and 5% above ($policy.limit per $policy.windowSeconds s, $load x, $isolates isolates, even $even, calls up to $rttMs ms)",
    async (s) => {
      const { spends, longestWait } = await simulate(s);
      expect(withinEveryLimit(spends, s)).toBe(true);
      expect(spends.length).toBeGreaterThanOrEqual(Math.floor(ideal(s) * (s.load < 1 ? 0.99 : 0.95)));
      // Under its limit, a request waits for a call or two of its isolate, never behind a queue of them.
      if (s.load < 1) expect(longestWait).toBeLessThanOrEqual(2 * s.rttMs);
    },
    // Minutes of simulated traffic on an injected clock: the time it takes is the machine's, bounded only against a hang.
    SIMULATION_TIMEOUT_MS,
  );

  it("keeps a hot key's requests from queueing in its isolate under its limit, however many arrive while a call is on its way", async () => {
    // 0.9x of 100,000 a minute from one isolate, calls taking up to 100 ms: some 75 requests arrive per call.
    const s: Scenario = { policy: { limit: 100_000, windowSeconds: 60 }, isolates: 1, seconds: 5, rate: 1500, seed: 5, rttMs: 100 };
    const { spends, longestWait } = await simulate(s);
    expect(spends.length).toBe(ideal(s));
    expect(longestWait).toBeLessThanOrEqual(2 * s.rttMs);
  });

  it("strands no more than a dead isolate's lease, and only until that lease has left the window", async () => {
    const s: Scenario = { policy: { limit: 100, windowSeconds: 10 }, isolates: 2, seconds: 40, rate: 200, seed: 11, rttMs: 10 };
    const alive = (await simulate(s)).spends;
    const withDeath = (await simulate({ ...s, deathAt: 5_000 })).spends;
    // From one lease's end plus one window after the death on, the survivors admit what a full budget allows.
    const lateAdmissions = (spends: number[]) => spends.filter((t) => t >= 5_000 + LEASE_MS + 10_000).length;
    expect(lateAdmissions(withDeath)).toBeGreaterThanOrEqual(lateAdmissions(alive) * 0.9);
  });
});
