import { and, eq, sql } from "drizzle-orm";
import { Hono } from "hono";
import { authenticate, guard } from "../auth/middleware";
import { requireAdmin } from "../auth/principal";
import { Fields, readJson } from "../body";
import { auditIfChanged } from "../db/audit";
import { batch, db } from "../db/client";
import { listPage, readPage } from "../db/pagination";
import { type User, users } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { newId } from "../keys/format";
import { liveKeyIds } from "../keys/store";
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
  .use(authenticate, guard(requireAdmin))
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

    const user = await findUser(c.env.DB, p.accountId, c.req.param("id"));
    const next = { role: role ?? user.role, disabled: disabled ?? user.disabled };
    if (next.role === user.role && next.disabled === user.disabled) return c.json(userView(user));

    const d = db(c.env.DB);
    const losesAdmin = user.role === "admin" && !user.disabled && (next.role !== "admin" || next.disabled);
    const now = new Date();
    const [updated] = await batch(c.env.DB, [
      d
        .update(users)
        .set(next)
        .where(
          and(
            eq(users.id, user.id),
            // Never leave an account without an enabled admin, even under concurrent changes.
            losesAdmin
              ? sql`EXISTS (SELECT 1 FROM users other WHERE other.account_id = ${p.accountId} AND other.id <> ${user.id} AND other.role = 'admin' AND other.disabled = 0)`
              : undefined,
          ),
        ),
      auditIfChanged(
        c.env.DB,
        { accountId: p.accountId, actor: p.userId, action: "user.updated", target: user.id, requestId: c.get("requestId") },
        now,
      ),
    ]);
    if (updated?.meta.changes !== 1)
      throw new ApiError("last_admin", "This is the account's last enabled admin; make another user admin first.");
    // The user's keys act with the user's rights: their counters must see the change before we answer.
    await reloadKeys(c.env, await liveKeyIds(d, { ownerId: user.id }, now));
    return c.json(userView({ ...user, ...next }));
  })
  .all("/", allow("GET", "POST"))
  .all("/:id", allow("GET", "PATCH"));

async function findUser(d1: D1Database, accountId: string, id: string): Promise<User> {
  const [user] = await db(d1)
    .select()
    .from(users)
    .where(and(eq(users.accountId, accountId), eq(users.id, id)))
    .limit(1);
  if (!user) throw new ApiError("not_found", "No user with this id in this account.");
  return user;
}
