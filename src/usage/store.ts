import { and, eq, gte, inArray, lt, sql } from "drizzle-orm";
import type { Principal } from "../core/principal";
import type { Db } from "../platform/db/client";
import { creditLedger, keyUsage } from "../platform/db/schema";

/** One hour of a key's (or an account's) requests: admitted, refused by the rate limit, and the credits they spent. */
export type UsageHour = { hour: string; admitted: number; rateLimited: number; creditsSpent: number };
export type KeyTotal = { keyId: string; admitted: number; rateLimited: number; creditsSpent: number };
/** A range of whole hours, as stored: `from` is an hour's start, `to` excluded. */
export type Hours = { from: string; to: string };

/**
 * SQL: the counts `p` may see: every key's of the account for an admin, a member's own keys' for a member (the keys
 * the member owns now, read in the same statement).
 */
export function visibleTo(p: Principal) {
  return and(
    eq(keyUsage.accountId, p.accountId),
    p.role === "admin" ? undefined : sql`${keyUsage.keyId} IN (SELECT id FROM api_keys WHERE owner_id = ${p.userId})`,
  );
}

const SUMS = {
  admitted: sql<number>`sum(${keyUsage.admitted})`,
  rateLimited: sql<number>`sum(${keyUsage.rateLimited})`,
  creditsSpent: sql<number>`sum(${keyUsage.creditsSpent})`,
};

const within = (p: Principal, { from, to }: Hours) => and(visibleTo(p), gte(keyUsage.hour, from), lt(keyUsage.hour, to));

/** The hours with requests, summed over the keys `p` may see. */
export function hourTotals(d: Db, p: Principal, hours: Hours): Promise<UsageHour[]> {
  return d
    .select({ hour: keyUsage.hour, ...SUMS })
    .from(keyUsage)
    .where(within(p, hours))
    .groupBy(keyUsage.hour)
    .orderBy(keyUsage.hour);
}

/** Each key's totals over the hours, for the keys `p` may see. */
export function keyTotals(d: Db, p: Principal, hours: Hours): Promise<KeyTotal[]> {
  return d
    .select({ keyId: keyUsage.keyId, ...SUMS })
    .from(keyUsage)
    .where(within(p, hours))
    .groupBy(keyUsage.keyId);
}

/** The hours with requests of each of these keys (those `p` may see), in one read. */
export function keyHours(d: Db, p: Principal, keyIds: string[], hours: Hours): Promise<(UsageHour & { keyId: string })[]> {
  return d
    .select({
      keyId: keyUsage.keyId,
      hour: keyUsage.hour,
      admitted: keyUsage.admitted,
      rateLimited: keyUsage.rateLimited,
      creditsSpent: keyUsage.creditsSpent,
    })
    .from(keyUsage)
    .where(and(within(p, hours), inArray(keyUsage.keyId, keyIds)))
    .orderBy(keyUsage.hour);
}

/**
 * The credits the account's pool spent in each hour (its ledger's spends, reserves and settles, less what came back),
 * once the ledger has them; hours without any are absent.
 */
export function poolHours(d: Db, accountId: string, { from, to }: Hours): Promise<{ hour: string; creditsSpent: number }[]> {
  const hour = sql<string>`substr(${creditLedger.at}, 1, 13) || ':00:00.000Z'`;
  return d
    .select({ hour, creditsSpent: sql<number>`-sum(${creditLedger.delta})` })
    .from(creditLedger)
    .where(
      and(
        eq(creditLedger.accountId, accountId),
        sql`${creditLedger.keyId} IS NULL`,
        inArray(creditLedger.kind, ["spend", "refund", "reserve", "settle"]),
        gte(creditLedger.at, from),
        lt(creditLedger.at, to),
      ),
    )
    .groupBy(hour);
}
