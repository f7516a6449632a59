import { DurableObject } from "cloudflare:workers";
import type { Bindings } from "../env";
import { type Decision, decide, firstInWindow, type Policy } from "./window";

/**
 * Counts requests for one limited identity (a key, or a client IP), one object each. The log of admitted requests
 * lives in memory and in the object's SQLite storage, so counts survive eviction and redeploys.
 */
export class RateLimiter extends DurableObject<Bindings> {
  /** Times (ms) of admitted requests still in some window, ascending. */
  private log: number[] = [];
  /** Replaceable in tests to move time. */
  clock: () => number = Date.now;

  constructor(ctx: DurableObjectState, env: Bindings) {
    super(ctx, env);
    const sql = ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS hits (at INTEGER NOT NULL)");
    this.log = sql
      .exec<{ at: number }>("SELECT at FROM hits ORDER BY at")
      .toArray()
      .map((r) => r.at);
  }

  /** Admits one request if the policy allows it, and records it; `at` identifies the admission for a refund. */
  consume(policy: Policy): Decision & { at: number } {
    // The clock never runs backwards inside one log: equal times keep the log sorted.
    const now = Math.max(this.clock(), this.log[this.log.length - 1] ?? 0);
    this.forget(now - policy.windowSeconds * 1000);
    const decision = decide(this.log, now, policy);
    if (decision.allowed) {
      this.log.push(now);
      this.ctx.storage.sql.exec("INSERT INTO hits (at) VALUES (?)", now);
    }
    return { ...decision, at: now };
  }

  /** Gives back a request that was admitted at `at` but refused afterwards (401/403 answers spend nothing). */
  refund(at: number): void {
    const i = this.log.lastIndexOf(at);
    if (i < 0) return;
    this.log.splice(i, 1);
    this.ctx.storage.sql.exec("DELETE FROM hits WHERE rowid = (SELECT rowid FROM hits WHERE at = ? LIMIT 1)", at);
  }

  private forget(cutoff: number): void {
    const expired = firstInWindow(this.log, cutoff);
    if (expired === 0) return;
    this.log.splice(0, expired);
    this.ctx.storage.sql.exec("DELETE FROM hits WHERE at <= ?", cutoff);
  }
}
