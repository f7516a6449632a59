import type { z } from "@hono/zod-openapi";
import { and, asc, eq } from "drizzle-orm";
import { FULL_ACCESS } from "../core/grants";
import { newId } from "../core/ids";
import type { Principal } from "../core/principal";
import { allowedIpsColumn, creditsColumn, externalChange, sentLimits, shorthand, storedMeta } from "../core/schemas";
import { DEFAULT_POLICY, type Limit } from "../core/window";
import { reloadAccounts, reloadKeys, reloadPeople, writeChange } from "../keys/reload";
import { keyUsage, liveKeyIds, mintKey } from "../keys/store";
import { newInvitation } from "../people/invitations";
import { peopleWithSessions } from "../people/sessions";
import { planCredits } from "../plans/store";
import { dashboardOrigin } from "../platform/config";
import { auditInsert } from "../platform/db/audit";
import { batch, violates, violatesReference } from "../platform/db/client";
import type { Page } from "../platform/db/pagination";
import { type Account, accounts, apiKeys, users } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { ApiError, invalidRequest } from "../platform/errors";
import type { AccountChange, NewAccount, OperatorAccountChange } from "./schemas";
import { type AccountRecord, findAccount, listEvents } from "./store";

// The account aggregate on Deps: its writes, each with its audit events in one batch, and its reads (the account, and
// the activity the principal may see: store.ts, visibleTo).

/**
 * An account, its first admin and that admin's first full-access key (the caller shows it once); the admin's
 * invitation links to the dashboard's origin, or to `reachedAt`'s (the URL Keygate was reached at).
 */
export async function provisionAccount(
  deps: Deps,
  {
    name,
    slug,
    keyPrefix,
    membersCanCreateKeys,
    maxRateLimit,
    admin,
    plan,
    credits,
    userCredits,
    externalId,
    meta,
    keyFormat,
    ...limits
  }: z.infer<typeof NewAccount>,
  reachedAt: URL,
) {
  const now = deps.now();
  const account: Account = {
    id: newId("acc"),
    name,
    slug: slug ?? null,
    keyPrefix,
    membersCanCreateKeys,
    // Named limits only when sent: an account that sets none takes its plan's, else the single default.
    ...accountLimitColumns(sentLimits(limits)),
    maxRateLimit: maxRateLimit?.limit ?? null,
    maxRateLimitWindowSeconds: maxRateLimit?.windowSeconds ?? null,
    planId: plan ?? null,
    createdAt: now.toISOString(),
    externalId: externalId ?? null,
    meta: storedMeta(meta),
    credits: creditsColumn(credits),
    userCredits: creditsColumn(userCredits),
    keyFormat,
    leakResponse: "notify",
    allowedIps: null,
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
  const { raw, row } = await mintAdminKey(deps, account, user.id, user.id, "default", now);
  const { invitation, statements } = await newInvitation(deps.env.DB, dashboardOrigin(deps.config, reachedAt), user.id, now);
  const audit = { accountId: account.id, actor: "operator", requestId: deps.requestId };
  const d = deps.db;
  try {
    await batch(deps.env.DB, [
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
    // The plan it names does not exist: nothing of the batch was written.
    if (violatesReference(err)) throw noSuchPlan();
    externalIdTaken(err, externalId);
  }
  // What the account's keys spend when it has none of its own: its plan's (read after the write found the plan).
  const onPlan = await planCredits(d, account.planId);
  return { account: { ...account, ...onPlan }, user, raw, row, now, invitation };
}

/**
 * The way back for an account that lost every admin key: a full-access key for one of its enabled admins (`userId`,
 * by default the longest-standing one), audited as the operator's act.
 */
export async function recoverAccount(deps: Deps, accountId: string, userId: string | undefined) {
  const d = deps.db;
  const account = await findAccount(d, accountId);
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
  const now = deps.now();
  const { raw, row } = await mintAdminKey(deps, account, admin.id, "operator", "recovery", now);
  const audit = { accountId: account.id, actor: "operator", requestId: deps.requestId };
  await batch(deps.env.DB, [
    d.insert(apiKeys).values(row),
    auditInsert(d, { ...audit, action: "account.recovered", target: admin.id }, now),
    auditInsert(d, { ...audit, action: "key.created", target: row.id }, now),
  ]);
  return { raw, row, now };
}

/**
 * Changes the account's default limit, members' ceiling, key-creation policy, key format, leak response or allowed
 * addresses, and answers the account as stored; keys pick up a new limit right after. A change of `allowedIps` may
 * remove rights from every key that has no list of its own: it is written as a revocation is and is in every key's
 * object before the answer (503 `change_pending` otherwise, in force within seconds all the same).
 */
export async function updateAccount(
  deps: Deps,
  p: Principal,
  { maxRateLimit, membersCanCreateKeys, rateLimit, rateLimits, leakResponse, allowedIps, keyFormat }: z.infer<typeof AccountChange>,
): Promise<AccountRecord> {
  const limits = sentLimits({ rateLimit, rateLimits });
  const change = {
    ...(limits ? accountLimitColumns(limits) : {}),
    ...(maxRateLimit === undefined
      ? {}
      : { maxRateLimit: maxRateLimit?.limit ?? null, maxRateLimitWindowSeconds: maxRateLimit?.windowSeconds ?? null }),
    ...(membersCanCreateKeys === undefined ? {} : { membersCanCreateKeys }),
    ...(leakResponse === undefined ? {} : { leakResponse }),
    ...(allowedIps === undefined ? {} : { allowedIps: allowedIpsColumn(allowedIps) }),
    // Only keys issued from now on take it: a key's format is its text, which never changes.
    ...(keyFormat === undefined ? {} : { keyFormat }),
  };
  if (Object.keys(change).length > 0) {
    const d = deps.db;
    const now = deps.now();
    // Read before the write: a key created after it reads the new list when first used.
    const keyIds = allowedIps === undefined ? [] : await liveKeyIds(d, { accountId: p.accountId }, now);
    await writeChange(deps, keyIds, () =>
      batch(deps.env.DB, [
        d.update(accounts).set(change).where(eq(accounts.id, p.accountId)),
        auditInsert(
          d,
          { accountId: p.accountId, actor: p.userId, action: "account.updated", target: p.accountId, requestId: deps.requestId },
          now,
        ),
      ]),
    );
    if (limits) await reloadAccounts(deps, [p.accountId]);
    if (allowedIps !== undefined) await reloadKeys(deps, keyIds);
    // Every key of the account carries its limit (the default, or members' ceiling); an account may have many keys,
    // so this finishes after the answer (a limit is not a right: a key that misses it catches up within RECORD_TTL_MS).
    else if (limits || maxRateLimit !== undefined)
      deps.waitUntil(
        liveKeyIds(d, { accountId: p.accountId }, now)
          .then((ids) => reloadKeys(deps, ids))
          .catch(() => {}),
      );
    // So does every person's session (their objects, then this isolate's leases of them within a second).
    if (limits || maxRateLimit !== undefined)
      deps.waitUntil(
        peopleWithSessions(deps, { accountId: p.accountId }, now)
          .then((ids) => reloadPeople(deps, ids))
          .catch(() => {}),
      );
  }
  return getAccount(deps, p);
}

/**
 * The operator's change of an account's plan, credits pool, `externalId` and `meta`, audited as the operator's act; 404
 * for no such account, 400 for no such plan.
 */
export async function changeAccount(
  deps: Deps,
  id: string,
  { plan, credits, userCredits, ...external }: z.infer<typeof OperatorAccountChange>,
): Promise<AccountRecord> {
  const d = deps.db;
  const account = await findAccount(d, id);
  if (!account) throw new ApiError("not_found", "No account with this id.");
  const change = {
    ...externalChange(external),
    ...(plan === undefined ? {} : { planId: plan }),
    ...(credits === undefined ? {} : { credits: creditsColumn(credits) }),
    ...(userCredits === undefined ? {} : { userCredits: creditsColumn(userCredits) }),
  };
  if (Object.keys(change).length === 0) return account;
  const now = deps.now();
  await batch(deps.env.DB, [
    d.update(accounts).set(change).where(eq(accounts.id, account.id)),
    auditInsert(
      d,
      { accountId: account.id, actor: "operator", action: "account.updated", target: account.id, requestId: deps.requestId },
      now,
    ),
  ]).catch((err: unknown) => {
    // The plan it names does not exist: nothing of the batch was written.
    if (violatesReference(err)) throw noSuchPlan();
    externalIdTaken(err, external.externalId);
  });
  // The account's plan is its keys' limits and its pool their credits: in the keys' objects before it is answered, as
  // `externalId` and `meta` are.
  await reloadExternal(deps, account.id, { ...external, ...(plan === undefined ? {} : { plan }), credits, userCredits }, now);
  const onPlan = plan === undefined ? account : await planCredits(d, plan);
  return { ...account, ...change, planCredits: onPlan.planCredits, planUserCredits: onPlan.planUserCredits };
}

/**
 * Every key of the account carries the account's plan, credits pool, `externalId` and `meta` to verify and the
 * upstream: a change of any is in the keys' objects before it is answered (503 `change_pending` otherwise, in force
 * within seconds).
 */
async function reloadExternal(deps: Deps, accountId: string, change: z.infer<typeof OperatorAccountChange>, now: Date) {
  if (Object.values(change).every((v) => v === undefined)) return;
  if (change.plan !== undefined || change.credits !== undefined) await reloadAccounts(deps, [accountId]);
  await reloadKeys(deps, await liveKeyIds(deps.db, { accountId }, now));
  // People's sessions carry the plan and the credits (not the account's `externalId` or `meta`).
  if (change.plan !== undefined || change.credits !== undefined || change.userCredits !== undefined)
    await reloadPeople(deps, await peopleWithSessions(deps, { accountId }, now));
}

/** The unique index on accounts' `externalId`: another account has it, and nothing was written. */
function externalIdTaken(err: unknown, externalId: string | null | undefined): never {
  if (violates(err, "accounts.external_id"))
    throw new ApiError("external_id_taken", `The externalId ${externalId} belongs to another account.`);
  throw err;
}

/** The caller's account. */
export async function getAccount(deps: Deps, p: Principal): Promise<AccountRecord> {
  // The principal was read with its account a moment ago; accounts are never deleted.
  return (await findAccount(deps.db, p.accountId)) as AccountRecord;
}

/** How many events `accountActivity` shows. */
const RECENT_EVENTS = 50;

/**
 * The caller's account with its keys' activity (how many are active, the last use of any) and the latest events the
 * caller may see.
 */
export async function accountActivity(deps: Deps, p: Principal) {
  const [account, keys, events] = await Promise.all([
    getAccount(deps, p),
    keyUsage(deps.db, p.accountId, deps.now()),
    activity(deps, p, { limit: RECENT_EVENTS, after: null }),
  ]);
  return { account, ...keys, recentEvents: events.rows };
}

/** A page of the account's events the caller may see (a member: their own actions and their keys' events), newest first. */
export function activity(deps: Deps, p: Principal, page: Page) {
  return listEvents(deps.db, p, page);
}

/** How an account's default limits are stored: the list as JSON, and the `rateLimit` it shows in its columns. */
function accountLimitColumns(limits: Limit[] | undefined) {
  if (!limits) return { rateLimit: DEFAULT_POLICY.limit, rateLimitWindowSeconds: DEFAULT_POLICY.windowSeconds, rateLimits: null };
  const { limit, windowSeconds } = shorthand(limits);
  return { rateLimit: limit, rateLimitWindowSeconds: windowSeconds, rateLimits: JSON.stringify(limits) };
}

/** A full-access key without expiry or limit of its own, for an admin of the account: the way into an account. */
function mintAdminKey(deps: Deps, account: Account, ownerId: string, createdBy: string, name: string, now: Date) {
  const input = {
    accountId: account.id,
    ownerId,
    createdBy,
    name,
    prefix: account.keyPrefix,
    format: account.keyFormat,
    namespace: deps.config.keyPrefixNamespace,
    scopes: ["*"],
    expiresAt: null,
    limits: null,
  };
  return mintKey(input, now);
}

const noSuchPlan = () => invalidRequest([{ field: "plan", message: "is not a plan (PUT /v1/plans/{id} defines one)" }]);
