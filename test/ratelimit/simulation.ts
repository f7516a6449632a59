import { admitWithLease, FanIn, leaseMs, MAX_RELAYS } from "../../src/core/lease";
import type { Principal } from "../../src/core/principal";
import { charges, decideAll, firstInWindow, type Limit, type Logs, logOf, named, type Policy } from "../../src/core/window";
import { Holdings } from "../../src/counters/held";
import { type Leased, type LeasedCall, leasedCall } from "../../src/counters/leased-call";
import type { Spending } from "../../src/counters/protocol";
import { Relay, type Routed } from "../../src/counters/relay";
import type { Deps } from "../../src/platform/deps";

/** A seeded generator, so every run tests the same arrival patterns. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Scenario = {
  policy: Policy;
  /** Several limits on the key, in place of `policy` alone. */
  limits?: Limit[];
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

export const KEY = "key_sim";
export const PRINCIPAL: Principal = {
  accountId: "acc_sim",
  keyId: KEY,
  userId: "usr_sim",
  role: "admin",
  scopes: ["*"],
  accountSlug: null,
  keyPrefix: "sk",
  limits: [{ name: "default", limit: 1, windowSeconds: 1 }],
  credits: { key: null, account: null, user: null },
  shared: [],
};

/** The key's limits in a scenario. */
const limitsOf = (s: Scenario): Limit[] => s.limits ?? [named(s.policy)];

/**
 * A call in flight, decided at `t`: of an isolate (`isolate`) or of a relay (`isolate` -1 - its index), to the key's
 * object, or of an isolate to its relay (`relay`).
 */
type Pending = { t: number; isolate: number; relay?: number; spending: Spending; answer: (a: Routed<Principal, Refused>) => void };
type Refused = { ok: false; code: "key_revoked" };

/** The isolate's continuations after an answer are a few promise steps deep; this drains them before time moves on. */
async function settle(): Promise<void> {
  for (let i = 0; i < 40; i++) await Promise.resolve();
}

/**
 * Isolates sharing one key's object, driven by an injected clock. Each request takes the isolate's side of the
 * protocol exactly as a key does (`leasedCall` over the isolate's own Holdings: its lease, the call in flight it waits
 * for, its background renewal, the relay it is told to call); only the transport is simulated: a call reaches the
 * object (or the relay, whose side runs as the Relay object's does) after a random delay, where the object's admit
 * step (`admitWithLease`, as in the Durable Object's sliding log) decides it and its FanIn says whether the key is
 * spread. Returns the instants of every real admission, wherever it was spent, how many requests were not admitted, how
 * many object calls were made and when the object decided each (and each relay, each of its calls), and the longest a
 * request waited for its answer.
 */
export async function simulate(s: Scenario) {
  const next = random(s.seed);
  const logs: Logs = new Map();
  const limits = limitsOf(s);
  let clock = 0;
  const isolates = Array.from({ length: s.isolates }, (_, i) => new Holdings(() => clock, i));
  const relays = Array.from({ length: MAX_RELAYS }, (_, i) => new Relay(new Holdings(() => clock), `relay-${i}`));
  const relayDecidedAt: number[][] = relays.map(() => []);
  const fanIn = new FanIn();
  const spends: number[] = [];
  let refused = 0;
  let calls = 0;
  const decidedAt: number[] = [];
  const arrivals = arrivalTimes(s, next).map((t) => ({ t, isolate: Math.floor(next() * s.isolates) }));
  // Calls in flight, ordered by when the object decides them.
  const pending: Pending[] = [];
  const dead = (isolate: number, t: number) => isolate === 0 && s.deathAt !== undefined && t >= s.deathAt;
  // Open mode: a call the object never answers (its isolate died) ends unlimited in real time, after the run.
  const config = { rateLimitTimeoutMs: 60_000, rateLimitFailureMode: "open" } as Deps["config"];
  const deps = {
    config,
    waitUntil: (p: Promise<unknown>) => void p.catch(() => {}),
    log: () => {},
  } as unknown as Deps;
  // A relay fails closed: an isolate whose relay could not reach the object handles it as its own failed call.
  const relayDeps = { ...deps, config: { ...config, rateLimitFailureMode: "closed" } } as Deps;
  const stub = { cancel: async () => {}, refund: async () => {} };
  const send = (isolate: number, spending: Spending, relay?: number) =>
    new Promise<Routed<Principal, Refused>>((answer) => {
      if (relay === undefined) calls += 1;
      const decision = { t: clock + next() * s.rttMs, isolate, relay, spending, answer };
      // From the end: a new call is mostly decided after those already on their way.
      let i = pending.length;
      while (i > 0 && (pending[i - 1] as Pending).t > decision.t) i--;
      pending.splice(i, 0, decision);
    });
  const call = (isolate: number): LeasedCall<typeof stub, Principal, Refused> => {
    const held = isolates[isolate] as Holdings;
    // As keys/authorize.ts calls: the relay it is told to call, else the object; the answer says where next.
    const ask = async (_: typeof stub, spending: Spending) => {
      const relay = held.relayOf(KEY);
      const askedAt = clock;
      const answer = await send(isolate, spending, relay === null ? undefined : Number(relay.split(":")[1]));
      if (answer.ok) held.route(KEY, answer.relays, askedAt);
      return answer;
    };
    return { name: KEY, stub, cost: 1, ask, renew: ask };
  };
  const relayed = (k: number, spending: Spending) => {
    const ask = (_: typeof stub, sp: Spending) => send(-1 - k, sp);
    return (relays[k] as Relay).serve(relayDeps, { name: KEY, stub, spending, ask, renew: ask });
  };
  let longestWait = 0;
  const answered = (arrivedAt: number) => (verdict: Leased<Principal> | Refused | null) => {
    longestWait = Math.max(longestWait, clock - arrivedAt);
    if (verdict?.ok && verdict.spent.allowed) spends.push(clock);
    else refused += 1;
  };
  let a = 0;
  while (a < arrivals.length || pending.length > 0) {
    const decision = pending.length > 0 && (a >= arrivals.length || (pending[0] as Pending).t <= (arrivals[a] as { t: number }).t);
    if (!decision) {
      const e = arrivals[a++] as { t: number; isolate: number };
      if (dead(e.isolate, e.t)) continue;
      clock = e.t;
      const before = calls;
      // Each request its own id, as each of a Worker's requests has: a relay takes a call with the id of one it answered
      // as that call's retry.
      const verdict = leasedCall({ ...deps, requestId: `req_${a}` }, call(e.isolate), isolates[e.isolate]);
      if (verdict instanceof Promise) void verdict.then(answered(e.t));
      else answered(e.t)(verdict);
      // A request its isolate's lease decided, starting no call, leaves nothing to run before time moves on.
      if (verdict instanceof Promise || calls > before) await settle();
      continue;
    }
    const e = pending.shift() as Pending;
    if (dead(e.isolate, e.t)) continue;
    clock = e.t;
    if (e.relay !== undefined) {
      (relayDecidedAt[e.relay] as number[]).push(e.t);
      // A relay here never fails (its calls have no deadline to miss): one that threw would fail the test.
      void relayed(e.relay, e.spending).then(e.answer);
      await settle();
      continue;
    }
    decidedAt.push(e.t);
    // What the object does with a call, as its sliding log does: takes back what ended leases left (only what is
    // still logged, in every log: the entries at the lease's end lie together), forgets what left each window once
    // that is at least as much as what is still in it, then the admit step.
    for (const { id, left } of e.spending.returned ?? [])
      for (const log of logs.values()) {
        const end = firstInWindow(log, id);
        const count = Math.min(left, end - firstInWindow(log, id - 1));
        if (count > 0) log.splice(end - count, count);
      }
    if (s.revokeAt !== undefined && e.t >= s.revokeAt) e.answer({ ok: false, code: "key_revoked" });
    else {
      for (const l of limits) {
        const log = logOf(logs, l.name);
        const expired = firstInWindow(log, e.t - l.windowSeconds * 1000);
        if (expired > 0 && expired >= log.length - expired) log.splice(0, expired);
      }
      const { cost = 1, lease = false, wanted, relayed: answered } = e.spending;
      const spend = charges(limits, cost);
      const d = admitWithLease(logs, e.t, spend, lease, wanted, answered !== undefined);
      const costs = Object.fromEntries(spend.map((c) => [c.limit.name, c.cost]));
      fanIn.note(e.t, answered ?? 1);
      e.answer({
        ok: true,
        record: PRINCIPAL,
        granted: { ...d, at: e.t, cost, costs, credits: null },
        relays: fanIn.relays(e.t, Math.min(...limits.map(leaseMs))),
      });
    }
    await settle();
  }
  return { spends: spends.sort((a, b) => a - b), refused, calls, decidedAt, relayDecidedAt, arrivals: arrivals.length, longestWait };
}

/** The most admissions any window of the policy holds (each window ending at an admission is the worst case). */
export function busiestWindow(spends: number[], policy: Policy): number {
  let most = 0;
  let first = 0;
  for (let last = 0; last < spends.length; last++) {
    while ((spends[first] as number) <= (spends[last] as number) - policy.windowSeconds * 1000) first++;
    most = Math.max(most, last - first + 1);
  }
  return most;
}

/** The instants requests arrive at: random (Poisson) or evenly paced. */
export function arrivalTimes(s: Scenario, next: () => number): number[] {
  const times: number[] = [];
  for (let t = 0; t < s.seconds * 1000; t += s.even ? 1000 / s.rate : -Math.log(1 - next()) * (1000 / s.rate)) times.push(t);
  return times;
}

/** Whether no window of any of the scenario's limits holds more than that limit. */
export function withinEveryLimit(spends: number[], s: Scenario): boolean {
  return limitsOf(s).every((l) => busiestWindow(spends, l) <= l.limit);
}

/** What one exact limiter of all the key's limits admits of the same arrivals: the ideal a leased key is measured against. */
export function ideal(s: Scenario): number {
  const logs: Logs = new Map();
  let admitted = 0;
  for (const t of arrivalTimes(s, random(s.seed))) {
    const spend = charges(limitsOf(s), 1);
    if (!decideAll(logs, t, spend).allowed) continue;
    for (const { limit } of spend) logOf(logs, limit.name).push(t);
    admitted += 1;
  }
  return admitted;
}
