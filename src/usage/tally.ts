import { USAGE_HISTORY_DAYS } from "../counters/rollup";
import { hourOf, type UsageHour } from "./service";

/** How often at most a key's object sends what it counted: usage costs no write anywhere per request. */
export const FLUSH_INTERVAL_MS = 60_000;

/** One hour's counts as they stand, and the revision they reached: a copy sent later always carries a higher one. */
export type RevisedHour = UsageHour & { rev: number };

/**
 * A key's requests per hour, kept in its object's own storage as they are decided (so a restart loses none): the key's
 * usage history, read from here, and sent on (the object's alarm) for its account's rollup as each hour's counts as
 * they now stand, so a copy delivered twice, or after a later one, changes nothing. Admissions count when granted,
 * leased ones included; what comes back unspent or refunded is taken off the hour it was counted in. A refused request
 * (429) counts once as rate limited. Credits spent count the same way, beside the requests.
 */
export class UsageHistory {
  constructor(private readonly sql: SqlStorage) {
    sql.exec(
      `CREATE TABLE IF NOT EXISTS usage_hours (hour TEXT PRIMARY KEY, admitted INTEGER NOT NULL, rate_limited INTEGER NOT NULL,
         credits_spent INTEGER NOT NULL, rev INTEGER NOT NULL, sent_rev INTEGER NOT NULL DEFAULT 0)`,
    );
    // Counts an object made while usage went to D1 (a table of what was not written yet) are counted on here.
    const legacy = sql.exec<{ name: string }>("PRAGMA table_info(usage_pending)").toArray();
    if (legacy.length > 0) {
      const credits = legacy.some((c) => c.name === "credits_spent") ? "credits_spent" : "0";
      sql.exec(
        `INSERT INTO usage_hours (hour, admitted, rate_limited, credits_spent, rev) SELECT hour, admitted, rate_limited, ${credits}, 1
         FROM usage_pending WHERE true ON CONFLICT (hour) DO NOTHING`,
      );
      sql.exec("DROP TABLE usage_pending");
    }
  }

  /** Adds to the hour `at` falls in: requests admitted, refused by a rate limit, and the credits they spent. */
  count(at: number, admitted: number, rateLimited: number, credits = 0): void {
    if (admitted === 0 && rateLimited === 0 && credits === 0) return;
    this.sql.exec(
      `INSERT INTO usage_hours (hour, admitted, rate_limited, credits_spent, rev) VALUES (?, ?, ?, ?, 1)
       ON CONFLICT (hour) DO UPDATE SET admitted = admitted + excluded.admitted, rate_limited = rate_limited + excluded.rate_limited,
         credits_spent = credits_spent + excluded.credits_spent, rev = rev + 1`,
      hourOf(at),
      admitted,
      rateLimited,
      credits,
    );
  }

  /** The hours with requests in [from, to) (`from` an hour's start), oldest first. */
  hours(from: string, to: string): UsageHour[] {
    return this.sql.exec<Row>("SELECT * FROM usage_hours WHERE hour >= ? AND hour < ? ORDER BY hour", from, to).toArray().map(view);
  }

  /** The hours that changed since they were last sent, as they stand now. */
  unsent(): RevisedHour[] {
    return this.sql
      .exec<Row>("SELECT * FROM usage_hours WHERE rev > sent_rev ORDER BY hour")
      .toArray()
      .map((r) => ({ ...view(r), rev: r.rev }));
  }

  /** Marks the hours sent as they were: an hour counted on while they were on their way stays to be sent. */
  sent(hours: readonly RevisedHour[]): void {
    for (const h of hours) this.sql.exec("UPDATE usage_hours SET sent_rev = max(sent_rev, ?) WHERE hour = ?", h.rev, h.hour);
  }

  /** Forgets the hours older than USAGE_HISTORY_DAYS that were sent. */
  prune(now: number): void {
    this.sql.exec("DELETE FROM usage_hours WHERE hour < ? AND rev = sent_rev", hourOf(now - USAGE_HISTORY_DAYS * 86_400_000));
  }
}

type Row = { hour: string; admitted: number; rate_limited: number; credits_spent: number; rev: number };

const view = (r: Row): UsageHour => ({ hour: r.hour, admitted: r.admitted, rateLimited: r.rate_limited, creditsSpent: r.credits_spent });
