import type { z } from "@hono/zod-openapi";
import { and, asc, eq } from "drizzle-orm";
import { newId } from "../core/ids";
import { FULL_ACCESS, type Principal } from "../core/principal";
import type { RequestContext } from "../guards/context";
import { reloadKeys } from "../keys/reload";
import { liveKeyIds, mintKey } from "../keys/store";
import { newInvitation } from "../people/invitations";
import { dashboardOrigin } from "../platform/config";
import { auditInsert } from "../platform/db/audit";
import { batch, db, violates } from "../platform/db/client";
import { type Account, accounts, apiKeys, users } from "../platform/db/schema";
import { ApiError, invalidRequest } from "../platform/errors";
import type { AccountChange, NewAccount } from "./schemas";

// The account aggregate's writes, each with its audit events in one batch.

/** An account, its first admin and that admin's first full-access key (the caller shows it once). */
export async function provisionAccount(
  c: RequestContext,
  { name, slug, keyPrefix, membersCanCreateKeys, rateLimit, maxRateLimit, admin }: z.infer<typeof NewAccount>,
) {
  const now = new Date();
  const account: Account = {
    id: newId("acc"),
    name,
    slug: slug ?? null,
    keyPrefix,
    membersCanCreateKeys,
    rateLimit: rateLimit.limit,
    rateLimitWindowSeconds: rateLimit.windowSeconds,
    maxRateLimit: maxRateLimit?.limit ?? null,
    maxRateLimitWindowSeconds: maxRateLimit?.windowSeconds ?? null,
    createdAt: now.toISOString(),
  };
  const user = {
    id: newId("usr"),
    accountId: account.id,
    email: admin.email,
    role: "admin" as const,
    disabled: false,
    grants: JSON.stringify([FULL_ACCESS]),
    passwordHash: null,
    createdAt: account.createdAt,
  };
  const { raw, row } = await mintAdminKey(account, user.id, user.id, "default", now);
  const { invitation, statements } = await newInvitation(c.env.DB, dashboardOrigin(c.get("config"), new URL(c.req.url)), user.id, now);
  const audit = { accountId: account.id, actor: "operator", requestId: c.get("requestId") };
  const d = db(c.env.DB);
  try {
    await batch(c.env.DB, [
      d.insert(accounts).values(account),
      d.insert(users).values(user),
      d.insert(apiKeys).values(row),
      auditInsert(d, { ...audit, action: "account.created", target: account.id }, now),
      auditInsert(d, { ...audit, action: "user.created", target: user.id }, now),
      auditInsert(d, { ...audit, action: "key.created", target: row.id }, now),
      ...statements,
    ]);
  } catch (err) {
    // The unique index on accounts.slug: nothing of the batch was written.
    if (violates(err, "accounts.slug")) throw new ApiError("slug_taken", `The slug ${slug} belongs to another account.`);
    throw err;
  }
  return { account, user, raw, row, now, invitation };
}

/**
 * The way back for an account that lost every admin key: a full-access key for one of its enabled admins (`userId`,
 * by default the longest-standing one), audited as the operator's act.
 */
export async function recoverAccount(c: RequestContext, accountId: string, userId: string | undefined) {
  const d = db(c.env.DB);
  const [account] = await d.select().from(accounts).where(eq(accounts.id, accountId)).limit(1);
  if (!account) throw new ApiError("not_found", "No account with this id.");
  const [admin] = await d
    .select()
    .from(users)
    .where(
      and(eq(users.accountId, account.id), eq(users.role, "admin"), eq(users.disabled, false), userId ? eq(users.id, userId) : undefined),
    )
    .orderBy(asc(users.createdAt), asc(users.id))
    .limit(1);
  if (!admin)
    throw invalidRequest([
      { field: "userId", message: userId ? "is not an enabled admin of this account" : "the account has no enabled admin" },
    ]);
  const now = new Date();
  const { raw, row } = await mintAdminKey(account, admin.id, "operator", "recovery", now);
  const audit = { accountId: account.id, actor: "operator", requestId: c.get("requestId") };
  await batch(c.env.DB, [
    d.insert(apiKeys).values(row),
    auditInsert(d, { ...audit, action: "account.recovered", target: admin.id }, now),
    auditInsert(d, { ...audit, action: "key.created", target: row.id }, now),
  ]);
  return { raw, row, now };
}

/** Changes the account's default limit, members' ceiling or key-creation policy; keys pick up a new limit right after. */
export async function updateAccount(
  c: RequestContext,
  p: Principal,
  { rateLimit, maxRateLimit, membersCanCreateKeys }: z.infer<typeof AccountChange>,
): Promise<void> {
  const change = {
    ...(rateLimit ? { rateLimit: rateLimit.limit, rateLimitWindowSeconds: rateLimit.windowSeconds } : {}),
    ...(maxRateLimit === undefined
      ? {}
      : { maxRateLimit: maxRateLimit?.limit ?? null, maxRateLimitWindowSeconds: maxRateLimit?.windowSeconds ?? null }),
    ...(membersCanCreateKeys === undefined ? {} : { membersCanCreateKeys }),
  };
  if (Object.keys(change).length > 0) {
    const d = db(c.env.DB);
    const now = new Date();
    await batch(c.env.DB, [
      d.update(accounts).set(change).where(eq(accounts.id, p.accountId)),
      auditInsert(
        d,
        { accountId: p.accountId, actor: p.userId, action: "account.updated", target: p.accountId, requestId: c.get("requestId") },
        now,
      ),
    ]);
    // Every key of the account carries its limit (the default, or members' ceiling); an account may have many keys,
    // so this finishes after the answer (a limit is not a right: a key that misses it catches up within RECORD_TTL_MS).
    if (rateLimit || maxRateLimit !== undefined) {
      c.executionCtx.waitUntil(
        liveKeyIds(d, { accountId: p.accountId }, now)
          .then((ids) => reloadKeys(c.get("deps"), ids))
          .catch(() => {}),
      );
    }
  }
}

/** A full-access key without expiry or limit of its own, for an admin of the account: the way into an account. */
function mintAdminKey(account: Account, ownerId: string, createdBy: string, name: string, now: Date) {
  const input = {
    accountId: account.id,
    ownerId,
    createdBy,
    name,
    prefix: account.keyPrefix,
    scopes: ["*"],
    expiresAt: null,
    rateLimit: null,
  };
  return mintKey(input, now);
}
