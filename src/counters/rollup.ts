/** How long usage hours are kept, in each key's object and its account's: longer than the widest range answered (31 days). */
export const USAGE_HISTORY_DAYS = 35;

/** One hour of one key's requests as its object last sent it, with that copy's revision (`rev`, per key and hour). */
export type KeyHour = { keyId: string; hour: string; admitted: number; rateLimited: number; creditsSpent: number; rev: number };
export type HourTotal = { hour: string; admitted: number; rateLimited: number; creditsSpent: number };
export type KeyTotal = { keyId: string; admitted: number; rateLimited: number; creditsSpent: number };

const DAY_MS = 86_400_000;

/**
 * An account's usage, in its own object's storage: each key's hours as the key's object last sent them. A copy
 * replaces what is kept only when its revision is higher, so a batch delivered twice, or overtaken by a later one,
 * changes nothing, and the rollup is exactly what the keys counted once every copy has arrived. No D1 row per key and
 * hour: the history is bounded by the account's own keys and USAGE_HISTORY_DAYS.
 *
 * Beside each key's hours it keeps two sums, moved by what each copy changed in the same step: the account's hours
 * (`hour_totals`) and each key's days (`key_days`). A range's series then reads one row per hour, and its keys' totals
 * one row per key and whole day (plus the hours of the partial days at its ends), however many keys were busy.
 */
export class UsageRollup {
  private ready = false;

  constructor(private readonly sql: SqlStorage) {}

  record(hours: readonly KeyHour[], now: number): void {
    this.table();
    for (const h of hours) {
      const kept = this.sql
        .exec<Sums & { rev: number }>(
          "SELECT admitted, rate_limited, credits_spent, rev FROM key_hours WHERE key_id = ? AND hour = ?",
          h.keyId,
          h.hour,
        )
        .toArray()[0];
      if (kept && kept.rev >= h.rev) continue;
      const delta = [
        h.admitted - (kept?.admitted ?? 0),
        h.rateLimited - (kept?.rate_limited ?? 0),
        h.creditsSpent - (kept?.credits_spent ?? 0),
      ];
      this.sql.exec(
        `INSERT INTO key_hours (key_id, hour, admitted, rate_limited, credits_spent, rev) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (key_id, hour) DO UPDATE SET admitted = excluded.admitted, rate_limited = excluded.rate_limited,
           credits_spent = excluded.credits_spent, rev = excluded.rev`,
        h.keyId,
        h.hour,
        h.admitted,
        h.rateLimited,
        h.creditsSpent,
        h.rev,
      );
      this.sql.exec(
        `INSERT INTO hour_totals (hour, ${COLUMNS}) VALUES (?, ?, ?, ?) ON CONFLICT (hour) DO UPDATE SET ${ADD}`,
        h.hour,
        ...delta,
      );
      this.sql.exec(
        `INSERT INTO key_days (key_id, day, ${COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id, day) DO UPDATE SET ${ADD}`,
        h.keyId,
        dayOf(h.hour),
        ...delta,
      );
    }
    const oldest = new Date(now - USAGE_HISTORY_DAYS * DAY_MS).toISOString();
    this.sql.exec("DELETE FROM key_hours WHERE hour < ?", oldest);
    this.sql.exec("DELETE FROM hour_totals WHERE hour < ?", oldest);
    this.sql.exec("DELETE FROM key_days WHERE day < ?", dayOf(oldest));
  }

  /** The hours in [from, to) with requests, summed over the keys (`keyIds`: only those; null: all of them). */
  series(from: string, to: string, keyIds: readonly string[] | null): HourTotal[] {
    this.table();
    const rows =
      keyIds === null
        ? this.sql.exec<{ hour: string } & Sums>(
            `SELECT hour, ${COLUMNS} FROM hour_totals WHERE hour >= ? AND hour < ? ORDER BY hour`,
            from,
            to,
          )
        : this.sql.exec<{ hour: string } & Sums>(
            `SELECT hour, ${SUMS} FROM key_hours WHERE hour >= ? AND hour < ? AND key_id IN (SELECT value FROM json_each(?)) GROUP BY hour ORDER BY hour`,
            from,
            to,
            JSON.stringify(keyIds),
          );
    return rows.toArray().map((r) => ({ hour: r.hour, ...sums(r) }));
  }

  /**
   * Each key's totals over [from, to), for the keys with requests then (`keyIds`: only those; null: all of them): the
   * whole days from `key_days`, the hours of the partial days at either end from `key_hours`.
   */
  totals(from: string, to: string, keyIds: readonly string[] | null): KeyTotal[] {
    this.table();
    const firstDay = dayOf(from) === from ? from : nextDay(from);
    const endDay = dayOf(to);
    const only = keyIds === null ? null : JSON.stringify(keyIds);
    const rows =
      firstDay < endDay
        ? this.sql.exec<{ key_id: string } & Sums>(
            `SELECT key_id, ${SUMS} FROM (
               SELECT key_id, ${COLUMNS} FROM key_days WHERE day >= ?1 AND day < ?2
               UNION ALL SELECT key_id, ${COLUMNS} FROM key_hours WHERE (hour >= ?3 AND hour < ?1) OR (hour >= ?2 AND hour < ?4)
             ) WHERE ?5 IS NULL OR key_id IN (SELECT value FROM json_each(?5)) GROUP BY key_id ORDER BY key_id`,
            firstDay,
            endDay,
            from,
            to,
            only,
          )
        : this.sql.exec<{ key_id: string } & Sums>(
            `SELECT key_id, ${SUMS} FROM key_hours WHERE hour >= ?1 AND hour < ?2
               AND (?3 IS NULL OR key_id IN (SELECT value FROM json_each(?3))) GROUP BY key_id ORDER BY key_id`,
            from,
            to,
            only,
          );
    return rows.toArray().map((r) => ({ keyId: r.key_id, ...sums(r) }));
  }

  private table(): void {
    if (this.ready) return;
    this.sql.exec(
      `CREATE TABLE IF NOT EXISTS key_hours (key_id TEXT NOT NULL, hour TEXT NOT NULL, admitted INTEGER NOT NULL,
         rate_limited INTEGER NOT NULL, credits_spent INTEGER NOT NULL, rev INTEGER NOT NULL, PRIMARY KEY (key_id, hour))`,
    );
    this.sql.exec("CREATE INDEX IF NOT EXISTS key_hours_hour ON key_hours (hour)");
    const summed = this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM sqlite_master WHERE name = 'hour_totals'").one().n > 0;
    this.sql.exec(
      `CREATE TABLE IF NOT EXISTS hour_totals (hour TEXT PRIMARY KEY, admitted INTEGER NOT NULL, rate_limited INTEGER NOT NULL,
         credits_spent INTEGER NOT NULL)`,
    );
    this.sql.exec(
      `CREATE TABLE IF NOT EXISTS key_days (key_id TEXT NOT NULL, day TEXT NOT NULL, admitted INTEGER NOT NULL,
         rate_limited INTEGER NOT NULL, credits_spent INTEGER NOT NULL, PRIMARY KEY (key_id, day))`,
    );
    this.sql.exec("CREATE INDEX IF NOT EXISTS key_days_day ON key_days (day)");
    // A rollup kept before its sums were: they are summed once from its hours.
    if (!summed) {
      this.sql.exec(`INSERT INTO hour_totals (hour, ${COLUMNS}) SELECT hour, ${SUMS} FROM key_hours GROUP BY hour`);
      this.sql.exec(
        `INSERT INTO key_days (key_id, day, ${COLUMNS}) SELECT key_id, substr(hour, 1, 10) || 'T00:00:00.000Z', ${SUMS} FROM key_hours GROUP BY 1, 2`,
      );
    }
    this.ready = true;
  }
}

type Sums = { admitted: number; rate_limited: number; credits_spent: number };
const COLUMNS = "admitted, rate_limited, credits_spent";
const SUMS = "sum(admitted) AS admitted, sum(rate_limited) AS rate_limited, sum(credits_spent) AS credits_spent";
const ADD =
  "admitted = admitted + excluded.admitted, rate_limited = rate_limited + excluded.rate_limited, credits_spent = credits_spent + excluded.credits_spent";
const sums = (r: Sums) => ({ admitted: r.admitted, rateLimited: r.rate_limited, creditsSpent: r.credits_spent });
/** The start of the UTC day an ISO instant (as stored) falls in. */
const dayOf = (iso: string) => `${iso.slice(0, 10)}T00:00:00.000Z`;
const nextDay = (iso: string) => new Date(Date.parse(dayOf(iso)) + DAY_MS).toISOString();
