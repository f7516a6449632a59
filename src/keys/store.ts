import { and, eq, inArray, or, sql } from "drizzle-orm";
import type { CreditsConfig } from "../core/credits";
import { hashKey, keyIdOf } from "../core/ids";
import { generateKey, type KeyFormat, type KeyShape, readKey } from "../core/key-format";
import type { AuthMethod, KeyRecord as CoreKeyRecord, Principal } from "../core/principal";
import { allowedIpsColumn, creditsColumn, shorthand, storedMeta } from "../core/schemas";
import type { Limit } from "../core/window";
import type { Db } from "../platform/db/client";
import { listPage, type Page } from "../platform/db/pagination";
import { type ApiKey, accountLimitColumns, accounts, apiKeys, plans, users } from "../platform/db/schema";

// The keys' rules are core's; the key's object, its authorization and its service reach them through here.
export { keyLimits } from "../core/principal";
export { evaluateKey, type KeyStatus, keyStatus, type VerifyResult } from "../core/verdict";

/**
 * SQL condition for keys that authenticate at `iso`. SQL compares the stored instants as text, which is exact because
 * every stored instant is a `toISOString()` of a year 0000-9999 (fixed width, UTC); the API refuses any other.
 */
export function activeAt(iso: string) {
  return sql`(${apiKeys.revokedAt} IS NULL OR ${apiKeys.revokedAt} > ${iso}) AND (${apiKeys.expiresAt} IS NULL OR ${apiKeys.expiresAt} > ${iso})`;
}

export type NewKey = {
  accountId: string;
  ownerId: string;
  createdBy: string;
  name: string;
  /** The account's key prefix. */
  prefix: string;
  /** The account's format now, and for a checksummed key the deployment's namespace. */
  format: KeyFormat;
  namespace: string;
  scopes: string[];
  expiresAt: string | null;
  /** The key's own limits; null: the account's default ones. */
  limits: Limit[] | null;
  /** The key's own credits; null or absent: none (unlimited). */
  credits?: CreditsConfig | null;
  rotatedFrom?: string;
  externalId?: string | null;
  meta?: Record<string, unknown> | null;
  /** The CIDR blocks the key may be used from (canonical); null or absent: its account's list applies. */
  allowedIps?: string[] | null;
};

/** Mints a key and its row; the caller writes the row in the same batch as its audit event. */
export async function mintKey(input: NewKey, now: Date): Promise<{ raw: string; row: ApiKey }> {
  const raw = generateKey(input.format, input.prefix, input.namespace);
  // What lists show: everything before the random part (`kg_sk` for a checksummed key) and its first 8 characters.
  const { prefix, start } = readKey(raw, input.namespace) as KeyShape;
  const hash = await hashKey(raw);
  const row: ApiKey = {
    id: await keyIdOf(hash),
    accountId: input.accountId,
    ownerId: input.ownerId,
    createdBy: input.createdBy,
    name: input.name,
    prefix,
    start,
    hash,
    scopes: JSON.stringify(input.scopes),
    expiresAt: input.expiresAt,
    ...storedLimitColumns(input.limits),
    createdAt: now.toISOString(),
    lastUsedAt: null,
    lastAuthMethod: null,
    revokedAt: null,
    revokedBy: null,
    rotatedFrom: input.rotatedFrom ?? null,
    externalId: input.externalId ?? null,
    meta: storedMeta(input.meta),
    credits: creditsColumn(input.credits),
    allowedIps: allowedIpsColumn(input.allowedIps ?? null),
    leakedAt: null,
  };
  return { raw, row };
}

/** How a key's or an account's limits are stored: the list as JSON, and the `rateLimit` it shows in its columns. */
export function storedLimitColumns(limits: Limit[] | null) {
  const one = limits && shorthand(limits);
  return {
    rateLimit: one?.limit ?? null,
    rateLimitWindowSeconds: one?.windowSeconds ?? null,
    rateLimits: limits && JSON.stringify(limits),
  };
}

/** A key record as D1 holds it: the row the verdict (core/verdict.ts) and the principal are drawn from. */
export type KeyRecord = Omit<CoreKeyRecord, "key"> & { key: ApiKey };

/**
 * Reads a key record by id, by hash, or by either (`{id, hash}`: the key whose id was worked out from its hash, or a key
 * issued before with that hash), in one D1 read.
 */
export async function loadKey(d: Db, by: { id: string; hash?: string } | { hash: string }): Promise<KeyRecord | undefined> {
  const [found] = await d
    .select({
      key: apiKeys,
      role: users.role,
      disabled: users.disabled,
      grants: users.grants,
      keyPrefix: accounts.keyPrefix,
      accountSlug: accounts.slug,
      account: accountLimitColumns,
      accountExternal: { externalId: accounts.externalId, meta: accounts.meta },
      accountAllowedIps: accounts.allowedIps,
    })
    .from(apiKeys)
    .innerJoin(users, eq(users.id, apiKeys.ownerId))
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .leftJoin(plans, eq(plans.id, accounts.planId))
    .where(
      "id" in by
        ? by.hash === undefined
          ? eq(apiKeys.id, by.id)
          : or(eq(apiKeys.id, by.id), eq(apiKeys.hash, by.hash))
        : eq(apiKeys.hash, by.hash),
    )
    .limit(1);
  return found;
}

/** The unique index a key's `externalId` clashes on: one per account. */
export const KEY_EXTERNAL_ID = "api_keys.account_id, api_keys.external_id";

/** The id of the key with this hash. A hash always names the same key, so callers may cache the answer. */
export async function keyIdByHash(d: Db, hash: string): Promise<string | undefined> {
  const [found] = await d.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.hash, hash)).limit(1);
  return found?.id;
}

/** Ids of keys that are not revoked for good, by owner, for a whole account or for every account on a plan: the ones whose cached rights must be reloaded. */
export async function liveKeyIds(
  d: Db,
  by: { ownerId: string } | { accountId: string } | { planId: string },
  now: Date,
): Promise<string[]> {
  const rows = await d
    .select({ id: apiKeys.id })
    .from(apiKeys)
    .where(
      and(
        "ownerId" in by
          ? eq(apiKeys.ownerId, by.ownerId)
          : "accountId" in by
            ? eq(apiKeys.accountId, by.accountId)
            : sql`${apiKeys.accountId} IN (SELECT id FROM accounts WHERE plan_id = ${by.planId})`,
        sql`(${apiKeys.revokedAt} IS NULL OR ${apiKeys.revokedAt} > ${now.toISOString()})`,
      ),
    );
  return rows.map((r) => r.id);
}

/** How long `lastUsedAt` may lag behind the truth: at most one write per key per interval. */
export const LAST_USED_INTERVAL_MS = 60_000;

/** Records a use of the key. Its counter is the one writer and decides when (see LAST_USED_INTERVAL_MS). */
export function recordUse(d: Db, keyId: string, method: AuthMethod, now: Date) {
  return d.update(apiKeys).set({ lastUsedAt: now.toISOString(), lastAuthMethod: method }).where(eq(apiKeys.id, keyId));
}

/** SQL: the keys `p` may see and manage: every key of the account for an admin, a member's own keys for a member. */
export function visibleTo(p: Principal) {
  return and(eq(apiKeys.accountId, p.accountId), p.role === "admin" ? undefined : eq(apiKeys.ownerId, p.userId));
}

export async function findKey(d: Db, p: Principal, id: string): Promise<ApiKey | undefined> {
  const [key] = await d
    .select()
    .from(apiKeys)
    .where(and(visibleTo(p), eq(apiKeys.id, id)))
    .limit(1);
  return key;
}

/** The keys among `ids` that `p` may see, in one read. */
export function findKeys(d: Db, p: Principal, ids: string[]): Promise<ApiKey[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return d
    .select()
    .from(apiKeys)
    .where(and(visibleTo(p), inArray(apiKeys.id, ids)));
}

export function listKeys(d: Db, p: Principal, page: Page) {
  return listPage(d, apiKeys, visibleTo(p), page);
}

/**
 * SQL: the key under `alias` keeps its account reachable: full access, owned by an enabled admin, active, and neither
 * expiring nor scheduled for revocation (a rotation's grace period). Only such keys count as an account's last key.
 */
export function lastingKey(alias: string) {
  return sql.raw(
    `(${alias}.scopes = '["*"]' AND ${alias}.revoked_at IS NULL AND ${alias}.expires_at IS NULL AND EXISTS (SELECT 1 FROM users owner WHERE owner.id = ${alias}.owner_id AND owner.role = 'admin' AND owner.disabled = 0))`,
  );
}

/**
 * Revokes a key at `at` unless it is a lasting key and the account would be left without another one. One guarded
 * statement, evaluated in the database, so concurrent revocations (or a rotation racing a revocation) cannot remove
 * the last two; a key that is not lasting (scoped, expiring, in its grace period, a member's) can always be revoked.
 */
export function revokeStatement(d: Db, key: ApiKey, by: string, at: Date, now: Date) {
  return d
    .update(apiKeys)
    .set({ revokedAt: at.toISOString(), revokedBy: by })
    .where(
      and(
        eq(apiKeys.id, key.id),
        sql`(${apiKeys.revokedAt} IS NULL OR ${apiKeys.revokedAt} > ${now.toISOString()})`,
        sql`(NOT ${lastingKey("api_keys")} OR EXISTS (SELECT 1 FROM api_keys other WHERE other.account_id = ${key.accountId} AND other.id <> ${key.id} AND ${lastingKey("other")}))`,
      ),
    );
}

/** Active keys of an account and the last time any of its keys was used. */
export async function keyUsage(d: Db, accountId: string, now: Date) {
  const [row] = await d
    .select({
      activeKeys: sql<number>`sum(CASE WHEN ${activeAt(now.toISOString())} THEN 1 ELSE 0 END)`,
      lastUsedAt: sql<string | null>`max(${apiKeys.lastUsedAt})`,
    })
    .from(apiKeys)
    .where(eq(apiKeys.accountId, accountId));
  return { activeKeys: row?.activeKeys ?? 0, lastUsedAt: row?.lastUsedAt ?? null };
}
