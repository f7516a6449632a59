import type { z } from "@hono/zod-openapi";
import { and, asc, isNotNull, isNull, lt, type SQL, sql } from "drizzle-orm";
import type { Principal } from "../core/principal";
import { apiKeys } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { HYGIENE_IDS, type KeyHygiene } from "./schemas";
import { activeAt, visibleTo } from "./store";

const DAY_MS = 86_400_000;
type Category = Exclude<keyof z.infer<typeof KeyHygiene>, "activeKeys">;

/**
 * What makes an active key worth a look, as SQL over the key's row. Instants are compared as text, exact for the
 * fixed-width `toISOString()` values every column holds (store.ts, activeAt).
 */
function categories(now: Date): Record<Category, SQL> {
  const before = (days: number) => new Date(now.getTime() - days * DAY_MS).toISOString();
  return {
    neverUsed: isNull(apiKeys.lastUsedAt) as SQL,
    idle90d: lt(apiKeys.lastUsedAt, before(90)),
    // A key in a rotation's grace period ends with it: only a key with no end at all lasts for ever.
    noExpiry: and(isNull(apiKeys.expiresAt), isNull(apiKeys.revokedAt)) as SQL,
    olderThanYear: lt(apiKeys.createdAt, before(365)),
    leakedActive: isNotNull(apiKeys.leakedAt),
  };
}

/**
 * The caller's active keys (an admin's: the account's; a member's: their own) that are never used, idle for 90 days,
 * without expiry, older than a year, or reported leaked: each category's exact count and the ids of its oldest keys,
 * at most HYGIENE_IDS, in one D1 round trip.
 */
export async function keyHygiene(deps: Deps, p: Principal): Promise<z.infer<typeof KeyHygiene>> {
  const now = deps.now();
  const active = and(visibleTo(p), activeAt(now.toISOString()));
  const wanted = categories(now);
  const names = Object.keys(wanted) as Category[];
  const d = deps.db;
  const counts = d
    .select({
      activeKeys: sql<number>`count(*)`,
      ...Object.fromEntries(names.map((n) => [n, sql<number>`coalesce(sum(CASE WHEN ${wanted[n]} THEN 1 ELSE 0 END), 0)`])),
    })
    .from(apiKeys)
    .where(active);
  const ids = names.map((n) =>
    d
      .select({ id: apiKeys.id })
      .from(apiKeys)
      .where(and(active, wanted[n]))
      .orderBy(asc(apiKeys.createdAt), asc(apiKeys.id))
      .limit(HYGIENE_IDS),
  );
  const [[totals], ...lists] = await d.batch([counts, ...ids]);
  const row = (totals ?? {}) as Record<string, number>;
  return {
    activeKeys: Number(row.activeKeys ?? 0),
    ...(Object.fromEntries(
      names.map((n, i) => [n, { count: Number(row[n] ?? 0), keyIds: (lists[i] as { id: string }[]).map((r) => r.id) }]),
    ) as Record<Category, { count: number; keyIds: string[] }>),
  };
}
