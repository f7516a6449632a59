import { HeldLeases, LEASE_MS, type Lease } from "../core/lease";
import type { LimitState } from "../core/window";
import { deadline } from "../platform/deadline";
import type { Spent, Unspent } from "./protocol";

/**
 * `record`: what the object judged the lease's requests by (a key's principal); null for a plain counter. `wanted`:
 * what the requests that waited on this isolate's last call needed together, for its next call to ask for.
 */
type Held = { record: unknown; until: number; limits: LimitState[]; lastLease: number; wanted: number; leases: HeldLeases };

/** A call this isolate has in flight for a hot name, and what the requests waiting for it need together. */
type Asking = { settled: Promise<boolean>; until: number; waiting: number };

const MAX_HELD_KEYS = 10_000;

/**
 * What one isolate holds of each hot counter (`key:<id>`, or a plain counter's name): its leases and, for a key, the
 * record its object last answered (trusted until the isolate's leases of it end, at most LEASE_MS after it asked).
 * Nothing is held without a lease, so a counter that is not hot is asked on every request, exactly as without leases.
 */
export class Holdings {
  private readonly held = new Map<string, Held>();
  /** When this isolate last stopped trusting each key's record (`drop`): an answer asked for before then is stale. */
  private readonly dropped = new Map<string, number>();
  /** This isolate's call in flight for each hot name: the one renewal a run-out lease needs, shared. */
  private readonly asking = new Map<string, Asking>();

  /** `now` is replaceable in tests to move this isolate's time. */
  constructor(public now: () => number = Date.now) {}

  /** What is held of `name`, while it may be trusted. */
  get(name: string): Held | undefined {
    const h = this.held.get(name);
    return h && h.until > this.now() ? h : undefined;
  }

  /** What ended leases of `name` left unspent, removed from what is held (its object takes it back). */
  unspent(name: string): Unspent[] {
    return this.held.get(name)?.leases.ended(this.now()) ?? [];
  }

  /**
   * Keeps a lease the object granted (for a key, with the record it was granted for) until `askedAt + lease.ms`;
   * `limits`: each limit's state as the object answered it, the lease counted as spent.
   */
  hold(name: string, askedAt: number, record: unknown, lease: Lease, limits: LimitState[]): void {
    const until = askedAt + lease.ms;
    // Asked before a change made here dropped the key: its record may predate the change, so it is not trusted (the
    // lease is kept only to be given back when it ends).
    const stale = askedAt <= (this.dropped.get(name) ?? Number.NEGATIVE_INFINITY);
    let h = this.held.get(name);
    if (h) Object.assign(h, stale ? { limits } : { record, until: Math.max(h.until, until), limits, lastLease: lease.units });
    else {
      if (this.held.size >= MAX_HELD_KEYS) this.held.delete(this.held.keys().next().value as string);
      h = { record, until: stale ? 0 : until, limits, lastLease: lease.units, wanted: 0, leases: new HeldLeases() };
      this.held.set(name, h);
    }
    h.leases.add(until, lease.id, lease.units);
  }

  /**
   * An admission of `cost` from a held lease of `name` (`cost` of each of its limits: a lease is logged in every one),
   * with no call; null when none is held that covers it. Each limit's `remaining` is what the object had left less
   * what this isolate has spent.
   */
  take(name: string, cost: number): Spent | null {
    const h = this.get(name);
    const now = this.now();
    const id = h?.leases.take(now, cost) ?? null;
    if (!h || id === null) return null;
    const available = h.leases.available(now);
    const limits = h.limits.map((l) => ({ ...l, remaining: l.remaining + available }));
    const costs = Object.fromEntries(limits.map((l) => [l.name, cost]));
    return { allowed: true, retryAfter: 0, limits, refusedBy: [], at: id, cost, costs, name, leased: true };
  }

  /** Whether `name`'s leases are down to half of the last one and no renewal is under way: time to ask for the next. */
  runningLow(name: string): boolean {
    const h = this.get(name);
    return h !== undefined && !this.calling(name) && h.leases.available(this.now()) * 2 <= h.lastLease;
  }

  /** What this isolate holds unspent of `name`'s leases, to add to what the object says is left. */
  available(name: string): number {
    return this.get(name)?.leases.available(this.now()) ?? 0;
  }

  /**
   * The call this isolate has in flight for a hot `name` (one that held a lease), for a request that found no lease
   * to wait for instead of calling too: one renewal per isolate, not one per request in flight. It resolves to
   * whether it brought a lease; after one that did not (the key is out of budget), every request asks for itself.
   * A request waiting for it counts its `cost` towards what this isolate's next call asks for (`wanted`), so the
   * leases keep up with the requests that arrive while a call is on its way, however long it takes.
   * The wait ends at the call's deadline on the waiting request's own timer: a call whose request the runtime
   * cancelled (its client went away) never settles, and a request waiting on it without a timer of its own would be
   * found hung; past its deadline the call is forgotten, so later requests ask for themselves at once.
   */
  inFlight(name: string, cost = 0): Promise<boolean> | undefined {
    const asking = this.calling(name);
    if (asking) asking.waiting += cost;
    return asking && deadline(asking.settled, asking.until - this.now(), () => new Error("past its deadline")).catch(() => false);
  }

  /** Whether this isolate has a call in flight for a hot `name`. */
  busy(name: string): boolean {
    return this.calling(name) !== undefined;
  }

  /** What the requests that waited on this isolate's last call of `name` needed, asked for once by its next call. */
  wanted(name: string): number {
    const h = this.held.get(name);
    if (!h) return 0;
    const { wanted } = h;
    h.wanted = 0;
    return wanted;
  }

  /** This isolate's call in flight for `name`, until its deadline. */
  private calling(name: string): Asking | undefined {
    const asking = this.asking.get(name);
    if (asking && asking.until <= this.now()) this.asking.delete(name);
    else return asking;
  }

  /**
   * Marks `call` as this isolate's call for `name` while it runs, at most `ms` (its deadline), if `name` is hot;
   * `leased` reads its answer.
   */
  track<T>(name: string, call: Promise<T>, leased: (answer: T) => boolean, ms: number): Promise<T> {
    if (!this.held.has(name) || this.calling(name)) return call;
    const asking = { settled: call.then(leased, () => false), until: this.now() + ms, waiting: 0 };
    this.asking.set(name, asking);
    void asking.settled.then(() => {
      if (this.asking.get(name) === asking) this.asking.delete(name);
      const h = this.held.get(name);
      if (h) h.wanted = asking.waiting;
    });
    return call;
  }

  /** Gives admissions spent from a lease back to it while it lasts; false when the object must take them back. */
  giveBack(name: string, id: number, cost: number): boolean {
    return this.held.get(name)?.leases.giveBack(this.now(), id, cost) ?? false;
  }

  /**
   * Stops trusting what is held of these keys, so a change made in this isolate is in force here at once; their
   * leases are only spent again under a record the object answers anew.
   */
  drop(names: readonly string[]): void {
    const now = this.now();
    for (const name of names) {
      // An answer asked for more than a lease ago could not be trusted anyway: older marks can go.
      if (this.dropped.size >= MAX_HELD_KEYS) for (const [n, at] of this.dropped) if (at < now - LEASE_MS) this.dropped.delete(n);
      this.dropped.delete(name);
      this.dropped.set(name, now);
      const h = this.held.get(name);
      if (h) h.until = 0;
    }
  }
}

/** This isolate's holdings. */
export const holdings = new Holdings();
