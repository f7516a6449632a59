import { HeldLeases, LEASE_MS, type Lease, MAX_LEASE, type Relays } from "../core/lease";
import type { LimitState } from "../core/window";
import { deadline } from "../platform/deadline";
import type { Counted, CreditsLeft, Spent, Unspent } from "./protocol";

/**
 * `record`: what the object judged the lease's requests by (a key's principal); null for a plain counter. `wanted`:
 * what the requests that waited on this isolate's last call needed together, and when it ended, for its next call to
 * ask for.
 */
type Held = {
  record: unknown;
  until: number;
  limits: LimitState[];
  /** The balance as the object answered it, the leases' credits counted as spent; null: unlimited. */
  credits: CreditsLeft | null;
  /** The credits each leased admission carried in the last lease asked for: what a renewal asks for again. */
  perUnit: number;
  lastLease: number;
  wanted: { units: number; at: number };
  leases: HeldLeases;
  /** The object's last refusal by a limit, answered here until `until` (no earlier than any limit admits again). */
  refused?: { askedAt: number; until: number; counted: Counted };
};

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
  /** The same for every name under a prefix (`dropUnder`): a person's sessions, all of them at once. */
  private readonly droppedUnder = new Map<string, number>();
  /** This isolate's calls in flight for each hot name, that requests finding no lease wait on (`inFlight`). */
  private readonly asking = new Map<string, Asking[]>();
  /** What is owed to each name's object beyond this isolate's own leases (`owe`). */
  private readonly owed = new Map<string, Unspent[]>();
  /** This isolate's calls in flight that carry ended leases' rests back to each name's object (`carrying`). */
  private readonly carried = new Map<string, Set<Promise<unknown>>>();
  /** Keys spread over relays (core/lease.ts, FanIn), and until when this isolate calls its relay rather than the key's object. */
  private readonly routes = new Map<string, { count: number; until: number }>();

  /**
   * `now` is replaceable in tests to move this isolate's time; `seat` picks this isolate's relay among a key's (random
   * when first needed: a Worker may not draw random numbers at startup).
   */
  constructor(
    public now: () => number = Date.now,
    private seat?: number,
  ) {}

  /**
   * Where this isolate's plain calls of a key `name` go while the key is spread (its object's answer `relays`, asked
   * at `askedAt`); with none, to the key's object again.
   */
  route(name: string, relays: Relays | null | undefined, askedAt: number): void {
    if (relays) this.routes.set(name, { count: relays.count, until: askedAt + relays.ms });
    else this.routes.delete(name);
  }

  /** Where `name`'s isolates call, as its object last said (`route`), from now; null: its object. */
  relays(name: string): Relays | null {
    const route = this.routes.get(name);
    const now = this.now();
    // For a lease's length after a change made here, the key's object: a relay may still hold a block granted under the
    // record before it (a lease's length at most), and this isolate must see the change at once.
    if (now - this.droppedAt(name) <= LEASE_MS) return null;
    return route && route.until > now ? { count: route.count, ms: route.until - now } : null;
  }

  /** The relay this isolate calls for `name` (`relay:<n>:<name>`), or null when it calls the key's object. */
  relayOf(name: string): string | null {
    const relays = this.relays(name);
    if (!relays) return null;
    this.seat ??= Math.floor(Math.random() * 2 ** 30);
    return `relay:${this.seat % relays.count}:${name}`;
  }

  /**
   * Remembers the object's refusal of `name` by a limit (asked at `askedAt`, under `record`), when `name` is hot (this
   * isolate held a lease of it, or the key is spread over relays): it is answered here, with no call, until the
   * refusing limits could admit again (`retryAfter` is rounded up: a second less) and for a lease's length at most, as
   * a lease is trusted. What it refuses is what the object refuses: only admissions given back in the meantime could
   * have admitted it.
   */
  refuse(name: string, askedAt: number, record: unknown, counted: Counted): void {
    const until = askedAt + Math.min(LEASE_MS, (counted.retryAfter - 1) * 1000, counted.keptMs ?? LEASE_MS);
    const hot = this.held.has(name) || (this.routes.get(name)?.until ?? 0) > this.now();
    if (!hot || until <= this.now() || askedAt <= this.droppedAt(name)) return;
    const h = this.held.get(name) ?? this.entry(name, record, 0);
    Object.assign(h, { record, until: Math.max(h.until, until), refused: { askedAt, until, counted } });
  }

  /**
   * The refusal remembered for `name` while it holds (`refuse`) for a request of `cost`, its `retryAfter` counted from
   * now; else null: none, or one of a request that cost more (what is left may admit this one), or while an ended
   * lease has something to give back.
   */
  refusal(name: string, cost: number): Spent | null {
    const h = this.get(name);
    const now = this.now();
    // Its own ended leases' rests may make room: the object judges the request with them (once per lease). What a relay
    // owes for its isolates goes with its next call, a second later at most.
    if (!h?.refused || h.refused.until <= now || h.leases.hasEnded(now) || cost < h.refused.counted.cost) return null;
    const { counted, askedAt, until } = h.refused;
    const retryAfter = Math.max(1, counted.retryAfter - Math.floor((now - askedAt) / 1000));
    return { ...counted, retryAfter, keptMs: until - now, name, spentCredits: 0, credits: null };
  }

  /**
   * Carves up to `units` admissions out of the lease of `name` that ends last (a relay's block) as a lease of their
   * own, ending with it: a relay's isolates' leases. Null when nothing is left to carve.
   */
  carve(name: string, units: number): Lease | null {
    const h = this.get(name);
    return h && units > 0 ? h.leases.carve(this.now(), units) : null;
  }

  /** What is held of `name`, while it may be trusted. */
  get(name: string): Held | undefined {
    const h = this.held.get(name);
    return h && h.until > this.now() ? h : undefined;
  }

  /** What ended leases of `name` left unspent, and what is owed to its object, removed from here (the object takes it back). */
  unspent(name: string): Unspent[] {
    const owed = this.owed.get(name) ?? [];
    this.owed.delete(name);
    return [...(this.held.get(name)?.leases.ended(this.now()) ?? []), ...owed];
  }

  /** Marks `call` as carrying rests of `name`'s ended leases back to its object, until it settles. */
  carrying(name: string, call: Promise<unknown>): void {
    const calls = this.carried.get(name) ?? new Set();
    this.carried.set(name, calls);
    const settled = call.then(
      () => {},
      () => {},
    );
    calls.add(settled);
    void settled.then(() => {
      calls.delete(settled);
      if (calls.size === 0 && this.carried.get(name) === calls) this.carried.delete(name);
    });
  }

  /** This isolate's calls in flight carrying rests of `name` back to its object, each settling when it has. */
  returning(name: string): Promise<void>[] {
    return [...(this.carried.get(name) ?? [])] as Promise<void>[];
  }

  /** Admissions to give back to `name`'s object with the next call (a relay's isolates' rests of ended blocks). */
  owe(name: string, unspent: Unspent): void {
    this.owed.set(name, [...(this.owed.get(name) ?? []), unspent]);
  }

  /**
   * Keeps a lease the object granted (for a key, with the record it was granted for) until `askedAt + lease.ms`;
   * `limits`: each limit's state as the object answered it, the lease counted as spent.
   */
  hold(name: string, askedAt: number, record: unknown, lease: Lease, limits: LimitState[], credits: CreditsLeft | null = null): void {
    const until = askedAt + lease.ms;
    // Asked before a change made here dropped the key: its record may predate the change, so it is not trusted (the
    // lease is kept only to be given back when it ends).
    const stale = askedAt <= this.droppedAt(name);
    let h = this.held.get(name);
    const perUnit = lease.credits ? lease.credits / lease.units : 0;
    if (h)
      Object.assign(
        h,
        stale
          ? { limits, credits }
          : { record, until: Math.max(h.until, until), limits, credits, lastLease: lease.units, perUnit, refused: undefined },
      );
    else h = this.entry(name, record, stale ? 0 : until, { limits, credits, perUnit, lastLease: lease.units });
    h.leases.add(until, lease.id, lease.units, lease.credits ?? null);
  }

  /** A new entry for `name`, trusted until `until`. */
  private entry(name: string, record: unknown, until: number, held: Partial<Held> = {}): Held {
    if (this.held.size >= MAX_HELD_KEYS) this.held.delete(this.held.keys().next().value as string);
    const h: Held = {
      record,
      until,
      limits: [],
      credits: null,
      perUnit: 0,
      lastLease: 0,
      wanted: { units: 0, at: 0 },
      leases: new HeldLeases(),
      ...held,
    };
    this.held.set(name, h);
    return h;
  }

  /**
   * An admission of `cost` and `credits` from a held lease of `name` (`cost` of each of its limits: a lease is logged
   * in every one), with no call; null when none is held that covers both. Each limit's `remaining`, and the balance's,
   * is what the object had left less what this isolate has spent.
   */
  take(name: string, cost: number, credits = 0): Spent | null {
    const h = this.get(name);
    const now = this.now();
    const id = h?.leases.take(now, cost, credits) ?? null;
    if (!h || id === null) return null;
    const available = h.leases.available(now);
    const limits = h.limits.map((l) => ({ ...l, remaining: l.remaining + available }));
    const costs = Object.fromEntries(limits.map((l) => [l.name, cost]));
    return {
      allowed: true,
      retryAfter: 0,
      limits,
      refusedBy: [],
      at: id,
      cost,
      costs,
      name,
      leased: true,
      spentCredits: h.credits ? credits : 0,
      credits: this.creditsLeft(name, h.credits),
    };
  }

  /** The balance `credits` as the object answered it, with what this isolate holds unspent of its leases added back. */
  creditsLeft(name: string, credits: CreditsLeft | null): CreditsLeft | null {
    const held = this.get(name)?.leases.credits(this.now()) ?? 0;
    return credits && { ...credits, remaining: credits.remaining + held };
  }

  /** The credits each leased admission of `name` carried last: what its renewal asks for again. */
  perUnit(name: string): number {
    return this.held.get(name)?.perUnit ?? 0;
  }

  /** Whether `name`'s leases are down to half of the last one and no renewal is under way: time to ask for the next. */
  runningLow(name: string): boolean {
    const h = this.get(name);
    return h !== undefined && this.calls(name).length === 0 && h.leases.available(this.now()) * 2 <= h.lastLease;
  }

  /** What ended leases of `name` left and what is owed to its object, still to give back (`unspent` takes it). */
  owing(name: string): number {
    const now = this.now();
    const ended = this.held.get(name)?.leases.endedLeft(now) ?? 0;
    return ended + (this.owed.get(name) ?? []).reduce((n, u) => n + u.left, 0);
  }

  /** What this isolate holds unspent of `name`'s leases, to add to what the object says is left. */
  available(name: string): number {
    return this.get(name)?.leases.available(this.now()) ?? 0;
  }

  /**
   * A call this isolate has in flight for a hot `name` (one that held a lease) that a request which found no lease
   * may wait for instead of calling too: one call brings a lease for all of them, not one call per request. It
   * resolves to whether it brought a lease; after one that did not (the key is out of budget), every request asks for
   * itself. A request waiting counts its `cost` towards the call's demand; no more wait for one call than a lease can
   * hold (MAX_LEASE): when every call in flight is full, undefined, and the request starts the next (`wanted`), so no
   * request queues behind calls however many arrive.
   * The wait ends at the call's deadline on the waiting request's own timer: a call whose request the runtime
   * cancelled (its client went away) never settles, and a request waiting on it without a timer of its own would be
   * found hung; past its deadline the call is forgotten, so later requests ask for themselves at once.
   */
  inFlight(name: string, cost = 0): Promise<boolean> | undefined {
    const open = this.calls(name).find((a) => a.waiting + cost <= MAX_LEASE);
    if (!open) return undefined;
    open.waiting += cost;
    return deadline(open.settled, open.until - this.now(), () => new Error("past its deadline")).catch(() => false);
  }

  /**
   * Whether a call of this isolate for `name` is in flight with room for requests to wait on it: a call made beside
   * it asks for its own admission only, so calls slower than a lease (which then ends before it arrives) do not each
   * take one.
   */
  hasRoom(name: string): boolean {
    return this.calls(name).some((a) => a.waiting < MAX_LEASE);
  }

  /**
   * What this isolate's next call of `name` should lease for the requests that will wait on it: a full lease when every
   * call in flight is full, else what the requests that waited on its last call needed (asked for once).
   */
  wanted(name: string): number {
    if (this.calls(name).length > 0) return MAX_LEASE;
    const h = this.held.get(name);
    if (!h) return 0;
    const { wanted } = h;
    h.wanted = { units: 0, at: 0 };
    // A demand older than a lease says nothing of the requests to come.
    return wanted.at > this.now() - LEASE_MS ? wanted.units : 0;
  }

  /** This isolate's calls in flight for `name`, until their deadlines. */
  private calls(name: string): Asking[] {
    const calls = this.asking.get(name);
    if (!calls) return [];
    const now = this.now();
    const live = calls.filter((a) => a.until > now);
    if (live.length === 0) this.asking.delete(name);
    else if (live.length < calls.length) this.asking.set(name, live);
    return live;
  }

  /**
   * Marks `call` as a call of this isolate for `name` that requests may wait on while it runs, at most `ms` (its
   * deadline), if `name` is hot; `leased` reads its answer.
   */
  track<T>(name: string, call: Promise<T>, leased: (answer: T) => boolean, ms: number): Promise<T> {
    if (!this.held.has(name)) return call;
    const asking = { settled: call.then(leased, () => false), until: this.now() + ms, waiting: 0 };
    this.asking.set(name, [...this.calls(name), asking]);
    void asking.settled.then(() => {
      const rest = (this.asking.get(name) ?? []).filter((a) => a !== asking);
      if (rest.length === 0) this.asking.delete(name);
      else this.asking.set(name, rest);
      const h = this.held.get(name);
      if (h) h.wanted = { units: asking.waiting, at: this.now() };
    });
    return call;
  }

  /** Gives admissions and credits spent from a lease back to it while it lasts; false when the object must take them back. */
  giveBack(name: string, id: number, cost: number, credits = 0): boolean {
    return this.held.get(name)?.leases.giveBack(this.now(), id, cost, credits) ?? false;
  }

  /** When this isolate last stopped trusting `name`, by its own name or a prefix of it (-Infinity: never). */
  private droppedAt(name: string): number {
    let at = this.dropped.get(name) ?? Number.NEGATIVE_INFINITY;
    for (const [prefix, when] of this.droppedUnder) if (when > at && name.startsWith(prefix)) at = when;
    return at;
  }

  /**
   * Stops trusting what is held of every name that starts with `prefix` (`person:<userId>:`, each of a person's
   * sessions), as `drop` does for one name: a change to a person is in force in this isolate at once, whichever of
   * their sessions comes next.
   */
  dropUnder(prefix: string): void {
    const now = this.now();
    // A mark older than a lease says nothing any answer still on its way could be trusted for.
    for (const [p, at] of this.droppedUnder) if (at < now - LEASE_MS) this.droppedUnder.delete(p);
    this.droppedUnder.set(prefix, now);
    for (const [name, h] of this.held) if (name.startsWith(prefix)) h.until = 0;
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
      this.routes.delete(name);
      const h = this.held.get(name);
      if (h) h.until = 0;
    }
  }
}

/** This isolate's holdings. */
export const holdings = new Holdings();
