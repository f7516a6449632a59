import type { AuthMethod } from "../core/principal";
import type { KeyHour } from "../counters/rollup";
import type { Deps } from "../platform/deps";
import { log, safeError } from "../platform/log";
import type { RevisedHour } from "./tally";

/**
 * What a key's object sends at most once per FLUSH_INTERVAL_MS: the hours that changed, each as it now stands (with its
 * revision), and the key's last use when it moved. Everything in it is absolute, so a copy delivered twice, or after
 * a later one, counts once.
 */
export type UsageMessage = {
  usage: { keyId: string; accountId: string; hours: RevisedHour[]; lastUse?: { at: string; method: AuthMethod } };
};

export function isUsageMessage(body: unknown): body is UsageMessage {
  return typeof body === "object" && body !== null && "usage" in body;
}

/**
 * The usage queue's consumer. A batch costs one call to each account's object it names (the keys' hours, for the
 * account's rollup) and one D1 statement for the last uses of all its keys, whatever their number: D1's writes grow
 * with batches, not with keys or requests. Messages whose account's object or whose D1 write failed are retried (the
 * queue delivers them again); the rest are done.
 */
export async function consumeUsage(deps: Deps, messages: readonly Message<UsageMessage>[]): Promise<void> {
  const byAccount = Map.groupBy(messages, (m) => m.body.usage.accountId);
  await Promise.all(
    [...byAccount].map(async ([accountId, sent]) => {
      const hours: KeyHour[] = sent.flatMap((m) => m.body.usage.hours.map((h) => ({ keyId: m.body.usage.keyId, ...h })));
      if (hours.length === 0) return;
      try {
        await deps.env.ACCOUNTS.getByName(`account:${accountId}`).recordUsage(hours);
      } catch (err) {
        log("error", "usage_rollup_failed", { accountId, error: safeError(err) });
        for (const m of sent) m.retry();
      }
    }),
  );
  const used = messages.filter((m) => m.body.usage.lastUse !== undefined);
  if (used.length === 0) return;
  const uses = used.map((m) => ({ id: m.body.usage.keyId, at: m.body.usage.lastUse?.at, method: m.body.usage.lastUse?.method }));
  try {
    // One statement for the whole batch, its rows in one JSON parameter (D1 binds at most 100 parameters). A use
    // older than the one recorded changes nothing, so a late or repeated copy cannot move it back.
    await deps.env.DB.prepare(
      `UPDATE api_keys SET last_used_at = u.at, last_auth_method = u.method
       FROM (SELECT json_extract(value, '$.id') AS id, max(json_extract(value, '$.at')) AS at, json_extract(value, '$.method') AS method
             FROM json_each(?) GROUP BY 1) AS u
       WHERE api_keys.id = u.id AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at <= u.at)`,
    )
      .bind(JSON.stringify(uses))
      .run();
  } catch (err) {
    log("error", "last_use_write_failed", { keys: used.length, error: safeError(err) });
    for (const m of used) m.retry();
  }
}
