import type { AuthMethod } from "../core/principal";
import type { KeyHour } from "../counters/rollup";
import type { SessionUse } from "../counters/sessions";
import type { Deps } from "../platform/deps";
import { log, safeError } from "../platform/log";
import type { RevisedHour } from "./tally";

/**
 * What a key's object sends at most once per FLUSH_INTERVAL_MS: the hours that changed, each as it now stands (with its
 * revision), and the key's last use when it moved; or what a person's object sends at most once a minute per session:
 * its last use. Everything in it is absolute, so a copy delivered twice, or after a later one, counts once.
 */
export type UsageMessage = KeyUsage | SessionUse;
type KeyUsage = { usage: { keyId: string; accountId: string; hours: RevisedHour[]; lastUse?: { at: string; method: AuthMethod } } };

export function isUsageMessage(body: unknown): body is UsageMessage {
  return typeof body === "object" && body !== null && ("usage" in body || "sessionUse" in body);
}

/**
 * The usage queue's consumer. A batch costs one call to each account's object it names (the keys' hours, for the
 * account's rollup), one D1 statement for the last uses of all its keys and one for those of all its sessions, whatever
 * their number: D1's writes grow with batches, not with keys, sessions or requests. Messages whose account's object or whose D1 write failed are retried (the
 * queue delivers them again); the rest are done.
 */
export async function consumeUsage(deps: Deps, all: readonly Message<UsageMessage>[]): Promise<void> {
  const messages = all.filter((m): m is Message<KeyUsage> => "usage" in m.body);
  await recordSessionUses(
    deps,
    all.filter((m) => "sessionUse" in m.body),
  );
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

/** One D1 statement for the last uses of a batch's sessions; a use older than the one recorded changes nothing. */
async function recordSessionUses(deps: Deps, messages: readonly Message<UsageMessage>[]): Promise<void> {
  const uses = messages.flatMap((m) => ("sessionUse" in m.body ? [{ id: m.body.sessionUse.sessionId, at: m.body.sessionUse.at }] : []));
  if (uses.length === 0) return;
  try {
    await deps.env.DB.prepare(
      `UPDATE sessions SET last_used_at = u.at
       FROM (SELECT json_extract(value, '$.id') AS id, max(json_extract(value, '$.at')) AS at FROM json_each(?) GROUP BY 1) AS u
       WHERE sessions.id = u.id AND sessions.last_used_at < u.at`,
    )
      .bind(JSON.stringify(uses))
      .run();
  } catch (err) {
    log("error", "session_last_use_write_failed", { sessions: uses.length, error: safeError(err) });
    for (const m of messages) m.retry();
  }
}
