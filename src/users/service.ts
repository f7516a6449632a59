import type { z } from "@hono/zod-openapi";
import { and, eq, sql } from "drizzle-orm";
import { FULL_ACCESS } from "../core/grants";
import { newId } from "../core/ids";
import type { Principal } from "../core/principal";
import { reloadKeys, reloadPeople, writeChange } from "../keys/reload";
import { grantErrors } from "../keys/schemas";
import { lastingKey, liveKeyIds } from "../keys/store";
import { type Invitation, newInvitation } from "../people/invitations";
import { endedIds } from "../people/sessions";
import { dashboardOrigin } from "../platform/config";
import { auditIfChanged, auditInsert } from "../platform/db/audit";
import { batch } from "../platform/db/client";
import { eventIfChanged, newEvent, publishEvents } from "../platform/db/events";
import type { Page } from "../platform/db/pagination";
import { type User, users, webhookEvents } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { ApiError, invalidRequest } from "../platform/errors";
import type { NewUser, UserChange } from "./schemas";
import { emails, findUser, listUsers as usersPage } from "./store";

// The user aggregate's reads and writes, on Deps: the reads see what the principal may (store.ts, visibleTo); the writes
// are guarded in D1, written with their audit event in one batch, and in force in the objects of the user's keys
// before they are answered.

/**
 * Creates a user with an invitation to set a password (shown once; its link on the dashboard's origin, or on
 * `reachedAt`'s, the URL Keygate was reached at); a taken email writes nothing at all (409 `email_taken`).
 */
export async function createUser(
  deps: Deps,
  p: Principal,
  { email, role }: z.infer<typeof NewUser>,
  reachedAt: URL,
): Promise<{ user: User; invitation: Invitation }> {
  const now = deps.now();
  const user: User = {
    id: newId("usr"),
    accountId: p.accountId,
    email,
    role,
    disabled: false,
    grants: JSON.stringify([FULL_ACCESS]),
    passwordHash: null,
    createdAt: now.toISOString(),
  };
  const d = deps.db;
  const { invitation, statements } = await newInvitation(deps.env.DB, dashboardOrigin(deps.config, reachedAt), user.id, now);
  const event = invited(p, user, invitation, now);
  // INSERT OR IGNORE plus a guarded audit event and event: a taken email writes nothing at all.
  const [inserted] = await batch(deps.env.DB, [
    d.insert(users).values(user).onConflictDoNothing(),
    auditIfChanged(
      deps.env.DB,
      { accountId: p.accountId, actor: p.userId, action: "user.created", target: user.id, requestId: deps.requestId },
      now,
    ),
    eventIfChanged(deps.env.DB, event),
    ...statements,
  ]);
  if (inserted?.meta.changes !== 1) throw new ApiError("email_taken", `A user with email ${user.email} already exists in this account.`);
  await publishEvents(deps, [event.id]);
  return { user, invitation };
}

/**
 * Changes a user's role or state, never leaving the account without an enabled admin or a lasting key, and puts the
 * change in force in the user's keys before answering (503 `change_pending` otherwise, in force soon after all the
 * same; a repeat completes it at once).
 */
export async function updateUser(
  deps: Deps,
  p: Principal,
  userId: string,
  { role, disabled, grants }: z.infer<typeof UserChange>,
): Promise<User> {
  if (grants) {
    const errors = grantErrors(grants, deps.config.resourceTypes, "grants");
    if (errors.length > 0) throw invalidRequest(errors);
  }
  const granted = grants === undefined ? null : JSON.stringify(grants);
  // A user of the caller's account, or 404 before anything is written or reloaded.
  const before = await getUser(deps, p, userId);
  const { id } = before;
  const d = deps.db;
  const now = deps.now();
  // The user's keys act with the user's rights: their objects see the change before the answer.
  const keyIds = await liveKeyIds(d, { ownerId: id }, now);
  // Told when this change disables them (written only if the change is).
  const event =
    disabled === true && !before.disabled
      ? newEvent({ accountId: p.accountId, type: "user.disabled", data: { user: userEvent(before), actor: p.userId } }, now)
      : null;
  // Its sessions, told to the person's object with the change: ended ones are refused from it with no read.
  let ended: string[] = [];
  if (role !== undefined || disabled !== undefined || granted !== null) {
    const results = await writeChange(
      deps,
      keyIds,
      () =>
        batch(deps.env.DB, [
          // Only the fields this request changes, guarded on the row as it is when the statement runs: two concurrent
          // edits (one disabling, one promoting) both land, and neither brings back what the other changed.
          d
            .update(users)
            .set({
              ...(role === undefined ? {} : { role }),
              ...(disabled === undefined ? {} : { disabled }),
              ...(granted === null ? {} : { grants: granted }),
            })
            .where(
              and(
                eq(users.accountId, p.accountId),
                eq(users.id, id),
                changes(role, disabled, granted),
                keepsAccountReachable(p.accountId, role, disabled),
              ),
            ),
          auditIfChanged(
            deps.env.DB,
            { accountId: p.accountId, actor: p.userId, action: "user.updated", target: id, requestId: deps.requestId },
            now,
          ),
          ...(event ? [eventIfChanged(deps.env.DB, event)] : []),
          // A disabled user's sessions end with the change (re-enabling them brings none back).
          deps.env.DB.prepare(
            "UPDATE sessions SET ended_at = ?, end_reason = 'user_disabled' WHERE user_id = ? AND ended_at IS NULL AND (SELECT disabled FROM users WHERE id = ?) = 1 RETURNING id",
          ).bind(now.toISOString(), id, id),
        ]),
      [id],
    );
    if (results[0]?.meta.changes !== 1) await explainUnchanged(deps, p, id, role, disabled, granted);
    if (event) await publishEvents(deps, [event.id]);
    ended = endedIds(results.at(-1));
  }
  // A repeat of a request whose change is already stored reloads too, so it completes a change a failed reload left
  // pending at once. The person's sessions take the change as their keys do (role, grants, state).
  const told = await Promise.allSettled([reloadKeys(deps, keyIds), reloadPeople(deps, [id], ended)]);
  for (const t of told) if (t.status === "rejected") throw t.reason;
  return getUser(deps, p, id);
}

/** SQL: the update would change the row (a repeat of a stored change writes nothing, not even an audit event). */
function changes(role: User["role"] | undefined, disabled: boolean | undefined, grants: string | null) {
  return sql`(users.role IS NOT COALESCE(${role ?? null}, users.role) OR users.disabled IS NOT COALESCE(${bit(disabled)}, users.disabled)
    OR users.grants IS NOT COALESCE(${grants}, users.grants))`;
}

/**
 * SQL: the update leaves the account an enabled admin and a lasting key. It only matters when the row is an enabled
 * admin now and would not be one after the update; then another enabled admin must remain, and if this user owns a
 * lasting key, another enabled admin must own one too.
 */
function keepsAccountReachable(accountId: string, role: User["role"] | undefined, disabled: boolean | undefined) {
  const staysAdmin = sql`(COALESCE(${role ?? null}, users.role) = 'admin' AND COALESCE(${bit(disabled)}, users.disabled) = 0)`;
  return sql`(NOT (users.role = 'admin' AND users.disabled = 0) OR ${staysAdmin}
    OR (EXISTS (SELECT 1 FROM users other WHERE other.account_id = ${accountId} AND other.id <> users.id AND other.role = 'admin' AND other.disabled = 0)
      AND (NOT EXISTS (SELECT 1 FROM api_keys own WHERE own.owner_id = users.id AND ${lastingKey("own")})
        OR EXISTS (SELECT 1 FROM api_keys other_key WHERE other_key.account_id = ${accountId} AND other_key.owner_id <> users.id AND ${lastingKey("other_key")}))))`;
}

function bit(b: boolean | undefined): number | null {
  return b === undefined ? null : b ? 1 : 0;
}

/** Why a guarded update changed nothing: no such user (404), nothing to change (fine), or a guard refused it (409). */
async function explainUnchanged(
  deps: Deps,
  p: Principal,
  id: string,
  role: User["role"] | undefined,
  disabled: boolean | undefined,
  grants: string | null,
) {
  const user = await getUser(deps, p, id);
  if ((role ?? user.role) === user.role && (disabled ?? user.disabled) === user.disabled && (grants ?? user.grants) === user.grants) return;
  const [other] = await deps.db
    .select({ id: users.id })
    .from(users)
    .where(and(eq(users.accountId, p.accountId), sql`${users.id} <> ${id}`, eq(users.role, "admin"), eq(users.disabled, false)))
    .limit(1);
  if (!other) throw new ApiError("last_admin", "This is the account's last enabled admin; make another user admin first.");
  throw new ApiError(
    "last_active_key",
    "This user owns the account's last lasting admin key (full access, no expiry); give another admin such a key first.",
  );
}

/** A user the caller may see; anything else is 404. */
export async function getUser(deps: Deps, p: Principal, id: string): Promise<User> {
  const user = await findUser(deps.db, p, id);
  if (!user) throw new ApiError("not_found", "No user with this id in this account.");
  return user;
}

/** A page of the users the caller may see, newest first. */
export function listUsers(deps: Deps, p: Principal, page: Page) {
  return usersPage(deps.db, p, page);
}

/** The emails of the users among `ids` the caller may see, in one read. */
export function emailsOf(deps: Deps, p: Principal, ids: string[]): Promise<Map<string, string>> {
  return emails(deps.db, p, ids);
}

/** A new invitation for a user of the account (a first password, or a reset), replacing any unused one. */
export async function reinvite(deps: Deps, p: Principal, userId: string, reachedAt: URL): Promise<Invitation> {
  const user = await getUser(deps, p, userId);
  const { id } = user;
  const now = deps.now();
  const { invitation, statements } = await newInvitation(deps.env.DB, dashboardOrigin(deps.config, reachedAt), id, now);
  const event = invited(p, user, invitation, now);
  await batch(deps.env.DB, [
    ...statements,
    auditInsert(deps.db, { accountId: p.accountId, actor: p.userId, action: "user.invited", target: id, requestId: deps.requestId }, now),
    deps.db.insert(webhookEvents).values(event),
  ]);
  await publishEvents(deps, [event.id]);
  return invitation;
}

/** A person as events tell of them. */
function userEvent(u: Pick<User, "id" | "email" | "role">) {
  return { id: u.id, email: u.email, role: u.role };
}

/** `user.invited`: who, by whom, and until when the invitation holds (never its token). */
function invited(p: Principal, user: User, invitation: Invitation, now: Date) {
  return newEvent(
    { accountId: p.accountId, type: "user.invited", data: { user: userEvent(user), actor: p.userId, expiresAt: invitation.expiresAt } },
    now,
  );
}
