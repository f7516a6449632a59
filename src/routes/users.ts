import { and, eq, sql } from "drizzle-orm";
import { Hono } from "hono";
import { authenticate } from "../auth/middleware";
import { Fields, readJson } from "../body";
import { auditIfChanged } from "../db/audit";
import { batch, db } from "../db/client";
import { listPage, readPage } from "../db/pagination";
import { type User, users } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { newId } from "../keys/format";
import { lastingKey, liveKeyIds } from "../keys/store";
import { reloadKeys } from "../ratelimit/limiter";
import { allow } from "./method-not-allowed";

/** Deliberately loose: one @, no spaces, a dot in the domain. Delivery is the proof of an address. */
export const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const ROLES = ["admin", "member"] as const;

export function userView(u: User) {
  return { id: u.id, email: u.email, role: u.role, disabled: u.disabled, createdAt: u.createdAt };
}

/** Users of the caller's account; admins only. */
export const usersRoutes = new Hono<AppEnv>()
  .use(authenticate("admin"))
  .post("/", async (c) => {
    const p = c.get("principal");
    const f = new Fields(await readJson(c));
    const email = f.string("email", { required: true, max: 254, pattern: EMAIL, hint: "must be an email address" });
    const role = f.oneOf("role", ROLES, true);
    f.done();

    const now = new Date();
    const user: User = {
      id: newId("usr"),
      accountId: p.accountId,
      email: (email as string).toLowerCase(),
      role: role as User["role"],
      disabled: false,
      createdAt: now.toISOString(),
    };
    const d = db(c.env.DB);
    // INSERT OR IGNORE plus a guarded audit event: a taken email writes nothing at all.
    const [inserted] = await batch(c.env.DB, [
      d.insert(users).values(user).onConflictDoNothing(),
      auditIfChanged(
        c.env.DB,
        { accountId: p.accountId, actor: p.userId, action: "user.created", target: user.id, requestId: c.get("requestId") },
        now,
      ),
    ]);
    if (inserted?.meta.changes !== 1) throw new ApiError("email_taken", `A user with email ${user.email} already exists in this account.`);
    return c.json(userView(user), 201);
  })
  .get("/", async (c) => {
    const p = c.get("principal");
    const page = readPage(new URL(c.req.url).searchParams);
    const { rows, nextCursor } = await listPage(db(c.env.DB), users, eq(users.accountId, p.accountId), page);
    return c.json({ data: rows.map(userView), nextCursor });
  })
  .get("/:id", async (c) => {
    return c.json(userView(await findUser(c.env.DB, c.get("principal").accountId, c.req.param("id"))));
  })
  .patch("/:id", async (c) => {
    const p = c.get("principal");
    const f = new Fields(await readJson(c));
    const role = f.oneOf("role", ROLES);
    const disabled = f.boolean("disabled");
    f.done();

    const id = c.req.param("id");
    const d = db(c.env.DB);
    const now = new Date();
    if (role !== undefined || disabled !== undefined) {
      const [updated] = await batch(c.env.DB, [
        // Only the fields this request changes, guarded on the row as it is when the statement runs: two concurrent
        // edits (one disabling, one promoting) both land, and neither brings back what the other changed.
        d
          .update(users)
          .set({ ...(role === undefined ? {} : { role }), ...(disabled === undefined ? {} : { disabled }) })
          .where(
            and(
              eq(users.accountId, p.accountId),
              eq(users.id, id),
              changes(role, disabled),
              keepsAccountReachable(p.accountId, role, disabled),
            ),
          ),
        auditIfChanged(
          c.env.DB,
          { accountId: p.accountId, actor: p.userId, action: "user.updated", target: id, requestId: c.get("requestId") },
          now,
        ),
      ]);
      if (updated?.meta.changes !== 1) await explainUnchanged(c.env.DB, p.accountId, id, role, disabled);
    }
    // The user's keys act with the user's rights: their counters see the change before the answer. A repeat of a
    // request whose change is already stored reloads too, so it completes a change a failed reload left pending.
    await reloadKeys(c, await liveKeyIds(d, { ownerId: id }, now));
    return c.json(userView(await findUser(c.env.DB, p.accountId, id)));
  })
  .all("/", allow("GET", "POST"))
  .all("/:id", allow("GET", "PATCH"));

/** SQL: the update would change the row (a repeat of a stored change writes nothing, not even an audit event). */
function changes(role: User["role"] | undefined, disabled: boolean | undefined) {
  return sql`(users.role IS NOT COALESCE(${role ?? null}, users.role) OR users.disabled IS NOT COALESCE(${bit(disabled)}, users.disabled))`;
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
  d1: D1Database,
  accountId: string,
  id: string,
  role: User["role"] | undefined,
  disabled: boolean | undefined,
) {
  const user = await findUser(d1, accountId, id);
  if ((role ?? user.role) === user.role && (disabled ?? user.disabled) === user.disabled) return;
  const [other] = await db(d1)
    .select({ id: users.id })
    .from(users)
    .where(and(eq(users.accountId, accountId), sql`${users.id} <> ${id}`, eq(users.role, "admin"), eq(users.disabled, false)))
    .limit(1);
  if (!other) throw new ApiError("last_admin", "This is the account's last enabled admin; make another user admin first.");
  throw new ApiError(
    "last_active_key",
    "This user owns the account's last lasting admin key (full access, no expiry); give another admin such a key first.",
  );
}

async function findUser(d1: D1Database, accountId: string, id: string): Promise<User> {
  const [user] = await db(d1)
    .select()
    .from(users)
    .where(and(eq(users.accountId, accountId), eq(users.id, id)))
    .limit(1);
  if (!user) throw new ApiError("not_found", "No user with this id in this account.");
  return user;
}
