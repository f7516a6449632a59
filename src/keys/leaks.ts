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

/** A leak to act on: the hash of the key reported, and the report. */
export type Leak = { hash: string } & LeakReport;

/** Keys a batch of D1 statements changes together: four statements each, well within one batch. */
const LEAKS_PER_BATCH = 50;

/**
 * Acts on reported leaks of the keys with these hashes, as each key's account chose (`leakResponse`): `revoke` revokes
 * it at once through the revocation's own path, even when it is the account's last lasting key (a leaked key is no way
 * in; the operator's recovery key is), so it is refused everywhere within a second; `notify` marks it (`leakedAt`).
 * What changes a key is audited (`key.leaked`, with where it was seen) and told (`api_key.leaked`): the first report,
 * or the report that revokes it (a key reported under `notify` is revoked by a later report once the account chose
 * `revoke`); a report that changes nothing writes nothing. However many (an alert of 1,000 matches), the keys are read
 * 100 at a time, changed 50 to a D1 batch, and the revoked ones reloaded together. Throws when D1 fails (see
 * `handleLeaks`).
 */
export async function actOnLeaks(deps: Deps, leaks: readonly Leak[]): Promise<void> {
  const d = deps.db;
  // One report per key: the first of a hash's.
  const byHash = new Map<string, Leak>();
  for (const l of leaks) if (!byHash.has(l.hash)) byHash.set(l.hash, l);
  const hashes = [...byHash.keys()];
  const found: { key: ApiKey; leakResponse: string }[] = [];
  for (let i = 0; i < hashes.length; i += 100)
    found.push(
      ...(await d
        .select({ key: apiKeys, leakResponse: accounts.leakResponse })
        .from(apiKeys)
        .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
        .where(inArray(apiKeys.hash, hashes.slice(i, i + 100)))),
    );
  const now = deps.now();
  const at = now.toISOString();
  const revoked: string[] = [];
  const events: string[] = [];
  for (let i = 0; i < found.length; i += LEAKS_PER_BATCH) {
    const statements = found.slice(i, i + LEAKS_PER_BATCH).flatMap(({ key, leakResponse }) => {
      const report = byHash.get(key.hash) as Leak;
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
      events.push(event.id);
      if (revoke) revoked.push(key.id);
      const audit = { accountId: key.accountId, actor: "keygate", action: "key.leaked", target: key.id, requestId: deps.requestId };
      const mark = d
        .update(apiKeys)
        .set({ leakedAt: at })
        .where(and(eq(apiKeys.id, key.id), isNull(apiKeys.leakedAt)));
      // The change that decides whether anything is told: the revocation under `revoke`, the first mark under `notify`;
      // its audit entry and its event follow it in the batch (each written only when the one before changed a row).
      const decisive = revoke
        ? d
            .update(apiKeys)
            .set({ revokedAt: at, revokedBy: "keygate" })
            .where(and(eq(apiKeys.id, key.id), or(isNull(apiKeys.revokedAt), sql`${apiKeys.revokedAt} > ${at}`)))
        : mark;
      return [
        decisive,
        auditIfChanged(deps.env.DB, { ...audit, detail: report.url ? `${report.source}: ${report.url}` : report.source }, now),
        eventIfChanged(deps.env.DB, event),
        ...(revoke ? [mark] : []),
      ];
    });
    await batch(deps.env.DB, statements);
  }
  if (revoked.length > 0) await reloadKeys(deps, revoked).catch(() => {});
  await publishEvents(deps, events);
}

/**
 * Acts on leaks now (the request's `waitUntil`), and when that fails (D1 down), hands each to the queue, whose consumer
 * tries again until it is done: the reporter was answered already and will not report again.
 */
export async function handleLeaks(deps: Deps, leaks: readonly Leak[]): Promise<void> {
  try {
    await actOnLeaks(deps, leaks);
  } catch (err) {
    deps.log("warn", "leak_retried", { error: safeError(err), requestId: deps.requestId });
    try {
      for (let i = 0; i < leaks.length; i += 100)
        await deps.env.EVENTS.sendBatch(
          leaks.slice(i, i + 100).map(({ hash, ...report }) => ({ body: { leak: { hash, ...report } } satisfies EventMessage })),
        );
    } catch (e) {
      deps.log("error", "leak_not_handled", { error: safeError(e), requestId: deps.requestId });
    }
  }
}
