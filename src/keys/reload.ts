import { LEASE_MS } from "../core/lease";
import { holdings } from "../counters/held";
import { deadline, retryFor } from "../platform/deadline";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import { safeError } from "../platform/log";
import { RECORD_TTL_MS } from "./object";

// How a change that removes rights (revoking or rotating a key, disabling or demoting its owner, narrowing grants,
// ending a person's sessions) comes into force in the objects that judge it, the keys' (`key:<id>`) and the people's
// (`user:<id>`): before its answer, or, when that fails, within CHANGE_IN_FORCE_MS of it with no help from the client.

/** How long after its answer a change that removes rights is in force everywhere, even answered 503 and never repeated. */
export const CHANGE_IN_FORCE_MS = 5_000;
/** How long the isolate that answered keeps trying to reach the keys' objects; the rest of the bound is a lease's life. */
const RETRY_FOR_MS = CHANGE_IN_FORCE_MS - LEASE_MS;
/** How long an object told of a change of unknown outcome trusts its records only briefly: past any write D1 still holds. */
const UNSETTLED_MS = 30_000;
const MAX_PENDING = 10_000;

/**
 * Objects (`key:<id>`, `user:<id>`) whose change this isolate could not put in force yet, and until when that matters
 * (after RECORD_TTL_MS no object trusts a record read before the change): their next use here tells them first
 * (`catchUp`).
 */
const pending = new Map<string, number>();

/** What both kinds of object take from a change: it was made (`tell`), or it may still land in D1 (`distrust`). */
type Changeable = { distrust(ms: number): Promise<void> };

/** The object a change is told to: a key's, or a person's (their sessions). */
function objectOf(deps: Deps, name: string): Changeable {
  return (name.startsWith("key:") ? deps.env.KEYS.getByName(name) : deps.env.ACCOUNTS.getByName(name)) as unknown as Changeable;
}

const keyNames = (keyIds: readonly string[]) => keyIds.map((id) => `key:${id}`);
const personNames = (userIds: readonly string[]) => userIds.map((id) => `user:${id}`);

/** Stops this isolate trusting what it holds of these objects: a key's lease, or any of a person's sessions'. */
function dropHeld(names: readonly string[]): void {
  holdings.drop(names.filter((n) => n.startsWith("key:")));
  for (const name of names) if (name.startsWith("user:")) holdings.dropUnder(`person:${name.slice("user:".length)}:`);
}

const CHANGE_PENDING = () =>
  new ApiError(
    "change_pending",
    `The change is saved; it is in force everywhere within ${CHANGE_IN_FORCE_MS / 1000} seconds, or at once when the request is repeated.`,
    { headers: { "Retry-After": "1" } },
  );

const timedOut = () => new Error("no answer before the deadline");

/**
 * Makes the objects of these keys read their key, owner and account again, before the change that called it is
 * answered: a revocation, a disabled or demoted owner takes effect on the very next request. An object that fails or
 * does not answer in time makes the call 503 `change_pending`: the change is stored, and comes into force without a
 * repeat (see `completeLater`); a repeat completes it at once (every caller reloads again on a repeat, even when there
 * is nothing left to store).
 */
export async function reloadKeys(deps: Deps, keyIds: string[]): Promise<void> {
  const names = keyNames(keyIds);
  dropHeld(names);
  const bookmark = deps.bookmark();
  const failed = await reach(deps, names, (name) => deps.env.KEYS.getByName(name).reload(bookmark));
  if (failed.length === 0) return;
  completeLater(deps, failed);
  throw CHANGE_PENDING();
}

/**
 * Tells these people's objects of a change to them before it is answered, as `reloadKeys` does for keys (503
 * `change_pending` when one cannot be reached, in force soon after all the same): the sessions in `ended` are refused
 * from then on, with no read even when D1 is down, and the people (role, grants, state) and their other sessions are
 * read again on their next request. Every isolate holding a lease of one of their sessions trusts it a second at most.
 */
export async function reloadPeople(deps: Deps, userIds: string[], ended: string[] = []): Promise<void> {
  const names = personNames(userIds);
  dropHeld(names);
  const bookmark = deps.bookmark();
  const failed = await reach(deps, names, (name) => deps.env.ACCOUNTS.getByName(name).changed(ended, bookmark));
  if (failed.length === 0) return;
  completeLater(deps, failed);
  throw CHANGE_PENDING();
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
 * Runs `write`, a change that removes rights from these keys (and these people: their sessions). When D1 fails or does
 * not answer in time, the write may have landed or may still land: the objects are told so in the background, as after
 * a failed reload.
 */
export async function writeChange<T>(deps: Deps, keyIds: string[], write: () => Promise<T>, userIds: string[] = []): Promise<T> {
  try {
    return await write();
  } catch (err) {
    if (err instanceof ApiError && err.code === "database_unavailable") {
      const names = [...keyNames(keyIds), ...personNames(userIds)];
      dropHeld(names);
      completeLater(deps, names);
    }
    throw err;
  }
}

/**
 * Before this isolate calls a key's object (`key:<id>`) or a person's (`user:<id>`): if a change made here is not known
 * to be in force there yet, tells the object first, as the background does; when that fails, the call fails (and is
 * answered as when the object is down).
 */
export async function catchUp(stub: Changeable, name: string): Promise<void> {
  const until = pending.get(name);
  if (until === undefined) return;
  if (Date.now() < until) await stub.distrust(UNSETTLED_MS);
  pending.delete(name);
}

/**
 * Puts a change in force that its answer could not: this isolate tells the objects before their next use here, and
 * keeps telling them, in the background for RETRY_FOR_MS, to drop their records and trust what they read for at most
 * UNSETTLED_TRUST_MS while the change may still land in D1 (`KeyObject.distrust`, `AccountObject.distrust`).
 */
function completeLater(deps: Deps, names: string[]): void {
  const until = Date.now() + RECORD_TTL_MS;
  for (const name of names) {
    if (pending.size >= MAX_PENDING) pending.delete(pending.keys().next().value as string);
    pending.set(name, until);
  }
  deps.waitUntil(retry(deps, names));
}

async function retry(deps: Deps, names: string[]): Promise<void> {
  let left = names;
  await retryFor(RETRY_FOR_MS, async (stop) => {
    const failed = await reach(deps, left, (name) => objectOf(deps, name).distrust(UNSETTLED_MS), stop);
    for (const name of left) if (!failed.includes(name)) pending.delete(name);
    left = failed;
    return left.length === 0;
  });
  for (const name of left) deps.log("error", `${kindOf(name)}_change_not_in_force`, { ...idOf(name), requestId: deps.requestId });
}

/** Calls each named object under the counters' deadline (and before `stop`); answers the names it could not reach, logged. */
async function reach(
  deps: Deps,
  names: string[],
  call: (name: string) => Promise<void>,
  stop = Number.POSITIVE_INFINITY,
): Promise<string[]> {
  const ms = Math.min(deps.config.rateLimitTimeoutMs, stop - Date.now());
  const results = await Promise.allSettled(names.map((name) => deadline(call(name), ms, timedOut)));
  return results.flatMap((r, i) => {
    if (r.status === "fulfilled") return [];
    const name = names[i] as string;
    deps.log("error", `${kindOf(name)}_reload_failed`, { ...idOf(name), error: safeError(r.reason), requestId: deps.requestId });
    return [name];
  });
}

/** What logs call an object's kind: `key`, or `person` for a person's object. */
const kindOf = (name: string) => (name.startsWith("key:") ? "key" : "person");
/** The id a log names an object by. */
const idOf = (name: string) => (name.startsWith("key:") ? { keyId: name.slice(4) } : { userId: name.slice(5) });
