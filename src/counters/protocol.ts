import type { Exhausted } from "../core/balance";
import type { Lease } from "../core/lease";
import type { Decisions } from "../core/window";

// What crosses between an isolate and a counting object (a key's, or a plain counter): the two sides of one protocol,
// each written once (object side: budget.ts; isolate side: leased-call.ts).

/**
 * What identifies and bounds one call from a request: its id (a retry of the same call reuses it, so it spends once)
 * and the instant (ms since epoch) after which the caller no longer waits, so the call must not spend anything.
 */
export type CallTag = { id: string; deadline: number };

/** What a caller's ended lease left unspent: `left` admissions logged at the lease's end `id`, and `credits`. */
export type Unspent = { id: number; left: number; credits?: number };

/**
 * What a call asks an object to spend: `cost` requests (0: only a lease, as a renewal asks), a lease beside them when
 * the caller can hold one (`lease`) of at least `wanted` where the window allows (what the caller's requests needed
 * while its last call was on its way), and what the caller's ended leases left unspent, given back (`returned`).
 * `costs`: the limits the request spends, by name, and what it spends of each, in place of `cost` of every limit
 * (a gateway route's `limits`); such a call takes no lease. `credits`: what the request spends of the object's
 * balance, all of it or nothing, in the same step as its limits; `perUnit`: the credits each leased admission carries
 * (the request's credits per unit of cost, or a renewal's last); `reserve`: the credits are held until the upstream
 * settles them (such a call takes no lease).
 */
export type Spending = {
  tag: CallTag;
  cost?: number;
  costs?: Record<string, number>;
  lease?: boolean;
  wanted?: number;
  returned?: Unspent[];
  credits?: number;
  perUnit?: number;
  reserve?: { until: number };
  /** A request's `Idempotency-Key` (a key's only): see KeyObject.authorize. Such a call takes no lease. */
  idempotency?: Idempotency;
  /**
   * A relay's call (counters/relay.ts): how many of its isolates' calls it answered since its last one. Its lease is a
   * block, sized by `wanted`.
   */
  relayed?: number;
};

/**
 * A request sent with an `Idempotency-Key`: charged once per key and idempotency key within 24 hours. `pendingMs`:
 * how long the first request may take to be answered (0: it is done once admitted, as a verify call is);
 * `fingerprint`: what makes a retry the same request (method, path and query, what it spends): under the same key,
 * another request is refused, never let through on the first one's payment.
 */
export type Idempotency = { key: string; pendingMs: number; fingerprint: string };

/**
 * The object's answer on a budget: its decision on each limit, the instant it logged the request at when admitted,
 * `cost` (the request's count, as usage counts it) and `costs` (what it logged in each limit's log, by name).
 */
export type Counted = Decisions & {
  at: number;
  cost: number;
  costs: Record<string, number>;
  /** A refusal answered from one kept where it was made (a relay's, held.ts): kept there this many ms more, and no longer by its caller. */
  keptMs?: number;
};

/**
 * A balance as an answer shows it: what is left (what the isolate holds of its leases included) and when the next
 * refill comes (ms since epoch; null: none will).
 */
export type CreditsLeft = { remaining: number; nextRefillAt: number | null };

/**
 * What the object counted, and the lease it granted beside it (core/lease.ts); `credits`: the balance after it, null
 * when unlimited; `exhausted`: the limits admitted the request but the balance could not cover it (not `allowed`,
 * nothing spent anywhere).
 */
export type Granted = Counted & { lease: Lease | null; credits: CreditsLeft | null; exhausted?: Exhausted; replayed?: true };

/** What the limits' logs granted: the count, and the lease beside it. */
export type LogGrant = Counted & { lease: Lease | null };

/**
 * The admission a request spent, wherever it was decided (by the object, or from this isolate's lease: `leased`): what
 * its rate-limit headers show and what a refund gives back. `name` is the counter it was spent on.
 */
export type Spent = Counted & {
  name: string;
  leased?: true;
  /** Credits the request spent here (`credits` at their `perUnit`), and the balance after it (null: unlimited). */
  spentCredits: number;
  credits: CreditsLeft | null;
  exhausted?: Exhausted;
  /** A retry of a request already charged (the same `Idempotency-Key`): it spent nothing anywhere. */
  replayed?: true;
};

/** The isolate's view of a counting object (a key's or a plain counter): what it calls besides the spending call. */
export type CounterStub = {
  /** The caller gave up on the call `tag`: what it spent goes back, and `returned` if the call never brought it. */
  cancel(call: { tag: CallTag; returned: Unspent[] }): Promise<void>;
  /** Gives back a request admitted at `at` (`costs` of each limit): once per `tag`, and not at all past its deadline. */
  refund(call: Refund): Promise<void>;
};

/**
 * A request admitted at `at` but refused afterwards, to give back: `cost` (its count), `costs` (of each limit) and
 * `credits` (what it spent of the balance; a refund of credits alone, after an upstream failed, names no costs).
 */
export type Refund = { at: number; cost: number; costs: Record<string, number>; credits?: number; requestId?: string; tag: CallTag };
