import { and, eq, gte, inArray, lt, sql } from "drizzle-orm";
import { db } from "../platform/db/client";
import { apiKeys, keyUsage } from "../platform/db/schema";

/** One hour of a key's (or an account's) requests: admitted, and refused by the rate limit. */
export type UsageHour = { hour: string; admitted: number; rateLimited: number };
export type KeyTotal = { keyId: string; admitted: number; rateLimited: number };

/** The hour an instant falls in, as stored: `2026-11-23T14:00:00.000Z`. */
export function hourOf(ms: number): string {
  return new Date(Math.floor(ms / 3_600_000) * 3_600_000).toISOString();
}

/** Every hour from `from` up to (not including) `to`, the hours without requests at zero, so a chart has no gaps. */
function filled(from: string, to: string, rows: UsageHour[]): UsageHour[] {
  const byHour = new Map(rows.map((r) => [r.hour, r]));
  const out: UsageHour[] = [];
  for (let t = Date.parse(hourOf(Date.parse(from))); t < Date.parse(to); t += 3_600_000) {
    const hour = new Date(t).toISOString();
    out.push(byHour.get(hour) ?? { hour, admitted: 0, rateLimited: 0 });
  }
  return out;
}

/** One key's hours in [from, to). */
export async function keyUsageSeries(d1: D1Database, accountId: string, keyId: string, from: string, to: string): Promise<UsageHour[]> {
  const rows = await db(d1)
    .select({ hour: keyUsage.hour, admitted: keyUsage.admitted, rateLimited: keyUsage.rateLimited })
    .from(keyUsage)
    .where(
      and(
        eq(keyUsage.accountId, accountId),
        eq(keyUsage.keyId, keyId),
        gte(keyUsage.hour, hourOf(Date.parse(from))),
        lt(keyUsage.hour, to),
      ),
    )
    .orderBy(keyUsage.hour);
  return filled(from, to, rows);
}

const SUMS = { admitted: sql<number>`sum(${keyUsage.admitted})`, rateLimited: sql<number>`sum(${keyUsage.rateLimited})` };

/**
 * The account's hours in [from, to), and each key's totals over them: two reads, whatever the number of keys. With
 * `ownerId` (a member), only the keys that user owns.
 */
export async function accountUsage(
  d1: D1Database,
  accountId: string,
  from: string,
  to: string,
  ownerId: string | null = null,
): Promise<{ series: UsageHour[]; keys: KeyTotal[] }> {
  const d = db(d1);
  const owned =
    ownerId === null ? undefined : inArray(keyUsage.keyId, d.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.ownerId, ownerId)));
  const inRange = and(eq(keyUsage.accountId, accountId), gte(keyUsage.hour, hourOf(Date.parse(from))), lt(keyUsage.hour, to), owned);
  const [hours, keys] = await Promise.all([
    d
      .select({ hour: keyUsage.hour, ...SUMS })
      .from(keyUsage)
      .where(inRange)
      .groupBy(keyUsage.hour)
      .orderBy(keyUsage.hour),
    d
      .select({ keyId: keyUsage.keyId, ...SUMS })
      .from(keyUsage)
      .where(inRange)
      .groupBy(keyUsage.keyId),
  ]);
  return { series: filled(from, to, hours), keys };
}

/**
 * Adds counts to a key's hours (the key's object flushes what it counted, at most once a minute). One statement per
 * hour, adding to what is there, so a flush repeated after a failure is the only way to count twice, and a flush
 * never loses what another wrote.
 */
export function addUsage(d1: D1Database, keyId: string, accountId: string, hours: UsageHour[]): D1PreparedStatement[] {
  return hours.map((h) =>
    d1
      .prepare(
        `INSERT INTO key_usage (key_id, account_id, hour, admitted, rate_limited) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (key_id, hour) DO UPDATE SET admitted = admitted + excluded.admitted, rate_limited = rate_limited + excluded.rate_limited`,
      )
      .bind(keyId, accountId, h.hour, h.admitted, h.rateLimited),
  );
}
