import { and, eq, gte, inArray, lt, sql } from "drizzle-orm";
import type { Principal } from "../core/principal";
import type { Db } from "../platform/db/client";
import { apiKeys, creditLedger } from "../platform/db/schema";

/** One hour of a key's (or an account's) requests: admitted, refused by the rate limit, and the credits they spent. */
export type UsageHour = { hour: string; admitted: number; rateLimited: number; creditsSpent: number };
export type KeyTotal = { keyId: string; admitted: number; rateLimited: number; creditsSpent: number };
/** A range of whole hours, as stored: `from` is an hour's start, `to` excluded. */
export type Hours = { from: string; to: string };

/** The ids of the keys a person owns now: a member's usage is theirs. */
export async function ownKeyIds(d: Db, p: Principal): Promise<string[]> {
  const owned = await d.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.ownerId, p.userId));
  return owned.map((k) => k.id);
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
