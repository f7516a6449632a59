import type { Principal } from "../core/principal";
import type { Deps } from "../platform/deps";
import { type Hours, hourTotals, type KeyTotal, keyHours, keyTotals, poolHours, type UsageHour } from "./store";

export type { KeyTotal, UsageHour };

/** What a key's object counted in an hour, as it writes it (counts made before credits existed carry none). */
export type CountedHour = Omit<UsageHour, "creditsSpent"> & { creditsSpent?: number };

/** The hour an instant falls in, as stored: `2026-11-23T14:00:00.000Z`. */
export function hourOf(ms: number): string {
  return new Date(Math.floor(ms / 3_600_000) * 3_600_000).toISOString();
}

/** A range as asked (`?from=&to=`) in stored hours: from the hour `from` falls in, up to `to`. */
function hoursOf({ from, to }: { from: string; to: string }): Hours {
  return { from: hourOf(Date.parse(from)), to };
}

/** Every hour from `from` up to (not including) `to`, the hours without requests at zero, so a chart has no gaps. */
function filled(from: string, to: string, rows: UsageHour[]): UsageHour[] {
  const byHour = new Map(rows.map((r) => [r.hour, r]));
  const out: UsageHour[] = [];
  for (let t = Date.parse(hourOf(Date.parse(from))); t < Date.parse(to); t += 3_600_000) {
    const hour = new Date(t).toISOString();
    const found = byHour.get(hour);
    const { admitted, rateLimited, creditsSpent } = found ?? { admitted: 0, rateLimited: 0, creditsSpent: 0 };
    out.push({ hour, admitted, rateLimited, creditsSpent });
  }
  return out;
}

/**
 * The account's hours in [from, to), and each key's totals over them, as `p` may see them (a member: their own keys):
 * two reads (three for an admin: the pool's spends too), whatever the number of keys.
 */
export async function accountUsage(
  deps: Deps,
  p: Principal,
  range: { from: string; to: string },
): Promise<{ series: UsageHour[]; keys: KeyTotal[] }> {
  const hours = hoursOf(range);
  // The pool is the account's, not a member's: an admin's series counts what it spent beside the keys' own credits.
  const [series, keys, pool] = await Promise.all([
    hourTotals(deps.db, p, hours),
    keyTotals(deps.db, p, hours),
    p.role === "admin" ? poolHours(deps.db, p.accountId, hours) : [],
  ]);
  const filledSeries = filled(range.from, range.to, series);
  const spent = new Map(pool.map((h) => [h.hour, h.creditsSpent]));
  return { series: filledSeries.map((h) => ({ ...h, creditsSpent: h.creditsSpent + (spent.get(h.hour) ?? 0) })), keys };
}

/** The hours in [from, to) of each of these keys that `p` may see, in one read, whatever their number. */
export async function keysUsage(
  deps: Deps,
  p: Principal,
  keyIds: string[],
  range: { from: string; to: string },
): Promise<Map<string, UsageHour[]>> {
  const rows = keyIds.length === 0 ? [] : await keyHours(deps.db, p, keyIds, hoursOf(range));
  return new Map(
    keyIds.map((id) => [
      id,
      filled(
        range.from,
        range.to,
        rows.filter((r) => r.keyId === id),
      ),
    ]),
  );
}

/**
 * Adds counts to a key's hours (the key's object flushes what it counted, at most once a minute). One statement per
 * hour, adding to what is there, so a flush repeated after a failure is the only way to count twice, and a flush
 * never loses what another wrote.
 */
export function addUsage(d1: D1Database, keyId: string, accountId: string, hours: CountedHour[]): D1PreparedStatement[] {
  return hours.map((h) =>
    d1
      .prepare(
        `INSERT INTO key_usage (key_id, account_id, hour, admitted, rate_limited, credits_spent) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (key_id, hour) DO UPDATE SET admitted = admitted + excluded.admitted, rate_limited = rate_limited + excluded.rate_limited,
           credits_spent = credits_spent + excluded.credits_spent`,
      )
      .bind(keyId, accountId, h.hour, h.admitted, h.rateLimited, h.creditsSpent ?? 0),
  );
}
