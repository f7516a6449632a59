import { LEASE_MS } from "../core/lease";
import { holdings } from "../counters/held";
import { deadline, retryFor } from "../platform/deadline";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import { safeError } from "../platform/log";
import { type KeyObject, RECORD_TTL_MS } from "./object";

// How a change that removes rights (revoking or rotating a key, disabling or demoting its owner, narrowing grants)
// comes into force in the keys' objects: before its answer, or, when that fails, within CHANGE_IN_FORCE_MS of it with
// no help from the client.

/** How long after its answer a change that removes rights is in force everywhere, even answered 503 and never repeated. */
export const CHANGE_IN_FORCE_MS = 5_000;
/** How long the isolate that answered keeps trying to reach the keys' objects; the rest of the bound is a lease's life. */
const RETRY_FOR_MS = CHANGE_IN_FORCE_MS - LEASE_MS;
/** How long an object told of a change of unknown outcome trusts its records only briefly: past any write D1 still holds. */
const UNSETTLED_MS = 30_000;
const MAX_PENDING = 10_000;

/**
 * Keys whose change this isolate could not put in force yet, and until when that matters (after RECORD_TTL_MS no
 * object trusts a record read before the change): their next use here tells their object first (`catchUp`).
 */
const pending = new Map<string, number>();

const timedOut = () => new Error("no answer before the deadline");

/**
 * Makes the objects of these keys read their key, owner and account again, before the change that called it is
 * answered: a revocation, a disabled or demoted owner takes effect on the very next request. An object that fails or
 * does not answer in time makes the call 503 `change_pending`: the change is stored, and comes into force without a
 * repeat (see `completeLater`); a repeat completes it at once (every caller reloads again on a repeat, even when there
 * is nothing left to store).
 */
export async function reloadKeys(deps: Deps, keyIds: string[]): Promise<void> {
  holdings.drop(keyIds.map((id) => `key:${id}`));
  const bookmark = deps.bookmark();
  const failed = await reach(deps, keyIds, (stub) => stub.reload(bookmark));
  if (failed.length === 0) return;
  completeLater(deps, failed);
  throw new ApiError(
    "change_pending",
    `The change is saved; it is in force everywhere within ${CHANGE_IN_FORCE_MS / 1000} seconds, or at once when the request is repeated.`,
    { headers: { "Retry-After": "1" } },
  );
}

/**
 * Makes the objects of these accounts read their limits, credits and plan again (a limit or a pool is not a right:
 * one that misses it reads them within a minute anyway). Answers once each was told or gave up.
 */
export async function reloadAccounts(deps: Deps, accountIds: readonly string[]): Promise<void> {
  const timeout = deps.config.rateLimitTimeoutMs;
  const bookmark = deps.bookmark();
  holdings.drop(accountIds.map((id) => `account:${id}`));
  await Promise.all(
    accountIds.map((id) =>
      deadline(deps.env.ACCOUNTS.getByName(`account:${id}`).reload(bookmark), timeout, timedOut).catch((err: unknown) =>
        deps.log("warn", "account_reload_failed", { accountId: id, error: safeError(err) }),
      ),
    ),
  );
}

/**
 * Runs `write`, a change that removes rights from these keys. When D1 fails or does not answer in time, the write may
 * have landed or may still land: the keys' objects are told so in the background, as after a failed reload.
 */
export async function writeChange<T>(deps: Deps, keyIds: string[], write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    if (err instanceof ApiError && err.code === "database_unavailable") {
      holdings.drop(keyIds.map((id) => `key:${id}`));
      completeLater(deps, keyIds);
    }
    throw err;
  }
}

/**
 * Before this isolate calls a key's object: if a change made here is not known to be in force there yet, tells the
 * object first, as the background does; when that fails, the call fails (and is answered as when the object is down).
 */
export async function catchUp(stub: DurableObjectStub<KeyObject>, keyId: string): Promise<void> {
  const until = pending.get(keyId);
  if (until === undefined) return;
  if (Date.now() < until) await stub.distrust(UNSETTLED_MS);
  pending.delete(keyId);
}

/**
 * Puts a change in force that its answer could not: this isolate reloads the keys before their next use here, and
 * keeps telling their objects, in the background for RETRY_FOR_MS, to drop their records and trust what they read
 * for at most UNSETTLED_TRUST_MS while the change may still land in D1 (`KeyObject.distrust`).
 */
function completeLater(deps: Deps, keyIds: string[]): void {
  const until = Date.now() + RECORD_TTL_MS;
  for (const id of keyIds) {
    if (pending.size >= MAX_PENDING) pending.delete(pending.keys().next().value as string);
    pending.set(id, until);
  }
  deps.waitUntil(retry(deps, keyIds));
}

async function retry(deps: Deps, keyIds: string[]): Promise<void> {
  let left = keyIds;
  await retryFor(RETRY_FOR_MS, async (stop) => {
    const failed = await reach(deps, left, (stub) => stub.distrust(UNSETTLED_MS), stop);
    for (const id of left) if (!failed.includes(id)) pending.delete(id);
    left = failed;
    return left.length === 0;
  });
  for (const keyId of left) deps.log("error", "key_change_not_in_force", { keyId, requestId: deps.requestId });
}

/** Calls each key's object under the counters' deadline (and before `stop`); answers the keys it could not reach, logged. */
async function reach(
  deps: Deps,
  keyIds: string[],
  call: (stub: DurableObjectStub<KeyObject>) => Promise<void>,
  stop = Number.POSITIVE_INFINITY,
): Promise<string[]> {
  const ms = Math.min(deps.config.rateLimitTimeoutMs, stop - Date.now());
  const results = await Promise.allSettled(keyIds.map((id) => deadline(call(deps.env.KEYS.getByName(`key:${id}`)), ms, timedOut)));
  return results.flatMap((r, i) => {
    if (r.status === "fulfilled") return [];
    const keyId = keyIds[i] as string;
    deps.log("error", "key_reload_failed", { keyId, error: safeError(r.reason), requestId: deps.requestId });
    return [keyId];
  });
}
