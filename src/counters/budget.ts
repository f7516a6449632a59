import type { Balance, LedgerEntry } from "../core/balance";
import type { CreditsConfig } from "../core/credits";
import { LEASE_MS, leaseWithoutLimits, SHARE_OF_REMAINING } from "../core/lease";
import type { Limit } from "../core/window";
import type { CallTag, CreditsLeft, Granted, LogGrant, Refund, Spending, Unspent } from "./protocol";
import { SlidingLog } from "./sliding-log";
import { StoredBalance } from "./stored-balance";

/**
 * How a call is judged before it spends: under the limits `spend` (the call's `costs` picks among them) and, when
 * the object holds a balance, the credits configuration `credits` (null: unlimited), or refused with `refuse` as its
 * answer (nothing spent).
 */
export type Judged<A> = Spend | { refuse: A };

/** What a judged call spends under: `free` for a retry already charged, which spends nothing and is answered as admitted. */
type Spend = { spend: Limit[]; credits?: CreditsConfig | null; free?: boolean };

/**
 * The budget of one counting object (a key's or a plain counter), and the admit step both objects take on it: a retry
 * gets the first answer, a call past its deadline or cancelled spends nothing, what the caller's ended leases left
 * unspent is taken back once, and an answer leaves only once what it admitted is stored (group commit).
 */
export class Budget {
  /** Null until first used, and again once `close` dropped it (its storage deleted). */
  private opened: SlidingLog | null = null;
  private readonly marks: CallMarks;
  private readonly calls: CallMemory<Logged>;
  /** Told when what a call paid before a restart was given back (`undoPaid`): a key's object moves it to a successor. */
  private readonly repaid: () => void;
  /** The object's credits balance, when it keeps one (`storage` given). */
  readonly balance: StoredBalance | null;

  /**
   * `gaveBack` is told of every admission given back (a refund, a cancellation, a lease's unspent rest). An object
   * that keeps a credits balance passes its `storage`, where the balance's movements go (`record`: the ledger) and
   * what to do once credits were paid back to it (`repaid`).
   */
  constructor(
    private readonly sql: SqlStorage,
    private readonly clock: () => number,
    private readonly gaveBack: (at: number, cost: number) => void = () => {},
    credits?: { kv: SyncKvStorage; record: (entries: readonly LedgerEntry[]) => void; repaid?: () => void },
  ) {
    this.balance = credits ? new StoredBalance(credits.kv, credits.record) : null;
    this.repaid = credits?.repaid ?? (() => {});
    this.marks = new CallMarks(sql);
    this.calls = new CallMemory<Logged>((id, until) => this.marks.claim(`returns:${id}`, until));
  }

  private get log(): SlidingLog {
    this.opened ??= new SlidingLog(this.sql, this.clock);
    return this.opened;
  }

  /**
   * The admit step. `judge` runs once what the call returns is taken back: it answers the limits to spend under, or a
   * refusal that spends nothing; after it, the call is decided only if its caller still waits. `answer` makes the
   * call's answer of what was granted (it is remembered for a retry); `admitted` runs before an admission's answer
   * leaves. Admissions are logged before any await, so concurrent calls are exact.
   */
  async admit<A>(
    call: Spending,
    {
      judge,
      claim,
      answer,
      admitted,
    }: {
      judge: () => Judged<A> | Promise<Judged<A>>;
      /**
       * The last word on a judged call, taken with no await before its decision (and only for a caller still waiting):
       * what must be checked and recorded in one step with the spend, such as an idempotency key's claim.
       */
      claim?: (judged: Judged<A>) => Judged<A>;
      answer: (granted: Granted, logged: readonly Logged[]) => A;
      admitted?: (granted: Granted) => Promise<void>;
    },
  ): Promise<A> {
    const known = this.calls.recall(call.tag);
    if (known) return known.answer as A;
    for (const { id, left, credits } of this.calls.returns(call.tag, call.returned ?? [])) this.giveBackLease(id, left, credits);
    const first = await judge();
    // Judging may have taken a while (a key's record read from D1): decide only if the caller still waits.
    if (this.calls.recall(call.tag)) throw new Error("call already answered or cancelled");
    const judged = claim ? claim(first) : first;
    if ("refuse" in judged) {
      // Refused, the call spends nothing: what a try of it paid before this object restarted comes back.
      this.undoPaidAlone(call.tag.id);
      return this.calls.remember(call.tag, judged.refuse, []);
    }
    const granted = this.decide(call, judged);
    const logged = loggedBy(granted, call);
    const made = this.calls.remember(call.tag, answer(granted, logged), logged);
    // A refusal waits for the admissions decided before it, so a caller never sees it before a lease granted earlier:
    // the write is claimed before anything else is awaited.
    if (granted.allowed) {
      const written = this.log.saved();
      if (admitted) await admitted(granted);
      await written;
    } else await this.log.settled();
    return made;
  }

  /**
   * Decides the call on its limits, then on the balance (limits first: a request both limits refuse is told of the
   * limit), all before any await: spent everywhere, or nowhere. The credits a lease carries are taken from the
   * balance with it; a balance with little left leases nothing, so its requests are judged one at a time.
   */
  private decide(call: Spending, judged: Spend): Granted {
    const now = this.clock();
    if (judged.free) return { ...this.log.admit({ limits: judged.spend, cost: 0 }), credits: null, replayed: true };
    const cost = call.cost ?? 1;
    const balance = this.balance && "credits" in judged ? this.balance.open(judged.credits ?? null, now) : null;
    const limited = balance !== null && balance.state.remaining !== null;
    // A try of a call this object decided before it restarted (its memory of calls gone): what the first try paid comes
    // back, and this one is judged as the call, so it pays once if admitted and nothing if refused. Paid under a
    // balance set outright since, the first try's payment stands for this one.
    const paid = limited && ((call.credits ?? 0) > 0 || call.lease) ? this.paidEarlier(call.tag.id) : null;
    const earlier = paid && balance ? this.undoPaid(call.tag.id, paid, balance, now) : null;
    const amount = earlier === false ? 0 : (call.credits ?? 0);
    const short = balance !== null && !balance.covers(amount);
    const counted = this.log.admit({
      limits: judged.spend,
      cost,
      costs: call.costs,
      lease: (call.lease ?? false) && !short && call.reserve === undefined,
      wanted: call.wanted,
      block: call.relayed !== undefined,
    });
    if (!counted.allowed || !balance || balance.state.remaining === null) {
      this.balance?.save();
      return { ...counted, credits: null };
    }
    if (short) {
      // The limits admitted it, but it spends nothing: what they show is what they had before it.
      this.log.refund(counted.at, counted.costs);
      this.balance?.save();
      const limits = counted.limits.map((l) => ({ ...l, remaining: l.remaining + (counted.costs[l.name] ?? 0) }));
      const exhausted = balance.exhausted(now, amount);
      return { ...counted, limits, allowed: false, lease: null, credits: creditsLeft(balance, now), exhausted };
    }
    balance.spend(now, amount, call.tag.id, call.reserve);
    // A balance with no limit beside it has no log to size a lease from: its own recent rate does.
    const arrivals = this.arrived(now, cost);
    if (judged.spend.length === 0 && call.lease && call.reserve === undefined)
      counted.lease = leaseWithoutLimits(arrivals, now, call.wanted);
    const lease = this.leaseCredits(balance, counted, now, call.perUnit ?? (cost > 0 ? Math.ceil(amount / cost) : 0), call.tag.id);
    // What a lease holds is spent where no call shows it: it counts towards the rate as a log's lease entries do.
    if (lease && judged.spend.length === 0) this.arrived(now, lease.units);
    if (amount > 0 || lease?.credits)
      this.marks.claim(`paid:${call.tag.id}`, keptUntil(call.tag), { at: now, cost, credits: amount, lease });
    (this.balance as StoredBalance).save();
    return { ...counted, lease, credits: creditsLeft(balance, now) };
  }

  /** What a try of the call `id` paid before this object restarted (see CallMarks), its mark taken; null: none did. */
  private paidEarlier(id: string): Paid | null {
    return this.balance ? (this.marks.takeEarlier(`paid:${id}`) as Paid | null) : null;
  }

  /**
   * Gives back to `balance` what a try of the call `id` paid before this object restarted (`paid`): its credits (or
   * its reservation whole) and its lease's, which nobody holds. Its admission and its lease stay logged (an admission
   * counted twice only admits less); as usage they are given back. False when its credits did not come back (the
   * balance was set outright since: the payment stands for the call, and no refund of it gives any back).
   */
  private undoPaid(id: string, paid: Paid, balance: Balance, now: number): boolean {
    const back = balance.refund(now, paid.credits, id, paid.at);
    if (paid.lease?.credits) balance.refund(now, paid.lease.credits, undefined, paid.at);
    this.gaveBack(paid.at, paid.cost ?? 0);
    if (paid.lease) this.gaveBack(paid.lease.id, paid.lease.units);
    this.repaid();
    return back >= paid.credits;
  }

  /** `undoPaid` for a call that is decided no further here (refused, or cancelled), on the balance as stored. */
  private undoPaidAlone(id: string): void {
    const paid = this.paidEarlier(id);
    const balance = paid && this.balance?.current(this.clock());
    if (!paid || !balance) return;
    this.undoPaid(id, paid, balance, this.clock());
    this.balance?.save();
  }

  /** Admissions of the last second (leases at their size), counted for an object whose calls spend no limit. */
  private recent: { at: number; n: number }[] = [];

  private arrived(now: number, n: number): number {
    this.recent = this.recent.filter((r) => r.at > now - 1000);
    if (n > 0) this.recent.push({ at: now, n });
    return this.recent.reduce((sum, r) => sum + r.n, 0);
  }

  /**
   * The credits beside a lease: `perUnit` for each admission, within a quarter of what the balance has left; the lease
   * shrinks to what they cover (what it loses goes back to the logs), and is none when they cover not one admission.
   */
  private leaseCredits(balance: Balance, counted: LogGrant, now: number, perUnit: number, requestId: string): LogGrant["lease"] {
    const { lease } = counted;
    if (!lease) return null;
    const room = Math.floor((balance.state.remaining ?? 0) / SHARE_OF_REMAINING);
    const units = perUnit > 0 ? Math.min(lease.units, Math.floor(room / perUnit)) : lease.units;
    if (units < lease.units) this.log.refundLease(lease.id, lease.units - units);
    if (units === 0) return null;
    balance.spend(now, units * perUnit, `${requestId}-lease`);
    return { ...lease, units, credits: units * perUnit };
  }

  /**
   * Gives back a request admitted at `at` but refused afterwards: once per `tag`, however many of its attempts
   * arrive, and not at all past the attempt's deadline.
   */
  refund({ tag, credits = 0, requestId, ...admitted }: Refund): void {
    if (this.calls.recall(tag)) return;
    this.calls.remember(tag, true, []);
    if (!this.marks.claim(`refund:${tag.id}`, keptUntil(tag))) return;
    this.giveBack({ ...admitted, credits, requestId });
    // What the request paid is back: no try of its call may be paid back again.
    if (requestId && this.balance) this.marks.drop(`paid:${requestId}`);
  }

  /**
   * The caller gave up on this call: whatever it spent goes back (the lease too: the caller never holds it), and it
   * never spends later. `returned` is what the call was returning, taken back here if the call never brought it.
   */
  cancel({ tag, returned = [] }: { tag: CallTag; returned?: Unspent[] }): void {
    const spent = this.calls.cancel(tag);
    for (const logged of spent) this.giveBack(logged);
    // Unknown here: a call decided before a restart, whose payment comes back. Known: given back just now, so no try
    // of it is paid back again.
    if (spent.length === 0) this.undoPaidAlone(tag.id);
    else if (this.balance) this.marks.drop(`paid:${tag.id}`);
    for (const { id, left, credits } of this.calls.returns(tag, returned)) this.giveBackLease(id, left, credits);
  }

  /** Forgets the log in memory once its storage is deleted; the next use reads (and creates) it again. */
  close(): void {
    this.opened = null;
    this.marks.close();
  }

  private giveBack({ at, cost, costs, credits, requestId }: Logged): void {
    this.log.refund(at, costs);
    if (cost > 0) this.gaveBack(at, cost);
    this.refundCredits(credits, at, requestId);
  }

  /**
   * What a caller's ended lease left unspent: logged in every log it was granted in, and its credits (taken at its
   * grant, at most LEASE_MS before its end).
   */
  private giveBackLease(id: number, left: number, credits = 0): void {
    this.log.refundLease(id, left);
    if (left > 0) this.gaveBack(id, left);
    this.refundCredits(credits, id - LEASE_MS);
  }

  /**
   * Credits spent at `spentAt` back to the balance: a request's (its reservation whole, when it reserved) or, without
   * `requestId`, a lease's rest; nothing when the balance was set outright since (core/balance.ts).
   */
  private refundCredits(credits: number, spentAt: number, requestId?: string): void {
    if (!this.balance || (credits === 0 && requestId === undefined)) return;
    this.balance.current(this.clock())?.refund(this.clock(), credits, requestId, spentAt);
    this.balance.save();
  }
}

/** How long a call's answer is remembered past its deadline: long enough for its retry or its cancellation. */
const CALL_MEMORY_MS = 10_000;

/** What a paying call paid, at `at`: its admission of `cost`, its `credits` (spent, or reserved) and its lease. */
type Paid = { at: number; cost: number; credits: number; lease: LogGrant["lease"] };

/** Until when a call is remembered: CALL_MEMORY_MS past its deadline, or past now if that has gone. */
const keptUntil = (tag: CallTag) => Math.max(Date.now(), tag.deadline) + CALL_MEMORY_MS;

/**
 * Calls whose give-back was taken (a refund, the rests a call returns) or that paid credits, by id, in the object's
 * storage, written in the step that gave back or paid: an attempt that reaches the object after it restarted, its
 * memory of calls gone, takes nothing back twice and pays nothing twice. (A call that pays nothing is remembered in
 * memory only: its retry after a restart spends its admission again, which never admits more than the limit.) A mark
 * lives as long as its call's memory, so only marks written before this instance began can name a call it does not
 * remember: once they are past, a call it does not know costs no read.
 */
class CallMarks {
  private ready = false;
  private purgedAt = Number.NEGATIVE_INFINITY;
  /** Until when the marks written before this instance began are kept. */
  private earlierUntil = Number.NEGATIVE_INFINITY;

  constructor(private readonly sql: SqlStorage) {}

  private table(): SqlStorage {
    if (!this.ready) {
      this.sql.exec("CREATE TABLE IF NOT EXISTS call_marks (id TEXT PRIMARY KEY, keep_until INTEGER NOT NULL, held TEXT)");
      const [row] = this.sql.exec<{ until: number | null }>("SELECT max(keep_until) AS until FROM call_marks").toArray();
      this.earlierUntil = row?.until ?? Number.NEGATIVE_INFINITY;
      this.ready = true;
    }
    const now = Date.now();
    // Each mark is kept seconds: a sweep a second holds the table to a few seconds' calls.
    if (now - this.purgedAt >= 1000) {
      this.sql.exec("DELETE FROM call_marks WHERE keep_until < ?", now);
      this.purgedAt = now;
    }
    return this.sql;
  }

  /** Marks `id` until `until`, with what it `held` (what a paying call paid): false when it was marked before. */
  claim(id: string, until: number, held: unknown = null): boolean {
    const sql = this.table();
    return (
      sql.exec("INSERT OR IGNORE INTO call_marks (id, keep_until, held) VALUES (?, ?, ?)", id, until, JSON.stringify(held)).rowsWritten > 0
    );
  }

  /** Whether marks written before this instance began may still be kept. */
  earlier(): boolean {
    this.table();
    return Date.now() <= this.earlierUntil;
  }

  /** What a mark written before this instance began holds for `id`, the mark removed; null when there is none. */
  takeEarlier(id: string): unknown {
    if (!this.earlier()) return null;
    const [row] = this.sql.exec<{ held: string }>("DELETE FROM call_marks WHERE id = ? RETURNING held", id).toArray();
    return row ? JSON.parse(row.held) : null;
  }

  /** Removes the mark of `id`. */
  drop(id: string): void {
    this.table().exec("DELETE FROM call_marks WHERE id = ?", id);
  }

  /** Its storage was deleted: the table is made again when next needed. */
  close(): void {
    this.ready = false;
  }
}

/**
 * What a call logged at `at`: `cost` requests (its admission, or the lease granted beside it), `costs` in each limit's
 * log, and `credits` taken from the balance (for the request `requestId`, whose reservation a refund gives back whole).
 */
export type Logged = { at: number; cost: number; costs: Record<string, number>; credits: number; requestId?: string };

/** What an answer logged: its admission and the lease beside it (as many in each log it spent), or nothing when it was refused. */
function loggedBy(granted: Granted, call: Spending): Logged[] {
  if (!granted.allowed) return [];
  const { at, cost, costs, lease } = granted;
  const credits = granted.credits ? (call.credits ?? 0) : 0;
  const admission = { at, cost, costs, credits, requestId: call.tag.id };
  if (!lease) return [admission];
  const leased = Object.fromEntries(Object.keys(costs).map((name) => [name, lease.units]));
  return [admission, { at: lease.id, cost: lease.units, costs: leased, credits: lease.credits ?? 0 }];
}

/** The balance as an answer shows it; null when unlimited. */
function creditsLeft(balance: Balance, now: number): CreditsLeft | null {
  const { remaining } = balance.state;
  return remaining === null ? null : { remaining, nextRefillAt: balance.nextRefillAt(now) };
}

type Remembered<S> = { answer: unknown; spent: S[]; cancelled: boolean; keepUntil: number };

/** Drops the entries of `memory` kept until before `now` (oldest first: each is kept as long after its deadline). */
function forgetBefore<T extends { keepUntil: number }>(memory: Map<string, T>, now: number): void {
  for (const [id, r] of memory) {
    if (r.keepUntil >= now) break;
    memory.delete(id);
  }
}

/**
 * Recent calls by id, oldest first: a retry gets the first answer, a cancellation finds what to give back (`S`: what a
 * call spent, as its object gives it back), and the unspent admissions a call returns are taken back once, whether the
 * call or its cancellation brings them. A key's relay keeps one for its isolates' calls (counters/relay.ts).
 */
export class CallMemory<S> {
  private calls = new Map<string, Remembered<S>>();
  private returned = new Map<string, { keepUntil: number }>();

  /** `claim`, when given, also takes a call's returns in storage (CallMarks): false when they were taken before. */
  constructor(private readonly claim?: (id: string, until: number) => boolean) {}

  /**
   * The earlier answer to this call, if it was already answered (a retry). Throws when the call was cancelled or its
   * deadline passed: the caller has stopped waiting, so nothing may be spent for it.
   */
  recall(tag: CallTag): Remembered<S> | undefined {
    const now = Date.now();
    forgetBefore(this.calls, now);
    const known = this.calls.get(tag.id);
    if (known?.cancelled || (!known && now > tag.deadline)) throw new Error("the caller no longer waits for this call");
    return known;
  }

  /** `spent`: what the call logged (its admission and its lease), for a cancellation to give back. */
  remember<T>(tag: CallTag, answer: T, spent: S[]): T {
    this.calls.set(tag.id, { answer, spent, cancelled: false, keepUntil: tag.deadline + CALL_MEMORY_MS });
    return answer;
  }

  /**
   * Marks the call cancelled, until its deadline has passed (after which it cannot spend anyway), and answers what it
   * had spent, so that the caller gives it back.
   */
  cancel(tag: CallTag): S[] {
    const spent = this.calls.get(tag.id)?.spent ?? [];
    this.calls.delete(tag.id);
    this.calls.set(tag.id, {
      answer: null,
      spent: [],
      cancelled: true,
      keepUntil: keptUntil(tag),
    });
    return spent;
  }

  /**
   * The unspent admissions this call returns, the first time they reach the object (with the call, or with its
   * cancellation when the call never arrived or failed); nothing the second time, so they are never taken back twice.
   */
  returns(tag: CallTag, unspent: readonly Unspent[]): readonly Unspent[] {
    if (unspent.length === 0) return unspent;
    forgetBefore(this.returned, Date.now());
    if (this.returned.has(tag.id)) return [];
    const keepUntil = keptUntil(tag);
    this.returned.set(tag.id, { keepUntil });
    return !this.claim || this.claim(tag.id, keepUntil) ? unspent : [];
  }
}
