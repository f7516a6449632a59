import { DurableObject } from "cloudflare:workers";
import type { Limit } from "../core/window";
import type { Bindings } from "../platform/env";
import { Budget } from "./budget";
import type { CallTag, Granted, Refund, Spending, Unspent } from "./protocol";

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
  private readonly budget = new Budget(this.ctx.storage.sql, () => this.clock());
  /** When the alarm that deletes an idle counter is set for, as far as this instance knows. */
  private alarmAt: number | null = null;

  /**
   * Admits `cost` requests if every one of `limits` allows it, and records them (the admit step, counters/budget.ts).
   * A hot counter's caller gets a lease beside it and gives back what its ended leases did not spend (`returned`).
   */
  consume({ limits, ...call }: Spending & { limits: Limit[] }): Promise<Granted> {
    const longest = Math.max(...limits.map((l) => l.windowSeconds));
    return this.budget.admit(call, {
      judge: () => ({ spend: limits }),
      answer: (granted) => granted,
      admitted: (granted) => this.idleAfter((granted.lease?.id ?? granted.at) + longest * 1000),
    });
  }

  /** See Budget.refund. */
  refund(call: Refund): void {
    this.budget.refund(call);
  }

  /** See Budget.cancel. */
  cancel(call: { tag: CallTag; returned?: Unspent[] }): void {
    this.budget.cancel(call);
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
    this.budget.close();
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
