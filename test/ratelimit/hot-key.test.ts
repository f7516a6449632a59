import { describe, expect, it } from "vitest";
import { LEASE_MS, leaseMs } from "../../src/core/lease";
import { busiestWindow, ideal, type Scenario, simulate, withinEveryLimit } from "./simulation";

/**
 * What one Durable Object serves: "An individual Object has a soft limit of 1,000 requests per second"
 * (https://developers.cloudflare.com/durable-objects/platform/limits/).
 */
const OBJECT_REQUESTS_PER_SECOND = 1_000;

/** One key from 1,000 isolates at 50,000 requests a second (50 a second each), calls taking up to 50 ms. */
const ISOLATES = 1_000;
const RATE = 50_000;

/**
 * Under its limit: 0.9x of a limit whose window is the shortest with leases of a whole LEASE_MS (a 50th of the window),
 * for a window and a bit, so the window is full (0.9x of the limit) and every lease granted in it still counts.
 */
const WINDOW_SECONDS = 50;
const under: Scenario = {
  policy: { limit: Math.ceil((RATE * WINDOW_SECONDS) / 0.9), windowSeconds: WINDOW_SECONDS },
  isolates: ISOLATES,
  seconds: WINDOW_SECONDS + 5,
  rate: RATE,
  seed: 50,
  rttMs: 50,
};

/** Over its limit: 60 times the rate a minute's 50,000 allows, spent within the first second; two more refused. */
const over: Scenario = { policy: { limit: 50_000, windowSeconds: 60 }, isolates: ISOLATES, seconds: 3, rate: RATE, seed: 51, rttMs: 50 };

/** Each scenario simulated once, whatever its tests ask of it. */
const runs = new Map<Scenario, ReturnType<typeof simulate>>();
const run = (s: Scenario) => {
  let r = runs.get(s);
  if (!r) {
    r = simulate(s);
    runs.set(s, r);
  }
  return r;
};

/** The calls the object decided in each simulated second. */
function callsPerSecond(decidedAt: number[]): number[] {
  const seconds: number[] = [];
  for (const t of decidedAt) {
    const s = Math.floor(t / 1000);
    seconds[s] = (seconds[s] ?? 0) + 1;
  }
  return Array.from(seconds, (n) => n ?? 0);
}

// Millions of requests on an injected clock: the time it takes is the machine's, bounded only against a hang.
const SIMULATION_TIMEOUT_MS = 300_000;

describe("a hot key from 1,000 isolates at 50,000 requests a second (pure, injected clock)", () => {
  it("leases for a whole second under a 50-second window", () => {
    expect(leaseMs(under.policy)).toBe(LEASE_MS);
  });

  it(
    "refuses nothing at 0.9x of its limit, and no window holds more than the limit",
    async () => {
      const { spends, refused, arrivals } = await run(under);
      expect(refused).toBe(0);
      expect(spends.length).toBe(arrivals);
      expect(withinEveryLimit(spends, under)).toBe(true);
      // The window did fill: the limit was a bound the leases had to respect, not one far away.
      expect(busiestWindow(spends, under.policy)).toBeGreaterThan(0.85 * under.policy.limit);
    },
    SIMULATION_TIMEOUT_MS,
  );

  it(
    "over its limit, admits what one exact limiter admits and no window holds more than the limit",
    async () => {
      const { spends } = await run(over);
      expect(withinEveryLimit(spends, over)).toBe(true);
      expect(spends.length).toBeGreaterThanOrEqual(Math.floor(ideal(over) * 0.95));
    },
    SIMULATION_TIMEOUT_MS,
  );

  // Not kept yet. A lease lasts at most LEASE_MS, so each of 1,000 isolates holding one calls at least once a second:
  // 1,000 calls a second is the floor, and renewals at half a lease take it past (about 1,250 a second once hot, some
  // 2,400 in the first second, in this simulation). A key beyond one object needs leases that reach isolates without
  // each of them calling the key's object (README, "Load model").
  it.fails(
    "calls its object no more than one object serves in any second, under its limit",
    async () => {
      const { decidedAt } = await run(under);
      expect(Math.max(...callsPerSecond(decidedAt))).toBeLessThanOrEqual(OBJECT_REQUESTS_PER_SECOND);
    },
    SIMULATION_TIMEOUT_MS,
  );

  // Not kept yet either: a key refused gets no lease, so every refused request calls its object (some 50,000 a second
  // here, one call per request).
  it.fails(
    "calls its object no more than one object serves in any second, over its limit",
    async () => {
      const { decidedAt } = await run(over);
      expect(Math.max(...callsPerSecond(decidedAt))).toBeLessThanOrEqual(OBJECT_REQUESTS_PER_SECOND);
    },
    SIMULATION_TIMEOUT_MS,
  );
});
