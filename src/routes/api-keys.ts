import { and, eq } from "drizzle-orm";
import { Hono } from "hono";
import { rateLimitCeiling, withinCeiling } from "../accounts/limits";
import { authenticate } from "../auth/middleware";
import { canManageKey, FULL_ACCESS, type Principal } from "../auth/principal";
import { Fields, readJson, readRateLimit } from "../body";
import { auditIfChanged, auditInsert } from "../db/audit";
import { batch, db } from "../db/client";
import { readPage } from "../db/pagination";
import { type ApiKey, accounts, apiKeys, users } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { findKey, keyPolicy, keyStatus, keyView, listKeys, mintKey, revokeStatement } from "../keys/store";
import { reloadKeys } from "../ratelimit/limiter";
import type { Policy } from "../ratelimit/window";
import { allow } from "./method-not-allowed";

const GRANT = /^([a-z][a-z0-9]{0,31}):([A-Za-z0-9][A-Za-z0-9_.-]{0,127})$/;
const RESOURCE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const MAX_GRANTS = 100;
/** The longest grace period a rotated key may keep working: seven days. */
export const MAX_GRACE_SECONDS = 7 * 24 * 3600;

/** API keys of the caller's account. Admins manage every key; members only their own. */
export const apiKeysRoutes = new Hono<AppEnv>()
  .use(authenticate("full"))
  .post("/", async (c) => {
    const p = c.get("principal");
    const policy = await memberPolicy(c.env.DB, p);
    const f = new Fields(await readJson(c));
    const now = new Date();
    const name = f.string("name", { required: true, max: 100 });
    const scopes = readScopes(f, c.get("config").resourceTypes);
    const expiresAt = f.futureDate("expiresAt", now) ?? null;
    const ownerId = f.string("ownerId", { max: 64 });
    const rateLimit = readRateLimit(f) ?? null;
    if (rateLimit) checkCeiling(f, policy, rateLimit);
    f.done();

    if (ownerId !== undefined && ownerId !== p.userId) await checkOwner(c.env.DB, p, ownerId);
    const { raw, row } = await mintKey(
      {
        accountId: p.accountId,
        ownerId: ownerId ?? p.userId,
        createdBy: p.userId,
        name: name as string,
        prefix: p.keyPrefix,
        scopes,
        expiresAt,
        rateLimit,
      },
      now,
    );
    const d = db(c.env.DB);
    await batch(c.env.DB, [
      d.insert(apiKeys).values(row),
      auditInsert(
        d,
        { accountId: p.accountId, actor: p.userId, action: "key.created", target: row.id, requestId: c.get("requestId") },
        now,
      ),
    ]);
    return c.json({ ...keyView(row, now), key: raw }, 201);
  })
  .get("/", async (c) => {
    const p = c.get("principal");
    const page = readPage(new URL(c.req.url).searchParams);
    const { rows, nextCursor } = await listKeys(db(c.env.DB), p.accountId, p.role === "admin" ? null : p.userId, page);
    const now = new Date();
    return c.json({ data: rows.map((k) => keyView(k, now)), nextCursor });
  })
  .get("/:id", async (c) => {
    const key = await findManagedKey(c.env.DB, c.get("principal"), c.req.param("id"));
    return c.json(keyView(key, new Date()));
  })
  .delete("/:id", async (c) => {
    const p = c.get("principal");
    const key = await findManagedKey(c.env.DB, p, c.req.param("id"));
    const now = new Date();
    // Deactivation is permanent and idempotent: deleting a revoked key answers with it unchanged, after making sure
    // its counter knows (a repeat completes a revocation whose reload failed).
    if (keyStatus(key, now) === "revoked") {
      await reloadKeys(c, [key.id]);
      return c.json(keyView(key, now));
    }
    const d = db(c.env.DB);
    const [revoked] = await batch(c.env.DB, [
      revokeStatement(d, key, p.userId, now, now),
      auditIfChanged(
        c.env.DB,
        { accountId: p.accountId, actor: p.userId, action: "key.revoked", target: key.id, requestId: c.get("requestId") },
        now,
      ),
    ]);
    const current =
      revoked?.meta.changes === 1
        ? { ...key, revokedAt: now.toISOString(), revokedBy: p.userId }
        : await findManagedKey(c.env.DB, p, key.id);
    if (keyStatus(current, now) !== "revoked") {
      throw new ApiError(
        "last_active_key",
        "This is the account's last lasting admin key (full access, an enabled admin's, no expiry, no grace period); create another before revoking it.",
      );
    }
    await reloadKeys(c, [key.id]);
    return c.json(keyView(current, now));
  })
  .post("/:id/rotate", async (c) => {
    const p = c.get("principal");
    const policy = await memberPolicy(c.env.DB, p);
    const old = await findManagedKey(c.env.DB, p, c.req.param("id"));
    const f = new Fields(await readJson(c));
    const grace = f.integer("gracePeriodSeconds", 0, MAX_GRACE_SECONDS) ?? 0;
    const rateLimit = readRateLimit(f);
    if (rateLimit) checkCeiling(f, policy, rateLimit);
    f.done();

    const now = new Date();
    if (old.revokedAt !== null || keyStatus(old, now) !== "active") {
      throw new ApiError(
        "key_not_active",
        `Key ${old.id} is ${keyStatus(old, now)}${old.revokedAt ? " or already rotated" : ""}; only an active key can be rotated.`,
      );
    }
    const { raw, row } = await mintKey(
      {
        accountId: p.accountId,
        ownerId: old.ownerId,
        createdBy: p.userId,
        name: old.name,
        prefix: old.prefix,
        scopes: JSON.parse(old.scopes) as string[],
        expiresAt: old.expiresAt,
        rateLimit: rateLimit ?? keyPolicy(old),
        rotatedFrom: old.id,
      },
      now,
    );
    const revokeAt = new Date(now.getTime() + grace * 1000);
    const audit = { accountId: p.accountId, actor: p.userId, requestId: c.get("requestId") };
    const d = db(c.env.DB);
    try {
      await batch(c.env.DB, [
        d.insert(apiKeys).values(row),
        revokeStatement(d, old, p.userId, revokeAt, now),
        auditInsert(d, { ...audit, action: "key.rotated", target: old.id }, now),
        auditInsert(d, { ...audit, action: "key.created", target: row.id }, now),
      ]);
    } catch (err) {
      // The unique index on rotated_from: another request rotated this key first. Nothing was written.
      if (String(err).includes("UNIQUE")) throw new ApiError("key_not_active", `Key ${old.id} has already been rotated.`);
      throw err;
    }
    try {
      await reloadKeys(c, [old.id]);
    } catch (err) {
      // The old key's counter did not hear of its revocation, so the rotation is not in force: undo it (the new key was
      // never shown to anyone) so that nothing changed and the request can be repeated.
      await batch(c.env.DB, [
        d.update(apiKeys).set({ revokedAt: now.toISOString(), revokedBy: p.userId, rotatedFrom: null }).where(eq(apiKeys.id, row.id)),
        d
          .update(apiKeys)
          .set({ revokedAt: null, revokedBy: null })
          .where(and(eq(apiKeys.id, old.id), eq(apiKeys.revokedAt, revokeAt.toISOString()))),
        auditInsert(d, { ...audit, action: "key.rotation_undone", target: old.id }, now),
      ]);
      throw err;
    }
    return c.json({ ...keyView(row, now), key: raw }, 201);
  })
  .all("/", allow("GET", "POST"))
  .all("/:id", allow("GET", "DELETE"))
  .all("/:id/rotate", allow("POST"));

/** Full access (`["*"]`, the default), or resource grants from `scopes` and the `<type>Ids` fields. */
function readScopes(f: Fields, resourceTypes: readonly string[]): string[] {
  const hint = `must be "*" or grants of the form <type>:<id> with a type among: ${resourceTypes.join(", ") || "(none configured)"}`;
  const scopes =
    f.stringArray("scopes", { maxItems: MAX_GRANTS, pattern: /^(\*|[a-z][a-z0-9]{0,31}:[A-Za-z0-9][A-Za-z0-9_.-]{0,127})$/, hint }) ?? [];
  scopes.forEach((s, i) => {
    const type = GRANT.exec(s)?.[1];
    if (type !== undefined && !resourceTypes.includes(type)) f.fail(`scopes[${i}]`, hint);
  });
  const grants = resourceTypes.flatMap(
    (type) =>
      f
        .stringArray(`${type}Ids`, { maxItems: MAX_GRANTS, pattern: RESOURCE_ID, hint: "must be a resource id" })
        ?.map((id) => `${type}:${id}`) ?? [],
  );
  const all = [...new Set([...scopes, ...grants])];
  if (all.includes(FULL_ACCESS) && all.length > 1) f.fail("scopes", `"*" (full access) cannot be combined with resource grants`);
  if (all.length > MAX_GRANTS) f.fail("scopes", `a key may carry at most ${MAX_GRANTS} grants`);
  return all.length === 0 ? [FULL_ACCESS] : all;
}

type MemberPolicy = { role: Principal["role"]; ceiling: Policy };

/**
 * Who may create keys and with which limit, read from the account now (it can change at any time): admins always, with
 * any limit; members only where the account allows it, with limits up to the account's `maxRateLimit`.
 */
async function memberPolicy(d1: D1Database, p: Principal): Promise<MemberPolicy> {
  const [account] = await db(d1).select().from(accounts).where(eq(accounts.id, p.accountId)).limit(1);
  if (!account) throw new ApiError("not_found", "No such account.");
  if (p.role !== "admin" && !account.membersCanCreateKeys) {
    throw new ApiError("insufficient_role", "Only account admins can create API keys in this account.");
  }
  return { role: p.role, ceiling: rateLimitCeiling(account) };
}

/** A member's own limit may be neither larger nor faster than the ceiling. */
function checkCeiling(f: Fields, policy: MemberPolicy, limit: Policy): void {
  if (policy.role === "admin" || withinCeiling(limit, policy.ceiling)) return;
  f.fail(
    "rateLimit",
    `members may set at most ${policy.ceiling.limit} requests per ${policy.ceiling.windowSeconds} s (the account's maxRateLimit)`,
  );
}

/** Only admins create keys for other users, and only for enabled users of their own account. */
async function checkOwner(d1: D1Database, p: Principal, ownerId: string): Promise<void> {
  if (p.role !== "admin") throw new ApiError("insufficient_role", "Only account admins can create keys for other users.");
  const [owner] = await db(d1)
    .select({ disabled: users.disabled })
    .from(users)
    .where(and(eq(users.accountId, p.accountId), eq(users.id, ownerId)))
    .limit(1);
  const problem = !owner ? "is not a user of this account" : owner.disabled ? "is a disabled user" : null;
  if (problem) throw new ApiError("invalid_request", `Invalid fields: ownerId.`, { errors: [{ field: "ownerId", message: problem }] });
}

/** A key of the caller's account that the caller may manage; anything else is 404, whoever owns it. */
async function findManagedKey(d1: D1Database, p: Principal, id: string): Promise<ApiKey> {
  const key = await findKey(db(d1), p.accountId, id);
  if (!key || !canManageKey(p, key.ownerId)) throw new ApiError("not_found", "No API key with this id in this account.");
  return key;
}
