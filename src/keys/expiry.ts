import { and, gt, isNull, lte, or, sql } from "drizzle-orm";
import { newEvent, publishEvents } from "../platform/db/events";
import { apiKeys, webhookEvents } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { keyEvent } from "./events";

const DAY_MS = 86_400_000;
/** How many keys one sweep tells of, per notice: the next minute's sweep takes the rest. */
const SWEEP_KEYS = 200;

/**
 * The notices before and at a key's expiry, from the cron's sweep: `api_key.expiring` 7 days and 1 day before (a key
 * made with less left gets the ones still ahead of it), and `api_key.expired` once it has passed (up to a week late,
 * should the sweep have stopped). Each notice's event id is made from the key's id, so a notice is written once
 * however many sweeps see the key; only accounts with an enabled endpoint are looked at.
 */
export async function announceExpiries(deps: Deps): Promise<number> {
  const now = deps.now();
  const at = (ms: number) => new Date(now.getTime() + ms).toISOString();
  const notices = [
    { name: "expiring-7d", type: "api_key.expiring", from: at(DAY_MS), to: at(7 * DAY_MS), within: "7 days" },
    { name: "expiring-1d", type: "api_key.expiring", from: at(0), to: at(DAY_MS), within: "1 day" },
    { name: "expired", type: "api_key.expired", from: at(-7 * DAY_MS), to: at(0), within: null },
  ];
  const written: string[] = [];
  for (const notice of notices) {
    const keys = await deps.db
      .select()
      .from(apiKeys)
      .where(
        and(
          gt(apiKeys.expiresAt, notice.from),
          lte(apiKeys.expiresAt, notice.to),
          // A key revoked before it expired is not told of again.
          or(isNull(apiKeys.revokedAt), sql`${apiKeys.revokedAt} > ${apiKeys.expiresAt}`),
          // Asked of each key that expires in the window (the index on expires_at finds them), not "every key of
          // every account with an endpoint", which grows with the keys that never expire.
          sql`EXISTS (SELECT 1 FROM webhooks w WHERE w.account_id = ${apiKeys.accountId} AND w.disabled_at IS NULL)`,
          sql`NOT EXISTS (SELECT 1 FROM webhook_events e WHERE e.id = 'msg_' || ${notice.name} || '_' || ${apiKeys.id})`,
        ),
      )
      .limit(SWEEP_KEYS);
    for (const key of keys) {
      const event = {
        ...newEvent(
          {
            accountId: key.accountId,
            type: notice.type,
            data: { key: keyEvent(key), expiresAt: key.expiresAt, ...(notice.within ? { within: notice.within } : {}) },
          },
          now,
        ),
        id: `msg_${notice.name}_${key.id}`,
      };
      const inserted = await deps.db.insert(webhookEvents).values(event).onConflictDoNothing().returning({ id: webhookEvents.id });
      if (inserted[0]) written.push(event.id);
    }
  }
  await publishEvents(deps, written);
  return written.length;
}
