import { type CountedHour, hourOf, type UsageHour } from "./service";

/** How often at most a key's object writes its counts to D1: usage costs no D1 write per request. */
export const FLUSH_INTERVAL_MS = 60_000;

/**
 * A key's requests per hour, counted in its object's own storage as they are decided (so a restart loses none) and
 * written to D1 by the object's alarm. Admissions count when granted, leased ones included; what comes back unspent or
 * refunded is taken off the hour it was counted in. A refused request (429) counts once as rate limited. Credits spent
 * count the same way, beside the requests.
 */
export class UsageTally {
  constructor(private readonly sql: SqlStorage) {
    sql.exec(
      `CREATE TABLE IF NOT EXISTS usage_pending (hour TEXT PRIMARY KEY, admitted INTEGER NOT NULL, rate_limited INTEGER NOT NULL,
         credits_spent INTEGER NOT NULL DEFAULT 0)`,
    );
    // Objects that counted before credits existed keep their table: it gains the column.
    const columns = sql.exec<{ name: string }>("PRAGMA table_info(usage_pending)").toArray();
    if (!columns.some((c) => c.name === "credits_spent"))
      sql.exec("ALTER TABLE usage_pending ADD COLUMN credits_spent INTEGER NOT NULL DEFAULT 0");
  }

  /** Adds to the hour `at` falls in: requests admitted, refused by a rate limit, and the credits they spent. */
  count(at: number, admitted: number, rateLimited: number, credits = 0): void {
    if (admitted === 0 && rateLimited === 0 && credits === 0) return;
    this.sql.exec(
      `INSERT INTO usage_pending (hour, admitted, rate_limited, credits_spent) VALUES (?, ?, ?, ?)
       ON CONFLICT (hour) DO UPDATE SET admitted = admitted + excluded.admitted, rate_limited = rate_limited + excluded.rate_limited,
         credits_spent = credits_spent + excluded.credits_spent`,
      hourOf(at),
      admitted,
      rateLimited,
      credits,
    );
  }

  /** What is counted and not yet written to D1. */
  pending(): UsageHour[] {
    return this.sql
      .exec<{ hour: string; admitted: number; rate_limited: number; credits_spent: number }>(
        "SELECT hour, admitted, rate_limited, credits_spent FROM usage_pending ORDER BY hour",
      )
      .toArray()
      .map((r) => ({ hour: r.hour, admitted: r.admitted, rateLimited: r.rate_limited, creditsSpent: r.credits_spent }));
  }

  /** Takes what was written off what is pending (counts made while the write ran stay for the next one). */
  written(hours: CountedHour[]): void {
    for (const h of hours) {
      this.sql.exec(
        "UPDATE usage_pending SET admitted = admitted - ?, rate_limited = rate_limited - ?, credits_spent = credits_spent - ? WHERE hour = ?",
        h.admitted,
        h.rateLimited,
        h.creditsSpent ?? 0,
        h.hour,
      );
    }
    this.sql.exec("DELETE FROM usage_pending WHERE admitted = 0 AND rate_limited = 0 AND credits_spent = 0");
  }
}
