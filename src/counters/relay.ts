import { MAX_LEASE, type Relays } from "../core/lease";
import type { Deps } from "../platform/deps";
import { CallMemory } from "./budget";
import type { Holdings } from "./held";
import { type Answer, leasedCall } from "./leased-call";
import type { CallTag, CounterStub, Granted, Spending, Unspent } from "./protocol";

/** An answer as a key's object or its relay gives it: with where the key's isolates call next (core/lease.ts). */
export type Routed<R, F> = Answer<R, F> & { relays?: Relays | null };

/** One isolate's plain call, as its relay takes it: the call's spending, and the key's object's side of it. */
export type Relayed<S extends CounterStub, R, F extends { ok: false }> = {
  name: string;
  stub: S;
  spending: Spending;
  /** The isolate's call, made by the relay for itself (with a block beside it). */
  ask: (stub: S, spending: Spending) => Promise<Routed<R, F>>;
  /** The relay's own renewal of its block, spending nothing. */
  renew: (stub: S, spending: Spending) => Promise<Routed<R, F>>;
  /** A held record's refusal of the isolate's request (what the key's object would refuse it for), or null. */
  check?: (record: R) => F | null;
};

/**
 * A relay of a hot key: an object between some of the key's isolates and the key's object, so that one key can be
 * used from more isolates than one object could answer (one call a second each, at least, to keep a lease). To the
 * key's object it is one isolate (counters/leased-call.ts, over its own Holdings) whose leases are blocks, each asked
 * for as large as its isolates took in the last second (MAX_BLOCK at most); to its isolates it answers as the key's
 * object does, carving each a lease out of a block. A carved lease ends when its block ends and shares its id, so it
 * is logged where the block is (at the block's end, counted from its grant), the key's object takes back what the
 * isolate left of it, and nothing a relay hands out outlives what the key's object trusted: the limits hold exactly as
 * with one object, and a change to the key is in force everywhere within a lease, as before.
 */
export class Relay {
  /** Admissions this relay handed out in the current and the last second: what its next block is sized by. */
  private served = { second: 0, now: 0, last: 0 };
  /** Isolates' calls answered since the last call to the key's object (FanIn counts them). */
  private answered = 0;
  /**
   * The isolates' calls, as a key's object remembers its callers' (budget.ts): a retry gets the first answer, a call
   * cancelled or past its deadline spends nothing, and what each spent is given back if its isolate cancels it.
   */
  private readonly calls = new CallMemory<Unspent>();
  /** The isolates' calls being answered, by id: a retry that arrives meanwhile waits for the first attempt's answer. */
  private readonly running = new Map<string, Promise<unknown>>();

  /**
   * `self` names this relay in the ids of its calls to the key's object: a retry that an isolate sends to another relay
   * is a call of that relay's own there, never taken for this one's (whose admission the isolate then cancels here).
   */
  constructor(
    readonly held: Holdings,
    private readonly self: string,
  ) {}

  /**
   * Answers one isolate's call: its admission and a lease carved from a block this relay holds, or (none held) from the
   * block the call brings, asked for with the isolate's call itself; a refusal as the key's object made it.
   */
  async serve<S extends CounterStub, R, F extends { ok: false }>(deps: Deps, c: Relayed<S, R, F>): Promise<Routed<R, F>> {
    const { id } = c.spending.tag;
    const first = this.running.get(id);
    if (first) return first as Promise<Routed<R, F>>;
    const answer = this.answer(deps, c);
    this.running.set(id, answer);
    try {
      return await answer;
    } finally {
      this.running.delete(id);
    }
  }

  /** See `serve`: one attempt's answer. */
  private async answer<S extends CounterStub, R, F extends { ok: false }>(deps: Deps, c: Relayed<S, R, F>): Promise<Routed<R, F>> {
    const { name, spending } = c;
    const { tag } = spending;
    const known = this.calls.recall(tag);
    if (known) return known.answer as Routed<R, F>;
    for (const r of this.calls.returns(tag, spending.returned ?? [])) this.giveBack(name, r);
    const cost = spending.cost ?? 1;
    this.answered += 1;
    // The relay's calls to the key's object are its own (a cancellation of the isolate's call comes here, and gives
    // back what this relay handed out, never the block the relay keeps), made within the isolate's deadline.
    const upstream =
      (call: Relayed<S, R, F>["ask"]) =>
      async (stub: S, s: Spending): Promise<Routed<R, F>> => {
        const askedAt = this.held.now();
        const relayed = this.answered;
        this.answered = 0;
        const answer = await call(stub, { ...s, wanted: this.demand(), relayed });
        // Passed on to the isolates; and known to be spread, the key is hot here too: its refusals are remembered.
        if (answer.ok) this.held.route(name, answer.relays, askedAt);
        return answer;
      };
    const own = { ...deps, requestId: `${tag.id}-${this.self}` };
    const verdict = await leasedCall<S, R, F>(
      own,
      { name, stub: c.stub, cost, ask: upstream(c.ask), renew: upstream(c.renew), check: c.check },
      this.held,
    );
    if (verdict === null) throw new Error("the key's object did not answer");
    const routed = { relays: this.held.relays(name) };
    if (!verdict.ok) return this.remember(name, tag, { ...verdict, ...routed }, []);
    const { record, spent } = verdict;
    // What a key's object leases a hot key's isolate: the blocks were already cut to a share of what the key has left.
    const lease = spending.lease && spent.allowed ? this.held.carve(name, MAX_LEASE) : null;
    this.count(cost + (lease?.units ?? 0));
    const { name: _, leased: __, spentCredits: ___, credits: ____, ...counted } = spent;
    const limits = counted.limits.map((l) => ({ ...l, remaining: l.remaining - (lease?.units ?? 0) }));
    const granted: Granted = { ...counted, limits, lease, credits: null };
    // The admission is logged at `spent.at` (a block's end, or the key's object's instant), the lease at its block's end.
    const handedOut = spent.allowed ? [{ id: spent.at, left: cost }, ...(lease ? [{ id: lease.id, left: lease.units }] : [])] : [];
    return this.remember(name, tag, { ok: true, record, granted, ...routed }, handedOut);
  }

  /** The isolate gave up on its call `tag`: what the relay handed out for it comes back, and `returned` if the call never brought it. */
  cancel(name: string, { tag, returned = [] }: { tag: CallTag; returned?: Unspent[] }): void {
    for (const u of this.calls.cancel(tag)) this.giveBack(name, u);
    for (const u of this.calls.returns(tag, returned)) this.giveBack(name, u);
  }

  /**
   * The answer to the call `tag`, remembered with what it handed out; unless the isolate gave up on it meanwhile (it
   * hands out nothing then). A retry never gets here while its first attempt runs (`serve`).
   */
  private remember<A>(name: string, tag: CallTag, answer: A, handedOut: Unspent[]): A {
    try {
      this.calls.recall(tag);
    } catch (err) {
      for (const u of handedOut) this.giveBack(name, u);
      throw err;
    }
    return this.calls.remember(tag, answer, handedOut);
  }

  /** Admissions back to the block they came from while it lasts, else to the key's object with the relay's next call. */
  private giveBack(name: string, u: Unspent): void {
    if (!this.held.giveBack(name, u.id, u.left)) this.held.owe(name, u);
  }

  /**
   * What the next block should hold: a second of what the isolates take, as the last whole second or the current one
   * (from its first tenth on) measures it.
   */
  private demand(): number {
    this.count(0);
    const into = Math.max(100, this.held.now() % 1000);
    return Math.max(Math.ceil((this.served.now * 1000) / into), this.served.last, 2 * MAX_LEASE);
  }

  private count(n: number): void {
    const second = Math.floor(this.held.now() / 1000);
    if (second !== this.served.second) this.served = { second, now: 0, last: second === this.served.second + 1 ? this.served.now : 0 };
    this.served.now += n;
  }
}
