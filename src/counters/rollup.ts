/** How long usage hours are kept, in each key's object and its account's: longer than the widest range answered (31 days). */
export const USAGE_HISTORY_DAYS = 35;

/** One hour of one key's requests as its object last sent it, with that copy's revision (`rev`, per key and hour). */
export type KeyHour = { keyId: string; hour: string; admitted: number; rateLimited: number; creditsSpent: number; rev: number };
export type HourTotal = { hour: string; admitted: number; rateLimited: number; creditsSpent: number };
export type KeyTotal = { keyId: string; admitted: number; rateLimited: number; creditsSpent: number };

/**
 * An account's usage, in its own object's storage: each key's hours as the key's object last sent them. A copy
 * replaces what is kept only when its revision is higher, so a batch delivered twice, or overtaken by a later one,
 * changes nothing, and the rollup is exactly what the keys counted once every copy has arrived. No D1 row per key and
 * hour: the history is bounded by the account's own keys and USAGE_HISTORY_DAYS.
 */
export class UsageRollup {
  private ready = false;

  constructor(private readonly sql: SqlStorage) {}

  record(hours: readonly KeyHour[], now: number): void {
    this.table();
    for (const h of hours)
      this.sql.exec(
        `INSERT INTO key_hours (key_id, hour, admitted, rate_limited, credits_spent, rev) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (key_id, hour) DO UPDATE SET admitted = excluded.admitted, rate_limited = excluded.rate_limited,
           credits_spent = excluded.credits_spent, rev = excluded.rev
         WHERE excluded.rev > key_hours.rev`,
        h.keyId,
        h.hour,
        h.admitted,
        h.rateLimited,
        h.creditsSpent,
        h.rev,
      );
    const oldest = new Date(now - USAGE_HISTORY_DAYS * 86_400_000).toISOString();
    this.sql.exec("DELETE FROM key_hours WHERE hour < ?", oldest);
  }

  /** The hours in [from, to) with requests, summed over the keys (`keyIds`: only those; null: all of them). */
  series(from: string, to: string, keyIds: readonly string[] | null): HourTotal[] {
    this.table();
    return this.sql
      .exec<{ hour: string } & Sums>(
        `SELECT hour, ${SUMS} FROM key_hours WHERE hour >= ? AND hour < ? ${ONLY} GROUP BY hour ORDER BY hour`,
        from,
        to,
        only(keyIds),
      )
      .toArray()
      .map((r) => ({ hour: r.hour, ...sums(r) }));
  }

  /** Each key's totals over [from, to), for the keys with requests then (`keyIds`: only those; null: all of them). */
  totals(from: string, to: string, keyIds: readonly string[] | null): KeyTotal[] {
    this.table();
    return this.sql
      .exec<{ key_id: string } & Sums>(
        `SELECT key_id, ${SUMS} FROM key_hours WHERE hour >= ? AND hour < ? ${ONLY} GROUP BY key_id ORDER BY key_id`,
        from,
        to,
        only(keyIds),
      )
      .toArray()
      .map((r) => ({ keyId: r.key_id, ...sums(r) }));
  }

  private table(): void {
    if (this.ready) return;
    this.sql.exec(
      `CREATE TABLE IF NOT EXISTS key_hours (key_id TEXT NOT NULL, hour TEXT NOT NULL, admitted INTEGER NOT NULL,
         rate_limited INTEGER NOT NULL, credits_spent INTEGER NOT NULL, rev INTEGER NOT NULL, PRIMARY KEY (key_id, hour))`,
    );
    this.sql.exec("CREATE INDEX IF NOT EXISTS key_hours_hour ON key_hours (hour)");
    this.ready = true;
  }
}

type Sums = { admitted: number; rate_limited: number; credits_spent: number };
const SUMS = "sum(admitted) AS admitted, sum(rate_limited) AS rate_limited, sum(credits_spent) AS credits_spent";
/** The third parameter: a JSON array of key ids to keep, or null for all. */
const ONLY = "AND (?3 IS NULL OR key_id IN (SELECT value FROM json_each(?3)))";
const only = (keyIds: readonly string[] | null) => (keyIds === null ? null : JSON.stringify(keyIds));
const sums = (r: Sums) => ({ admitted: r.admitted, rateLimited: r.rate_limited, creditsSpent: r.credits_spent });
