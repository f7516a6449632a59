import type { Limit } from "../core/window";
import type { CallTag, Granted, Refund, Spending, Unspent } from "./protocol";
import { SlidingLog } from "./sliding-log";

/**
 * How a call is judged before it spends: under the limits `spend` (the call's `costs` picks among them), or refused
 * with `refuse` as its answer (nothing spent).
 */
export type Judged<A> = { spend: Limit[] } | { refuse: A };

/**
 * The budget of one counting object (a key's or a plain counter), and the admit step both objects take on it: a retry
 * gets the first answer, a call past its deadline or cancelled spends nothing, what the caller's ended leases left
 * unspent is taken back once, and an answer leaves only once what it admitted is stored (group commit).
 */
export class Budget {
  /** Null until first used, and again once `close` dropped it (its storage deleted). */
  private opened: SlidingLog | null = null;
  private readonly calls = new CallMemory();

  /** `gaveBack` is told of every admission given back (a refund, a cancellation, a lease's unspent rest). */
  constructor(
    private readonly sql: SqlStorage,
    private readonly clock: () => number,
    private readonly gaveBack: (at: number, cost: number) => void = () => {},
  ) {}

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
      answer,
      admitted,
    }: {
      judge: () => Judged<A> | Promise<Judged<A>>;
      answer: (granted: Granted, logged: readonly Logged[]) => A;
      admitted?: (granted: Granted) => Promise<void>;
    },
  ): Promise<A> {
    const known = this.calls.recall(call.tag);
    if (known) return known.answer as A;
    for (const { id, left } of this.calls.returns(call.tag, call.returned ?? [])) this.giveBackLease(id, left);
    const judged = await judge();
    // Judging may have taken a while (a key's record read from D1): decide only if the caller still waits.
    if (this.calls.recall(call.tag)) throw new Error("call already answered or cancelled");
    if ("refuse" in judged) return this.calls.remember(call.tag, judged.refuse, []);
    const granted = this.log.admit({
      limits: judged.spend,
      cost: call.cost ?? 1,
      costs: call.costs,
      lease: call.lease ?? false,
      wanted: call.wanted,
    });
    const logged = loggedBy(granted);
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
   * Gives back a request admitted at `at` but refused afterwards: once per `tag`, however many of its attempts
   * arrive, and not at all past the attempt's deadline.
   */
  refund({ tag, ...admitted }: Refund): void {
    if (this.calls.recall(tag)) return;
    this.calls.remember(tag, true, []);
    this.giveBack(admitted);
  }

  /**
   * The caller gave up on this call: whatever it spent goes back (the lease too: the caller never holds it), and it
   * never spends later. `returned` is what the call was returning, taken back here if the call never brought it.
   */
  cancel({ tag, returned = [] }: { tag: CallTag; returned?: Unspent[] }): void {
    for (const logged of this.calls.cancel(tag)) this.giveBack(logged);
    for (const { id, left } of this.calls.returns(tag, returned)) this.giveBackLease(id, left);
  }

  /** Forgets the log in memory once its storage is deleted; the next use reads (and creates) it again. */
  close(): void {
    this.opened = null;
  }

  private giveBack({ at, cost, costs }: Logged): void {
    this.log.refund(at, costs);
    this.gaveBack(at, cost);
  }

  /** What a caller's ended lease left unspent: logged in every log it was granted in. */
  private giveBackLease(id: number, left: number): void {
    this.log.refundLease(id, left);
    this.gaveBack(id, left);
  }
}

/** How long a call's answer is remembered past its deadline: long enough for its retry or its cancellation. */
const CALL_MEMORY_MS = 10_000;

/** What a call logged at `at`: `cost` requests (its admission, or the lease granted beside it), `costs` in each limit's log. */
export type Logged = { at: number; cost: number; costs: Record<string, number> };

/** What an answer logged: its admission and the lease beside it (as many in each log it spent), or nothing when it was refused. */
function loggedBy(granted: Granted): Logged[] {
  if (!granted.allowed) return [];
  const { at, cost, costs, lease } = granted;
  if (!lease) return [{ at, cost, costs }];
  const leased = Object.fromEntries(Object.keys(costs).map((name) => [name, lease.units]));
  return [
    { at, cost, costs },
    { at: lease.id, cost: lease.units, costs: leased },
  ];
}

type Remembered = { answer: unknown; spent: Logged[]; cancelled: boolean; keepUntil: number };

/** Drops the entries of `memory` kept until before `now` (oldest first: each is kept as long after its deadline). */
function forgetBefore<T extends { keepUntil: number }>(memory: Map<string, T>, now: number): void {
  for (const [id, r] of memory) {
    if (r.keepUntil >= now) break;
    memory.delete(id);
  }
}

/**
 * Recent calls by id, oldest first: a retry gets the first answer, a cancellation finds what to give back, and the
 * unspent admissions a call returns are taken back once, whether the call or its cancellation brings them.
 */
class CallMemory {
  private calls = new Map<string, Remembered>();
  private returned = new Map<string, { keepUntil: number }>();

  /**
   * The earlier answer to this call, if it was already answered (a retry). Throws when the call was cancelled or its
   * deadline passed: the caller has stopped waiting, so nothing may be spent for it.
   */
  recall(tag: CallTag): Remembered | undefined {
    const now = Date.now();
    forgetBefore(this.calls, now);
    const known = this.calls.get(tag.id);
    if (known?.cancelled || (!known && now > tag.deadline)) throw new Error("the caller no longer waits for this call");
    return known;
  }

  /** `spent`: what the call logged (its admission and its lease), for a cancellation to give back. */
  remember<T>(tag: CallTag, answer: T, spent: Logged[]): T {
    this.calls.set(tag.id, { answer, spent, cancelled: false, keepUntil: tag.deadline + CALL_MEMORY_MS });
    return answer;
  }

  /**
   * Marks the call cancelled, until its deadline has passed (after which it cannot spend anyway), and answers what it
   * had spent, so that the caller gives it back.
   */
  cancel(tag: CallTag): Logged[] {
    const spent = this.calls.get(tag.id)?.spent ?? [];
    this.calls.delete(tag.id);
    this.calls.set(tag.id, {
      answer: null,
      spent: [],
      cancelled: true,
      keepUntil: Math.max(Date.now(), tag.deadline) + CALL_MEMORY_MS,
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
    this.returned.set(tag.id, { keepUntil: Math.max(Date.now(), tag.deadline) + CALL_MEMORY_MS });
    return unspent;
  }
}
