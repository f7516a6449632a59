import { describe, expect, it } from "vitest";
import { FanIn, LEASE_MS, leaseMs, MAX_RELAYS, RELAY_AT, RELAY_LOAD, RELAY_MS, RELAYS } from "../../src/core/lease";
import { Holdings } from "../../src/counters/held";
import type { Counted } from "../../src/counters/protocol";
import { Relay, type Routed } from "../../src/counters/relay";
import type { Deps } from "../../src/platform/deps";
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

describe("a key's fan-in (pure)", () => {
  it("spreads a key called RELAY_AT times within a second, for RELAY_MS after its last such second, and only one with whole-second leases", () => {
    const fanIn = new FanIn();
    for (let i = 0; i < RELAY_AT - 1; i++) fanIn.note(i, 1);
    expect(fanIn.relays(RELAY_AT, LEASE_MS)).toBeNull();
    // Calls older than a second no longer count.
    fanIn.note(1000, 1);
    expect(fanIn.relays(1000, LEASE_MS)).toBeNull();
    fanIn.note(1001, RELAY_AT);
    expect(fanIn.relays(1001, LEASE_MS)).toEqual({ count: RELAYS, ms: RELAY_MS });
    expect(fanIn.relays(1001, LEASE_MS / 2)).toBeNull();
    expect(fanIn.relays(1001 + RELAY_MS, LEASE_MS)).toBeNull();
  });

  it("doubles its relays while each would take more than RELAY_LOAD calls a second, up to MAX_RELAYS, and never shrinks them while spread", () => {
    const fanIn = new FanIn();
    fanIn.note(0, RELAYS * RELAY_LOAD + 1);
    expect(fanIn.relays(0, LEASE_MS)?.count).toBe(RELAYS * 2);
    fanIn.note(2000, RELAY_AT);
    expect(fanIn.relays(2000, LEASE_MS)?.count).toBe(RELAYS * 2);
    fanIn.note(4000, 1e9);
    expect(fanIn.relays(4000, LEASE_MS)?.count).toBe(MAX_RELAYS);
    // Once the spread has ended, a new one starts from RELAYS.
    fanIn.note(4000 + RELAY_MS + 1000, RELAY_AT);
    expect(fanIn.relays(4000 + RELAY_MS + 1000, LEASE_MS)?.count).toBe(RELAYS);
  });
});

describe("a kept refusal (pure, injected clock)", () => {
  const name = "key:k";
  /** A limit's refusal of a request of `cost`, decided at `at`, that admits again in `retryAfter` seconds (rounded up). */
  const refused = (at: number, cost: number, retryAfter: number): Counted => ({
    allowed: false,
    retryAfter,
    limits: [{ name: "default", limit: 100, windowSeconds: 60, remaining: 10, resetAt: at + retryAfter * 1000 }],
    refusedBy: ["default"],
    at,
    cost,
    costs: { default: cost },
  });
  /** Holdings on `clock`, holding `name` hot (spread over relays), with the refusal of a request of 25 kept at 0. */
  const keeping = (clock: { now: number }) => {
    const h = new Holdings(() => clock.now);
    h.route(name, { count: RELAYS, ms: RELAY_MS }, 0);
    h.refuse(name, 0, "record", refused(0, 25, 2));
    return h;
  };

  it("refuses only requests costing as much as the one refused: a cheaper one may fit in what is left, and is asked", () => {
    const clock = { now: 0 };
    const h = keeping(clock);
    expect(h.refusal(name, 25)).toMatchObject({ allowed: false, retryAfter: 2 });
    expect(h.refusal(name, 30)).toMatchObject({ allowed: false });
    expect(h.refusal(name, 1)).toBeNull();
    expect(h.refusal(name, 24)).toBeNull();
  });

  it("is kept by an isolate a relay answered from it no longer than by the relay, however its Retry-After was rounded", () => {
    const clock = { now: 0 };
    const relay = keeping(clock);
    // The limit admits again between 1,000 and 2,000 ms after the refusal: the relay keeps it 1,000 ms.
    clock.now = 985;
    const answered = relay.refusal(name, 25);
    // The client's Retry-After still covers the whole wait (rounded up), and the answer says how long it is kept.
    expect(answered).toMatchObject({ retryAfter: 2, keptMs: 15 });
    const isolate = new Holdings(() => clock.now);
    isolate.route(name, { count: RELAYS, ms: RELAY_MS }, 980);
    isolate.refuse(name, 980, "record", answered as Counted);
    expect(isolate.refusal(name, 25)).not.toBeNull();
    clock.now = 1001;
    expect(relay.refusal(name, 25)).toBeNull();
    expect(isolate.refusal(name, 25)).toBeNull();
  });
});

describe("a relay (pure)", () => {
  const name = "key:k";
  /** A relay whose calls to the key's object wait in `pending` until the test answers them with `grant`. */
  function relayed() {
    const relay = new Relay(new Holdings(), "relay-0");
    const pending: ((a: Routed<string, { ok: false }>) => void)[] = [];
    const ask = () => new Promise<Routed<string, { ok: false }>>((resolve) => pending.push(resolve));
    const stub = { cancel: async () => {}, refund: async () => {} };
    const deps = {
      config: { rateLimitTimeoutMs: 10_000, rateLimitFailureMode: "closed" },
      requestId: "req_1",
      waitUntil: () => {},
      log: () => {},
    } as unknown as Deps;
    /** An isolate's call `id` with `ms` to its deadline. */
    const call = (id: string, ms = 10_000) => ({
      name,
      stub,
      spending: { tag: { id, deadline: Date.now() + ms }, cost: 1, lease: true },
      ask,
      renew: ask,
    });
    /** The key's object's answer to each pending call: its admission and a block of 100. */
    const grant = () => {
      const now = Date.now();
      for (const resolve of pending.splice(0))
        resolve({
          ok: true,
          record: "key",
          granted: {
            allowed: true,
            retryAfter: 0,
            limits: [{ name: "default", limit: 100_000, windowSeconds: 60, remaining: 90_000, resetAt: now + 60_000 }],
            refusedBy: [],
            at: now,
            cost: 1,
            costs: { default: 1 },
            lease: { id: now + LEASE_MS, units: 100, ms: LEASE_MS },
            credits: null,
          },
          relays: { count: RELAYS, ms: RELAY_MS },
        });
    };
    /** Lets every call in flight reach the key's object. */
    const reached = () => new Promise((r) => setTimeout(r, 50));
    return { relay, pending, deps, call, grant, reached };
  }
  const carved = (a: Routed<string, { ok: false }> | undefined) => (a?.ok ? (a.granted.lease?.units ?? 0) : 0);

  it("answers a retry that arrives while its first attempt is under way with that attempt's answer: one call, one block", async () => {
    const { relay, pending, deps, call, grant, reached } = relayed();
    const c = call("req_1");
    const attempts = [relay.serve(deps, c), relay.serve(deps, c)];
    await reached();
    expect(pending).toHaveLength(1);
    grant();
    const [first, retry] = await Promise.all(attempts);
    expect(retry).toEqual(first);
    // The block's 100 admissions: what the relay holds, and the lease carved for the isolate once.
    expect(carved(first)).toBeGreaterThan(0);
    expect(relay.held.available(name) + carved(first)).toBe(100);
  });

  it("spends nothing for a call that reaches it after its deadline, though its block could admit it", async () => {
    const { relay, deps, call, grant, reached } = relayed();
    const first = relay.serve(deps, call("req_1"));
    await reached();
    grant();
    await first;
    const held = relay.held.available(name);
    expect(held).toBeGreaterThan(1);
    await expect(relay.serve(deps, call("req_2", -1))).rejects.toThrow();
    expect(relay.held.available(name)).toBe(held);
    expect(relay.held.owing(name)).toBe(0);
  });

  it("gives back what it handed out for a call whose deadline passed while the key's object answered, and keeps its block", async () => {
    const { relay, deps, call, grant, reached } = relayed();
    const late = relay.serve(deps, call("req_1", 20));
    await reached();
    grant();
    await expect(late).rejects.toThrow();
    // The block is whole, and the call's admission (made by the key's object) goes back to it with the relay's next call.
    expect(relay.held.available(name)).toBe(100);
    expect(relay.held.owing(name)).toBe(1);
  });
});

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

  // A lease lasts at most LEASE_MS, so 1,000 isolates calling the key's object would call it 1,000 times a second and
  // more: past RELAY_AT calls a second the key spreads its isolates over RELAYS relays (counters/relay.ts), which take
  // blocks of its budget and carve their isolates' leases from them. The first second is each isolate's first calls,
  // made before any answer could tell it of the relays: a ramp from nothing to 50,000 a second at one instant.
  it(
    "calls its object, and each relay, no more than one object serves in any second once its isolates know the relays",
    async () => {
      const { decidedAt, relayDecidedAt } = await run(under);
      const [ramp = 0, ...hot] = callsPerSecond(decidedAt);
      expect(ramp).toBeLessThanOrEqual(2.5 * ISOLATES);
      expect(Math.max(...hot)).toBeLessThanOrEqual(OBJECT_REQUESTS_PER_SECOND / 10);
      for (const relay of relayDecidedAt) expect(Math.max(0, ...callsPerSecond(relay))).toBeLessThanOrEqual(OBJECT_REQUESTS_PER_SECOND);
      // The relays did the work: without them the object took some 1,250 calls a second once hot.
      expect(relayDecidedAt.flat().length).toBeGreaterThan(decidedAt.length * 10);
    },
    SIMULATION_TIMEOUT_MS,
  );

  // A refusal by a limit is remembered where it was answered (isolate and relay) until the limit could admit again, a
  // second at most: over its limit, a key's refused requests are not a call each (they were, before).
  it(
    "over its limit, answers most refusals where they arrive, with no call",
    async () => {
      const { decidedAt, relayDecidedAt, refused } = await run(over);
      expect(refused).toBeGreaterThan(100_000);
      expect(decidedAt.length + relayDecidedAt.flat().length).toBeLessThan(refused / 4);
      const [, ...after] = callsPerSecond(decidedAt);
      expect(Math.max(...after)).toBeLessThanOrEqual(OBJECT_REQUESTS_PER_SECOND);
    },
    SIMULATION_TIMEOUT_MS,
  );
});
