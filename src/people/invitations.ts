import { and, eq, gt, isNull, sql } from "drizzle-orm";
import { generateSecret, hashKey, newId } from "../core/ids";
import { hashPassword, passwordProblem } from "../core/password";
import { reloadPeople, writeChange } from "../keys/reload";
import { auditIfChanged } from "../platform/db/audit";
import { batch } from "../platform/db/client";
import { invitations, sessions, users } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { ApiError, invalidRequest } from "../platform/errors";
import { endedIds } from "./sessions";

export const INVITATION_DAYS = 7;

/** What the caller shows once: the token (only its hash is kept), the dashboard link that carries it, and its end. */
export type Invitation = { token: string; url: string; expiresAt: string };

/**
 * A new one-time invitation for a user, as statements for the caller's batch (it lands with the change that asks for
 * it, or not at all): any earlier unused invitation of the user stops working.
 */
export async function newInvitation(
  d1: D1Database,
  origin: string,
  userId: string,
  now: Date,
): Promise<{ invitation: Invitation; statements: D1PreparedStatement[] }> {
  const token = generateSecret("inv");
  const at = now.toISOString();
  const expiresAt = new Date(now.getTime() + INVITATION_DAYS * 86_400_000).toISOString();
  // In the fragment, so the token never reaches a server log or a Referer.
  const url = `${origin}/dashboard/accept-invitation#token=${token}`;
  return {
    invitation: { token, url, expiresAt },
    statements: [
      d1.prepare("UPDATE invitations SET used_at = ? WHERE user_id = ? AND used_at IS NULL").bind(at, userId),
      // Only for a user the batch did create (a taken email creates none).
      d1
        .prepare(
          `INSERT INTO invitations (id, user_id, token_hash, expires_at, created_at)
           SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM users WHERE id = ?)`,
        )
        .bind(newId("inv"), userId, await hashKey(token), expiresAt, at, userId),
    ],
  };
}

/**
 * Sets a user's password from an invitation: the invitation is spent and the password set in one guarded batch (two
 * requests racing with one invitation: one wins, the other is refused), and every session of the user ends (a reset
 * locks out whoever had the old password).
 */
export async function acceptInvitation(
  deps: Deps,
  token: string,
  password: string,
): Promise<{ userId: string; accountId: string; email: string }> {
  const d = deps.db;
  const now = deps.now();
  const [found] = await d
    .select({
      id: invitations.id,
      userId: invitations.userId,
      expiresAt: invitations.expiresAt,
      usedAt: invitations.usedAt,
      email: users.email,
      accountId: users.accountId,
      disabled: users.disabled,
    })
    .from(invitations)
    .innerJoin(users, eq(users.id, invitations.userId))
    .where(eq(invitations.tokenHash, await hashKey(token)))
    .limit(1);
  if (!found || found.usedAt !== null || found.disabled)
    throw new ApiError("invalid_invitation", "This invitation is not valid: it was used, replaced or never issued.");
  if (found.expiresAt <= now.toISOString())
    throw new ApiError("invitation_expired", "This invitation has expired; ask an admin for a new one.");
  const problem = passwordProblem(password, found.email);
  if (problem) throw invalidRequest([{ field: "password", message: problem }]);
  const hash = await hashPassword(password);
  const at = now.toISOString();
  const write = () =>
    batch(deps.env.DB, [
      d
        .update(invitations)
        .set({ usedAt: at })
        .where(and(eq(invitations.id, found.id), isNull(invitations.usedAt), gt(invitations.expiresAt, at))),
      deps.env.DB.prepare("UPDATE users SET password_hash = ? WHERE id = ? AND changes() = 1").bind(hash, found.userId),
      auditIfChanged(
        deps.env.DB,
        { accountId: found.accountId, actor: found.userId, action: "user.password_set", target: found.userId, requestId: deps.requestId },
        now,
      ),
      // Only if this request spent the invitation (its used_at is this request's instant).
      d
        .update(sessions)
        .set({ endedAt: at, endReason: "password_changed" })
        .where(
          and(
            eq(sessions.userId, found.userId),
            isNull(sessions.endedAt),
            sql`(SELECT used_at FROM invitations WHERE id = ${found.id}) = ${at}`,
          ),
        )
        .returning({ id: sessions.id }),
    ]);
  const results = await writeChange(deps, [], write, [found.userId]);
  if (results[0]?.meta.changes !== 1)
    throw new ApiError("invalid_invitation", "This invitation is not valid: it was used, replaced or never issued.");
  // The sessions it ended are refused from the person's object before the answer, and everywhere within a second; when
  // the object cannot be told, within seconds all the same. The password is set either way, and the invitation spent:
  // a 503 would only send the client to repeat what can no longer be repeated.
  await reloadPeople(deps, [found.userId], endedIds(results.at(-1))).catch(() => {});
  return { userId: found.userId, accountId: found.accountId, email: found.email };
}
