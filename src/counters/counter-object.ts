import { DurableObject } from "cloudflare:workers";
import type { Policy } from "../core/window";
import type { Bindings } from "../platform/env";
import { CallMemory, type CallTag, type Granted, SlidingLog, spentBy, type Unspent } from "./sliding-log";

/** How long after its last admission has left its window an idle counter keeps its storage. */
const IDLE_GRACE_MS = 60_000;

/**
 * A plain sliding-log counter: per client address, per agent's anonymous handshakes, per agent user's handshakes and
 * chat requests. Counters that fall idle delete their storage (an alarm), so one-off addresses and anonymous widget
 * users do not leave objects behind.
 */
export class Counter extends DurableObject<Bindings> {
  /** Replaceable in tests to move time. */
  clock: () => number = Date.now;
  /** Null once an idle counter has deleted its storage, until it counts again. */
  private opened: SlidingLog | null = null;
  private readonly calls = new CallMemory();
  /** When the alarm that deletes an idle counter is set for, as far as this instance knows. */
  private alarmAt: number | null = null;

  private get log(): SlidingLog {
    this.opened ??= new SlidingLog(this.ctx.storage.sql, () => this.clock());
    return this.opened;
  }

  /**
   * Admits `cost` requests if the policy allows it, and records them; `at` identifies the admission for a refund. A
   * hot counter's caller gets a lease beside it and gives back what its ended leases did not spend (`unspent`). The
   * answer leaves only once the admission is stored (group commit: one write for all admissions of a moment).
   */
  async consume(policy: Policy, tag: CallTag, cost = 1, unspent: Unspent[] = []): Promise<Granted> {
    const known = this.calls.recall(tag);
    if (known) return known.answer as Granted;
    for (const { id, left } of this.calls.returns(tag, unspent)) this.log.refund(id, left);
    const answer = this.log.admit(policy, cost, true);
    this.calls.remember(tag, answer, spentBy(answer));
    if (answer.allowed) {
      await this.idleAfter((answer.lease?.id ?? answer.at) + policy.windowSeconds * 1000);
      await this.log.saved();
    } else await this.log.settled();
    return answer;
  }

  /**
   * Gives back `cost` requests admitted at `at` but refused afterwards: once per `tag`, however many of its attempts
   * arrive, and not at all past the attempt's deadline.
   */
  refund(at: number, cost = 1, tag?: CallTag): void {
    if (tag) {
      if (this.calls.recall(tag)) return;
      this.calls.remember(tag, true, []);
    }
    this.log.refund(at, cost);
  }

  /**
   * The caller gave up on this call: whatever it spent goes back (the lease too: the caller never holds it), and it
   * never spends later. `unspent` is what the call was returning, taken back here if the call never brought it.
   */
  cancel(tag: CallTag, unspent: Unspent[] = []): void {
    for (const { at, cost } of this.calls.cancel(tag)) this.log.refund(at, cost);
    for (const { id, left } of this.calls.returns(tag, unspent)) this.log.refund(id, left);
  }

  /**
   * Deletes the counter's storage once nothing it counted can be in a window any more. The alarm is set for the end of
   * the latest admission's window plus a grace, and moved only when a later admission outlives it by more than that.
   */
  override async alarm(): Promise<void> {
    this.alarmAt = null;
    const deleteAt = (await this.ctx.storage.get<number>("deleteAt")) ?? 0;
    if (this.clock() < deleteAt) {
      await this.schedule(deleteAt);
      return;
    }
    await this.ctx.storage.deleteAll();
    this.opened = null;
  }

  /** Makes sure the idle alarm fires no earlier than the end of a window that ends at `until`. */
  private async idleAfter(until: number): Promise<void> {
    if (this.alarmAt !== null && this.alarmAt >= until) return;
    await this.schedule(until + IDLE_GRACE_MS);
  }

  private async schedule(at: number): Promise<void> {
    this.alarmAt = at;
    await this.ctx.storage.put("deleteAt", at);
    await this.ctx.storage.setAlarm(at);
  }
}
