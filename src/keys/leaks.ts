import { and, eq, inArray, isNull, or, sql } from "drizzle-orm";
import { auditIfChanged } from "../platform/db/audit";
import { batch } from "../platform/db/client";
import { type EventMessage, eventIfChanged, newEvent, publishEvents } from "../platform/db/events";
import { type ApiKey, accounts, apiKeys } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { safeError } from "../platform/log";
import { keyEvent } from "./events";
import { reloadKeys } from "./reload";

/** Where a leak report came from: GitHub's secret scanning, or anyone at POST /v1/leaks; `url`: where the key was seen. */
export type LeakReport = { source: "github" | "report"; url?: string };

/** Which of these hashes are keys Keygate issued (any state): D1 binds at most 100 parameters a statement. */
export async function knownHashes(deps: Deps, hashes: readonly string[]): Promise<Set<string>> {
  const known = new Set<string>();
  for (let i = 0; i < hashes.length; i += 100) {
    const rows = await deps.db
      .select({ hash: apiKeys.hash })
      .from(apiKeys)
      .where(inArray(apiKeys.hash, hashes.slice(i, i + 100)));
    for (const r of rows) known.add(r.hash);
  }
  return known;
}

/**
 * Acts on a reported leak of the key with this hash, as its account chose (`leakResponse`): `revoke` revokes it at
 * once through the revocation's own path, even when it is the account's last lasting key (a leaked key is no way in;
 * the operator's recovery key is), so it is refused everywhere within a second; `notify` marks it (`leakedAt`). What
 * changes the key is audited (`key.leaked`, with where it was seen) and told (`api_key.leaked`): the first report, or
 * the report that revokes it (a key reported under `notify` is revoked by a later report once the account chose
 * `revoke`); a report that changes nothing writes nothing. Throws when D1 fails (see `handleLeak`).
 */
export async function actOnLeak(deps: Deps, hash: string, report: LeakReport): Promise<void> {
  const d = deps.db;
  const [found] = await d
    .select({ key: apiKeys, leakResponse: accounts.leakResponse })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(eq(apiKeys.hash, hash))
    .limit(1);
  if (!found) return;
  const { key, leakResponse } = found;
  const now = deps.now();
  const at = now.toISOString();
  const revoke = leakResponse === "revoke";
  const leaked: ApiKey = { ...key, leakedAt: key.leakedAt ?? at, ...(revoke ? { revokedAt: at, revokedBy: "keygate" } : {}) };
  const event = newEvent(
    {
      accountId: key.accountId,
      type: "api_key.leaked",
      data: { key: keyEvent(leaked), source: report.source, url: report.url ?? null, response: revoke ? "revoked" : "notified" },
    },
    now,
  );
  const audit = { accountId: key.accountId, actor: "keygate", action: "key.leaked", target: key.id, requestId: deps.requestId };
  const mark = d
    .update(apiKeys)
    .set({ leakedAt: at })
    .where(and(eq(apiKeys.id, key.id), isNull(apiKeys.leakedAt)));
  // The change that decides whether anything is told: the revocation under `revoke`, the first mark under `notify`.
  const decisive = revoke
    ? d
        .update(apiKeys)
        .set({ revokedAt: at, revokedBy: "keygate" })
        .where(and(eq(apiKeys.id, key.id), or(isNull(apiKeys.revokedAt), sql`${apiKeys.revokedAt} > ${at}`)))
    : mark;
  await batch(deps.env.DB, [
    decisive,
    auditIfChanged(deps.env.DB, { ...audit, detail: report.url ? `${report.source}: ${report.url}` : report.source }, now),
    eventIfChanged(deps.env.DB, event),
    ...(revoke ? [mark] : []),
  ]);
  if (revoke) await reloadKeys(deps, [key.id]).catch(() => {});
  await publishEvents(deps, [event.id]);
}

/**
 * Acts on a leak now (the request's `waitUntil`), and when that fails (D1 down), hands it to the queue, whose consumer
 * tries again until it is done: the reporter was answered already and will not report again.
 */
export async function handleLeak(deps: Deps, hash: string, report: LeakReport): Promise<void> {
  try {
    await actOnLeak(deps, hash, report);
  } catch (err) {
    deps.log("warn", "leak_retried", { error: safeError(err), requestId: deps.requestId });
    try {
      await deps.env.EVENTS.send({ leak: { hash, ...report } } satisfies EventMessage);
    } catch (e) {
      deps.log("error", "leak_not_handled", { error: safeError(e), requestId: deps.requestId });
    }
  }
}
