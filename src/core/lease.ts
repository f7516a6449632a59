import { type Charge, type Decisions, decideAll, firstInWindow, type Logs, logOf, type Policy } from "./window";

/**
 * Leases: a hot key's (or counter's) object hands an isolate a few admissions at once, to spend locally for at most
 * `leaseMs(policy)`. Each leased admission is logged at the lease's end, the latest instant it could be spent, and
 * counts as used from its grant: so every window that could hold its spending already counts it, and no window of the
 * policy ever holds more than `limit` real admissions, whichever isolate spends them and whenever within the lease.
 */
export const LEASE_MS = 1000;

/**
 * How much longer than its window a leased admission may stay counted. An admission spent early in its lease is
 * counted until the lease's end plus a window, so a lease of 1/WINDOWS_PER_LEASE of the window keeps what leases can
 * take from a client under its limit near 1/(2 x WINDOWS_PER_LEASE) on average (a 1 s lease in a 2 s window took
 * a quarter: npm run bench, (h)).
 */
const WINDOWS_PER_LEASE = 50;

/** How long a lease of this policy lasts: a second, or a 50th of its window when that is shorter. */
export function leaseMs(policy: Policy): number {
  return Math.min(LEASE_MS, Math.floor((policy.windowSeconds * 1000) / WINDOWS_PER_LEASE));
}

/**
 * Admissions an isolate may spend without calling: `units` of them, for `ms` from when it asked; `id` is the object's
 * end for it. `credits`: the credits leased beside them (null: the balance is unlimited, or there is none).
 */
export type Lease = { id: number; units: number; ms: number; credits?: number | null };

/** The most a lease holds, and the share of what is left it may take (what an idle or dead isolate can strand). */
export const MAX_LEASE = 64;
export const SHARE_OF_REMAINING = 4;
/** Below this many admissions a second, a key gets single admissions: exactly the behaviour without leases. */
export const LEASE_MIN_RATE = 20;
/**
 * The most a relay's lease (a block) holds: what its isolates' leases are carved from for a second at most. A relay
 * that dies strands one block until it ends, as an isolate strands its lease.
 */
export const MAX_BLOCK = 64 * MAX_LEASE;

/**
 * How many admissions to lease beside the one being spent: half a lease's worth (`ms`) at the key's recent rate,
 * never more than a quarter of what the window has left nor MAX_LEASE, and none for a slow or nearly spent key, nor
 * for one that would not spend a whole admission in half a lease.
 */
export function leaseSize(recentPerSecond: number, remaining: number, ms: number): number {
  if (recentPerSecond < LEASE_MIN_RATE) return 0;
  return Math.max(0, Math.min(Math.floor((recentPerSecond * ms) / 2000), Math.floor(remaining / SHARE_OF_REMAINING), MAX_LEASE));
}

/**
 * The lease of an object that counts no limit for the call, only a balance (an account's pool without shared limits):
 * sized from the object's recent rate as a limit's would be, or what the caller's waiting requests wanted, lasting
 * LEASE_MS; what the credits cover bounds it further (counters/budget.ts). None for a slow object.
 */
export function leaseWithoutLimits(recentPerSecond: number, now: number, wanted = 0): Lease | null {
  if (recentPerSecond < LEASE_MIN_RATE) return null;
  const units = leaseUnits(leaseSize(recentPerSecond, Number.MAX_SAFE_INTEGER, LEASE_MS), wanted, Number.MAX_SAFE_INTEGER);
  return units > 0 ? { id: now + LEASE_MS, units, ms: LEASE_MS } : null;
}

/**
 * A lease's size: what the key's rate calls for (`sized`), or what the caller's waiting requests wanted when that is
 * more, within the same bounds (MAX_LEASE, a quarter of what is left).
 */
function leaseUnits(sized: number, wanted: number, remaining: number, most = MAX_LEASE): number {
  const asked = Math.min(Math.max(0, Math.floor(wanted)), most, Math.floor(remaining / SHARE_OF_REMAINING));
  return Math.min(Math.max(sized, asked), remaining);
}

/** Admissions logged in the last second (leases count at their grant's share: their entries lie ahead of now). */
function recentRate(log: readonly number[], now: number): number {
  return log.length - firstInWindow(log, now - 1000);
}

/**
 * Decides a request at `now` on the ascending logs (changed in place) of every limit it spends (`spend`): when each
 * admits it, its entries at `now` in each log, and beside them, for a caller that can hold one (`leasing`), a lease
 * logged at its end in each log. The lease is as large as the smallest any log allows, sized from that log's recent
 * rate and what it has left (`leaseSize`) and, for a hot log, at least `wanted` (what the caller's requests needed while its last call
 * was on its way) within the same bounds; it lasts the shortest `leaseMs` of the limits, so no window of any of them
 * ever holds more than its limit. A lease's admission then spends one from every limit: a caller that spends only
 * some limits, or some at other costs, takes no lease. Each limit's `remaining` counts the lease as spent. A relay
 * (`block`) gets what it asked for (`wanted`: what its isolates took in the last second), up to MAX_BLOCK and the same
 * share of what is left, whatever the key's rate.
 */
export function admitWithLease(
  logs: Logs,
  now: number,
  spend: readonly Charge[],
  leasing: boolean,
  wanted = 0,
  block = false,
): Decisions & { lease: Lease | null } {
  const rates = spend.map(({ limit }) => recentRate(logs.get(limit.name) ?? [], now));
  const decision = decideAll(logs, now, spend);
  if (!decision.allowed) return { ...decision, lease: null };
  for (const { limit, cost } of spend) insertSorted(logOf(logs, limit.name), now, cost);
  if (!leasing || spend.length === 0) return { ...decision, lease: null };
  const ms = Math.min(...spend.map(({ limit }) => leaseMs(limit)));
  // A log below LEASE_MIN_RATE gets single admissions, however many of the caller's requests waited together.
  const units = Math.min(
    ...decision.limits.map(({ remaining }, i) =>
      (rates[i] as number) < LEASE_MIN_RATE
        ? 0
        : block
          ? leaseUnits(0, wanted, remaining, MAX_BLOCK)
          : leaseUnits(leaseSize(rates[i] as number, remaining, ms), wanted, remaining),
    ),
  );
  if (units === 0) return { ...decision, lease: null };
  for (const { limit } of spend) insertSorted(logOf(logs, limit.name), now + ms, units);
  const limits = decision.limits.map((l) => ({ ...l, remaining: l.remaining - units }));
  return { ...decision, limits, lease: { id: now + ms, units, ms } };
}

/** Inserts `count` entries at `at`, keeping the log ascending (leases end after admissions made since). */
function insertSorted(log: number[], at: number, count: number): void {
  const i = firstInWindow(log, at);
  log.splice(i, 0, ...new Array<number>(count).fill(at));
}

/**
 * An isolate's leases of one key or counter: admissions it may spend without calling the key's object, and the credits
 * granted beside them (null: the balance is unlimited). Each lease ends on the
 * isolate's clock LEASE_MS after the isolate asked for it, so never later (in real time) than the object's end for it,
 * whatever the two clocks say; `id` is the object's end, under which the object logged it.
 */
export class HeldLeases {
  private leases: { end: number; id: number; left: number; credits: number | null }[] = [];

  add(end: number, id: number, units: number, credits: number | null = null): void {
    if (units > 0) this.leases.push({ end, id, left: units, credits });
    this.leases.sort((a, b) => a.end - b.end);
  }

  /**
   * Takes `cost` admissions and `credits` from the lease that ends first and can cover both; its id, or null when none
   * can.
   */
  take(now: number, cost: number, credits = 0): number | null {
    const lease = this.leases.find((l) => l.end > now && l.left >= cost && (l.credits === null || l.credits >= credits));
    if (!lease) return null;
    lease.left -= cost;
    if (lease.credits !== null) lease.credits -= credits;
    return lease.id;
  }

  /** Gives admissions and credits back to their lease while it lasts; false once it has ended (then the object takes them back). */
  giveBack(now: number, id: number, cost: number, credits = 0): boolean {
    const lease = this.leases.find((l) => l.id === id && l.end > now);
    if (!lease) return false;
    lease.left += cost;
    if (lease.credits !== null) lease.credits += credits;
    return true;
  }

  /** Takes up to `units` from the lease that ends last (whose credits are unlimited), as a lease ending with it. */
  carve(now: number, units: number): Lease | null {
    const lease = this.leases.findLast((l) => l.end > now && l.left > 0 && l.credits === null);
    if (!lease) return null;
    const n = Math.min(units, lease.left);
    lease.left -= n;
    return { id: lease.id, units: n, ms: lease.end - now };
  }

  /** Removes the leases that have ended; what they left unspent, for the object to take back. */
  ended(now: number): { id: number; left: number; credits: number }[] {
    const done = this.leases
      .filter((l) => l.end <= now && (l.left > 0 || (l.credits ?? 0) > 0))
      .map(({ id, left, credits }) => ({ id, left, credits: credits ?? 0 }));
    this.leases = this.leases.filter((l) => l.end > now);
    return done;
  }

  /** Whether a lease has ended with something left to give back. */
  hasEnded(now: number): boolean {
    return this.leases.some((l) => l.end <= now && (l.left > 0 || (l.credits ?? 0) > 0));
  }

  /** The admissions ended leases left, still to give back. */
  endedLeft(now: number): number {
    return this.leases.reduce((n, l) => n + (l.end <= now ? l.left : 0), 0);
  }

  /** Admissions still spendable now. */
  available(now: number): number {
    return this.leases.reduce((n, l) => n + (l.end > now ? l.left : 0), 0);
  }

  /** Credits still spendable now from leases that hold a limited balance's credits. */
  credits(now: number): number {
    return this.leases.reduce((n, l) => n + (l.end > now ? (l.credits ?? 0) : 0), 0);
  }
}

/**
 * One Durable Object serves about 1,000 requests a second: a key called more often than RELAY_AT times a second (its
 * isolates' calls, those its relays answered included) spreads its isolates over RELAYS relays for RELAY_MS after, each
 * of which takes blocks of the key's budget and carves its isolates' leases from them (counters/relay.ts). Only a key
 * whose leases last a whole LEASE_MS (every window 50 s or more): calls that often then come from hundreds of
 * isolates, which relays spread; a shorter lease is called for that often by a few, whom a relay's hop would only slow.
 */
export const RELAY_AT = 250;
export const RELAYS = 8;
export const RELAY_MS = 10_000;
/**
 * The calls a second a relay is given at most, half an object's: past RELAYS x RELAY_LOAD the key takes twice as many
 * relays, up to MAX_RELAYS (each isolate keeps its relay or moves to one new one: it picks by its seat, modulo a power
 * of two).
 */
export const RELAY_LOAD = 500;
export const MAX_RELAYS = 64;

/** Where a key's isolates call for RELAY_MS more: `count` relays, for `ms` from the answer. */
export type Relays = { count: number; ms: number };

/** The calls a key's object answers a second, directly or through its relays, and whether the key is spread. */
export class FanIn {
  /** Calls in the last second, by the instant they were noted. */
  private calls: { at: number; n: number }[] = [];
  private total = 0;
  private until = 0;
  private count = RELAYS;

  /** `n` calls answered at `now` (a relay's call counts the calls it answered since its last). */
  note(now: number, n: number): void {
    if (n > 0) this.calls.push({ at: now, n });
    this.total += n;
    let i = 0;
    while (i < this.calls.length && (this.calls[i] as { at: number }).at <= now - 1000) this.total -= (this.calls[i++] as { n: number }).n;
    if (i > 0) this.calls.splice(0, i);
    if (this.total < RELAY_AT) return;
    // While spread, the count only grows: a key's isolates move as little as they can.
    if (this.until <= now) this.count = RELAYS;
    while (this.count < MAX_RELAYS && this.total > this.count * RELAY_LOAD) this.count *= 2;
    this.until = now + RELAY_MS;
  }

  /** Where the isolates of a key whose leases last `ms` (its limits' shortest `leaseMs`) call now: null, its object. */
  relays(now: number, ms: number): Relays | null {
    return this.until > now && ms === LEASE_MS ? { count: this.count, ms: this.until - now } : null;
  }
}
