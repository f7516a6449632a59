import type { LedgerEntry } from "../core/balance";
import type { Limit } from "../core/window";
import { type EventInput, type EventMessage, newEvent } from "../platform/db/events";
import type { Bindings } from "../platform/env";
import { log, safeError } from "../platform/log";

/** A balance falls "low" when a spend takes it to a tenth of what its last refill, opening or top-up made it. */
const LOW_SHARE = 0.1;

/**
 * What a counting object tells the account's webhook endpoints of: a key's limit refusing requests (once per limit and
 * window, not per refused request), and a balance falling low or running out. The object's step decides them with no
 * D1 read or write: the event goes straight to the queue, whose consumer writes it down and hands it on.
 */
export class Notices {
  constructor(
    private readonly ctx: DurableObjectState,
    private readonly env: Bindings,
  ) {}

  /** `rate_limit.exceeded` for each of these limits not told of in its current window. */
  limitRefused(accountId: string, subject: Record<string, unknown>, limits: readonly Limit[], retryAfter: number, now: number): void {
    const kv = this.ctx.storage.kv;
    for (const limit of limits) {
      const name = `notice:limit:${limit.name}`;
      if ((kv.get<number>(name) ?? 0) > now) continue;
      kv.put(name, now + limit.windowSeconds * 1000);
      this.send({
        accountId,
        type: "rate_limit.exceeded",
        data: { ...subject, limit: { name: limit.name, limit: limit.limit, windowSeconds: limit.windowSeconds }, retryAfter },
      });
    }
  }

  /**
   * `credits.low` when a spend takes the balance to a tenth of what its last refill, opening or top-up made it, and
   * `credits.exhausted` when one takes it to zero; leased credits count as spent until they come back.
   */
  balanceMoved(accountId: string, subject: Record<string, unknown>, entries: readonly LedgerEntry[]): void {
    const kv = this.ctx.storage.kv;
    for (const e of entries) {
      if (e.delta > 0 && (e.kind === "refill" || e.kind === "adjust")) kv.put("notice:credits-reference", e.balanceAfter);
      if (e.delta >= 0) continue;
      const before = e.balanceAfter - e.delta;
      const low = Math.floor((kv.get<number>("notice:credits-reference") ?? 0) * LOW_SHARE);
      if (before > 0 && e.balanceAfter === 0) this.send({ accountId, type: "credits.exhausted", data: { ...subject, remaining: 0 } });
      else if (before > low && e.balanceAfter <= low)
        this.send({ accountId, type: "credits.low", data: { ...subject, remaining: e.balanceAfter, threshold: low } });
    }
  }

  private send(e: EventInput): void {
    const row = newEvent(e, new Date());
    const message: EventMessage = { emit: row };
    // A notice the queue does not take is tried once more, then logged (it tells of a state, which the next crossing
    // or window tells again).
    this.ctx.waitUntil(
      this.env.EVENTS.send(message)
        .catch(() => this.env.EVENTS.send(message))
        .catch((err: unknown) => log("error", "notice_not_sent", { type: e.type, error: safeError(err) })),
    );
  }
}
