import type { z } from "@hono/zod-openapi";
import { and, eq, sql } from "drizzle-orm";
import { rateLimitCeiling, withinCeiling } from "../core/ceilings";
import { blocks, within } from "../core/cidr";
import { storedCredits } from "../core/credits";
import type { KeyFormat } from "../core/key-format";
import type { Principal } from "../core/principal";
import { allowedIpsColumn, creditsConfig, externalChange, parseAllowedIps, parseMeta, sentLimits } from "../core/schemas";
import type { Limit, Policy } from "../core/window";
import { auditIfChanged, auditInsert } from "../platform/db/audit";
import { batch, type Db, violates } from "../platform/db/client";
import { eventIfChanged, newEvent, publishEvents } from "../platform/db/events";
import type { Page } from "../platform/db/pagination";
import { type Account, type ApiKey, accounts, apiKeys, users, webhookEvents } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { ApiError, type FieldError, invalidRequest } from "../platform/errors";
import { safeError } from "../platform/log";
import { keyEvent } from "./events";
import { reloadKeys, writeChange } from "./reload";
import { grants, type KeyChange, type NewKey, type Rotation } from "./schemas";
import { findKey, findKeys, KEY_EXTERNAL_ID, keyLimits, keyStatus, listKeys as keysPage, mintKey, revokeStatement } from "./store";

// The key aggregate's reads and writes, on Deps: the reads see what the principal may (store.ts, visibleTo); each write
// is guarded in D1, written with its audit event in one batch, and in force in the key's object before it is answered.
// Routes and dashboard pages call these; none reads or writes keys by hand.

/**
 * Creates a key for the caller (or, for admins, another user of the account): its grants checked against the configured
 * resource types, a member's limit against the ceiling (credits only restrict a key: anyone who may create it sets them),
 * the key and its audit event in one batch.
 */
export async function createKey(deps: Deps, p: Principal, body: z.infer<typeof NewKey>, sent: readonly string[]) {
  const { ceiling, format } = await issuing(deps.db, p);
  const now = deps.now();
  const { scopes, errors } = grants(body, sent, deps.config.resourceTypes);
  const { name, ownerId } = body;
  const expiresAt = body.expiresAt ?? null;
  const limits = sentLimits(body) ?? null;
  if (limits) errors.push(...overCeiling(ceiling, limits, body.rateLimits ? "rateLimits" : "rateLimit"));
  if (errors.length > 0) throw invalidRequest(errors);

  const role = ownerId !== undefined && ownerId !== p.userId ? await checkOwner(deps.db, p, ownerId) : p.role;
  const allowedIps = body.allowedIps ?? null;
  await checkAllowedIps(deps.db, p.accountId, role, allowedIps);
  const { raw, row } = await mintKey(
    {
      accountId: p.accountId,
      ownerId: ownerId ?? p.userId,
      createdBy: p.userId,
      name,
      prefix: p.keyPrefix,
      format,
      namespace: deps.config.keyPrefixNamespace,
      scopes,
      expiresAt,
      limits,
      credits: body.credits && creditsConfig(body.credits),
      externalId: body.externalId,
      meta: body.meta,
      allowedIps,
    },
    now,
  );
  const d = deps.db;
  const event = newEvent({ accountId: p.accountId, type: "api_key.created", data: { key: keyEvent(row), actor: p.userId } }, now);
  await batch(deps.env.DB, [
    d.insert(apiKeys).values(row),
    auditInsert(d, { accountId: p.accountId, actor: p.userId, action: "key.created", target: row.id, requestId: deps.requestId }, now),
    d.insert(webhookEvents).values(event),
  ]).catch(externalIdTaken(row.externalId));
  await publishEvents(deps, [event.id]);
  return { raw, row, now };
}

/**
 * Changes a key's `externalId`, `meta` and `allowedIps` (a key the caller may manage, as for revoking it), with its
 * audit event in one batch, and in the key's object before the answer, so verify and the upstream see them on the next
 * request. A narrower list removes rights: it is written as a revocation is (`writeChange`), so a write D1 answers late
 * is still in force within seconds.
 */
export async function updateKey(deps: Deps, p: Principal, id: string, change: z.infer<typeof KeyChange>) {
  const key = await getKey(deps, p, id);
  const now = deps.now();
  const { allowedIps } = change;
  if (allowedIps) await checkAllowedIps(deps.db, p.accountId, await ownerRole(deps.db, p, key.ownerId), allowedIps);
  const set = {
    ...externalChange(change),
    ...(allowedIps === undefined ? {} : { allowedIps: allowedIpsColumn(allowedIps) }),
  };
  if (Object.keys(set).length === 0) return { key, now };
  const d = deps.db;
  const write = () =>
    batch(deps.env.DB, [
      d.update(apiKeys).set(set).where(eq(apiKeys.id, key.id)),
      auditInsert(d, { accountId: p.accountId, actor: p.userId, action: "key.updated", target: key.id, requestId: deps.requestId }, now),
    ]);
  await (allowedIps === undefined ? write() : writeChange(deps, [key.id], write)).catch(externalIdTaken(change.externalId));
  await reloadKeys(deps, [key.id]);
  return { key: { ...key, ...set }, now };
}

/** The unique index on a key's `externalId` within its account: another key has it, and nothing was written. */
function externalIdTaken(externalId: string | null | undefined) {
  return (err: unknown): never => {
    if (violates(err, KEY_EXTERNAL_ID))
      throw new ApiError("external_id_taken", `Another key of this account has the externalId ${externalId}.`);
    throw err;
  };
}

/**
 * Revokes a key for good, guarded in D1 so the account keeps a lasting key, and puts the revocation in force in the
 * key's object before answering (503 `change_pending` otherwise, in force soon after all the same; a repeat completes
 * it at once, even with nothing to store).
 */
export async function revokeKey(deps: Deps, p: Principal, id: string): Promise<{ key: ApiKey; now: Date }> {
  const key = await getKey(deps, p, id);
  const now = deps.now();
  // Deactivation is permanent and idempotent: deleting a revoked key answers with it unchanged, after making sure
  // its counter knows (a repeat completes a revocation whose reload failed).
  if (keyStatus(key, now) === "revoked") {
    await reloadKeys(deps, [key.id]);
    return { key, now };
  }
  const d = deps.db;
  const event = newEvent(
    { accountId: p.accountId, type: "api_key.revoked", data: { key: keyEvent({ ...key, revokedAt: now.toISOString() }), actor: p.userId } },
    now,
  );
  const [revoked] = await writeChange(deps, [key.id], () =>
    batch(deps.env.DB, [
      revokeStatement(d, key, p.userId, now, now),
      auditIfChanged(
        deps.env.DB,
        { accountId: p.accountId, actor: p.userId, action: "key.revoked", target: key.id, requestId: deps.requestId },
        now,
      ),
      eventIfChanged(deps.env.DB, event),
    ]),
  );
  // Told once the revocation is stored (even when putting it in force still fails: it stands).
  if (revoked?.meta.changes === 1) await publishEvents(deps, [event.id]);
  const current =
    revoked?.meta.changes === 1 ? { ...key, revokedAt: now.toISOString(), revokedBy: p.userId } : await getKey(deps, p, key.id);
  if (keyStatus(current, now) !== "revoked") {
    throw new ApiError(
      "last_active_key",
      "This is the account's last lasting admin key (full access, an enabled admin's, no expiry, no grace period); create another before revoking it.",
    );
  }
  await reloadKeys(deps, [key.id]);
  return { key: current, now };
}

/**
 * Replaces a key: the new key inherits name, scopes, owner, expiry, limit and credits (or takes new ones); the old one is
 * revoked at the end of the grace period, in force in its object before the answer. A rotation whose outcome is
 * unknown is undone (see undoRotation).
 */
export async function rotateKey(deps: Deps, p: Principal, id: string, rotation: z.infer<typeof Rotation>) {
  const { ceiling, format } = await issuing(deps.db, p);
  const old = await getKey(deps, p, id);
  const { gracePeriodSeconds: grace } = rotation;
  if (rotation.allowedIps) await checkAllowedIps(deps.db, p.accountId, await ownerRole(deps.db, p, old.ownerId), rotation.allowedIps);
  const limits = sentLimits(rotation);
  if (limits) {
    const errors = overCeiling(ceiling, limits, rotation.rateLimits ? "rateLimits" : "rateLimit");
    if (errors.length > 0) throw invalidRequest(errors);
  }

  const now = deps.now();
  if (old.revokedAt !== null || keyStatus(old, now) !== "active") {
    throw new ApiError(
      "key_not_active",
      `Key ${old.id} is ${keyStatus(old, now)}${old.revokedAt ? " or already rotated" : ""}; only an active key can be rotated.`,
    );
  }
  const inherited = storedCredits(old.credits);
  const inherits = rotation.credits === undefined && inherited !== null;
  const { raw, row } = await mintKey(
    {
      accountId: p.accountId,
      ownerId: old.ownerId,
      createdBy: p.userId,
      name: old.name,
      // The account's format now, whatever the old key's: a rotation is how an account moves its keys over.
      prefix: p.keyPrefix,
      format,
      namespace: deps.config.keyPrefixNamespace,
      scopes: JSON.parse(old.scopes) as string[],
      expiresAt: old.expiresAt,
      limits: limits ?? keyLimits(old),
      // The old key's credits setting, unless the rotation sends its own: then its balance moves over once the
      // rotation stands (the new key opens empty), so a rotation never refills a key.
      credits: inherits ? { remaining: 0, refill: inherited?.refill ?? null } : rotation.credits && creditsConfig(rotation.credits),
      rotatedFrom: old.id,
      // An externalId is the old key's alone (unique within the account); its meta comes along.
      meta: parseMeta(old.meta),
      // Where the key may be used from comes along, unless the rotation sends its own (null: the account's).
      allowedIps: rotation.allowedIps === undefined ? parseAllowedIps(old.allowedIps) : rotation.allowedIps,
    },
    now,
  );
  const revokeAt = new Date(now.getTime() + grace * 1000);
  const audit = { accountId: p.accountId, actor: p.userId, requestId: deps.requestId };
  const d = deps.db;
  const event = newEvent(
    {
      accountId: p.accountId,
      type: "api_key.rotated",
      data: { key: keyEvent({ ...old, revokedAt: revokeAt.toISOString() }), successor: keyEvent(row), actor: p.userId },
    },
    now,
  );
  try {
    await writeChange(deps, [old.id], () =>
      batch(deps.env.DB, [
        d.insert(apiKeys).values(row),
        revokeStatement(d, old, p.userId, revokeAt, now),
        auditInsert(d, { ...audit, action: "key.rotated", target: old.id }, now),
        auditInsert(d, { ...audit, action: "key.created", target: row.id }, now),
        d.insert(webhookEvents).values(event),
      ]),
    );
    await reloadKeys(deps, [old.id]);
  } catch (err) {
    // The unique index on rotated_from: another request rotated this key first. Nothing was written.
    if (violates(err, "api_keys.rotated_from")) throw new ApiError("key_not_active", `Key ${old.id} has already been rotated.`);
    // D1 did not answer in time (the batch may still land) or the old key's counter did not hear of its revocation:
    // the rotation is not known to be in force. Undo it, unless someone revoked the old key meanwhile.
    if (!(await undoRotation(deps, old, row, revokeAt, now, audit, event.id))) {
      await reloadKeys(deps, [old.id]).catch(() => {});
      if (err instanceof ApiError && err.code === "change_pending")
        throw new ApiError(
          "change_pending",
          "The rotation could not be put in force and was undone: the old key works as before. Repeat the request.",
          {
            headers: { "Retry-After": "1" },
          },
        );
      throw err;
    }
  }
  // The rotation stands (done, or not undone because someone revoked the old key meanwhile): its event goes out.
  await publishEvents(deps, [event.id]);
  if (inherits) await moveCredits(deps, old.id, row.id);
  return { raw, row, now };
}

/**
 * Moves a rotated key's own credits to its successor once the rotation stands: emptied from the old key (which spends
 * none in its grace period) and added to the new one, each a ledger entry naming the other, before the rotation is
 * answered. The rotation stands whatever happens here; a move that fails is logged with what it moved.
 */
async function moveCredits(deps: Deps, from: string, to: string): Promise<void> {
  let moved: number | null = null;
  try {
    moved = await deps.env.KEYS.getByName(`key:${from}`).drainCredits(from, to);
    if (moved === null || moved === 0) return;
    const added = await deps.env.KEYS.getByName(`key:${to}`).adjustCredits(to, {
      operation: "add",
      amount: moved,
      reason: `moved from ${from} by rotation`,
      actor: "keygate",
      idempotencyKey: `rotation:${from}`,
    });
    if (!added?.ok) throw new Error(added ? added.code : "no such key");
  } catch (err) {
    deps.log("error", "credits_not_moved", { from, to, amount: moved, error: safeError(err) });
  }
}

/**
 * Undoes a rotation whose outcome is unknown, so that nothing changed and it can be repeated: the old key gets back
 * the life the rotation took, and the new key (never shown to anyone) is written dead under its id and hash, so that a
 * rotation batch still on its way fails instead of landing. Answers true, leaving both as they are, when the old key was
 * revoked by another request meanwhile: then the rotation must stand, or the account would lose both keys.
 */
async function undoRotation(
  deps: Deps,
  old: ApiKey,
  row: ApiKey,
  revokeAt: Date,
  now: Date,
  audit: { accountId: string; actor: string; requestId: string },
  eventId: string,
): Promise<boolean> {
  const d = deps.db;
  const dead = { revokedAt: now.toISOString(), revokedBy: audit.actor, rotatedFrom: null };
  await batch(deps.env.DB, [
    d
      .update(apiKeys)
      .set({ revokedAt: null, revokedBy: null })
      .where(and(eq(apiKeys.id, old.id), eq(apiKeys.revokedAt, revokeAt.toISOString()))),
    d
      .insert(apiKeys)
      .values({ ...row, ...dead })
      .onConflictDoUpdate({
        target: apiKeys.id,
        set: dead,
        setWhere: sql`EXISTS (SELECT 1 FROM api_keys o WHERE o.id = ${old.id} AND o.revoked_at IS NULL)`,
      }),
    auditInsert(d, { ...audit, action: "key.rotation_undone", target: old.id }, now),
    // Its event goes with it (the request hands it on only once the rotation stands; the sweep waits longer than this).
    deps.env.DB.prepare(
      "DELETE FROM webhook_events WHERE id = ? AND queued_at IS NULL AND EXISTS (SELECT 1 FROM api_keys WHERE id = ? AND revoked_at IS NOT NULL)",
    ).bind(eventId, row.id),
  ]);
  const [fresh] = await d.select({ revokedAt: apiKeys.revokedAt }).from(apiKeys).where(eq(apiKeys.id, row.id)).limit(1);
  return fresh?.revokedAt === null;
}

/**
 * Who may create keys, with which limit and in which format, read from the account now (any of them can change at any
 * time): admins always, with any limit (null: no ceiling); members only where the account allows it, up to its
 * `maxRateLimit`.
 */
async function issuing(d: Db, p: Principal): Promise<{ ceiling: Policy | null; format: KeyFormat }> {
  // Accounts are never deleted, and the principal's was read a moment ago.
  const account = (await accountOf(d, p)) as Account;
  if (p.role === "admin") return { ceiling: null, format: account.keyFormat };
  if (!account.membersCanCreateKeys) throw new ApiError("insufficient_role", "Only account admins can create API keys in this account.");
  return { ceiling: rateLimitCeiling(account), format: account.keyFormat };
}

/** Each of a member's own limits may be neither larger nor faster than the ceiling (`field`: as the body sent them). */
function overCeiling(ceiling: Policy | null, limits: readonly Limit[], field: "rateLimit" | "rateLimits"): FieldError[] {
  if (ceiling === null) return [];
  const message = `members may set at most ${ceiling.limit} requests per ${ceiling.windowSeconds} s (the account's maxRateLimit)`;
  return limits.flatMap((limit, i) =>
    withinCeiling(limit, ceiling) ? [] : [{ field: field === "rateLimit" ? field : `rateLimits[${i}]`, message }],
  );
}

/** Only admins create keys for other users, and only for enabled users of their own account: the owner's role. */
async function checkOwner(d: Db, p: Principal, ownerId: string): Promise<Principal["role"]> {
  if (p.role !== "admin") throw new ApiError("insufficient_role", "Only account admins can create keys for other users.");
  const [owner] = await d
    .select({ disabled: users.disabled, role: users.role })
    .from(users)
    .where(and(eq(users.accountId, p.accountId), eq(users.id, ownerId)))
    .limit(1);
  const problem = !owner ? "is not a user of this account" : owner.disabled ? "is a disabled user" : null;
  if (problem) throw invalidRequest([{ field: "ownerId", message: problem }]);
  return (owner as { role: Principal["role"] }).role;
}

/** The role of a key's owner: the caller's own, or read (an admin managing another user's key). */
async function ownerRole(d: Db, p: Principal, ownerId: string): Promise<Principal["role"]> {
  if (ownerId === p.userId) return p.role;
  const [owner] = await d
    .select({ role: users.role })
    .from(users)
    .where(and(eq(users.accountId, p.accountId), eq(users.id, ownerId)))
    .limit(1);
  return owner?.role ?? "member";
}

/**
 * A member's key may only narrow its account's `allowedIps`: each of its blocks must lie within one of the account's
 * (read now). An admin's key may carry any list, in place of the account's. A member's key is also judged against
 * both lists (core/principal.ts `allowedIps`), so a default narrowed later still holds.
 */
async function checkAllowedIps(d: Db, accountId: string, role: Principal["role"], list: readonly string[] | null): Promise<void> {
  if (role === "admin" || list === null) return;
  const [account] = await d.select({ allowedIps: accounts.allowedIps }).from(accounts).where(eq(accounts.id, accountId)).limit(1);
  const outer = blocks(parseAllowedIps(account?.allowedIps ?? null) ?? []);
  if (outer.length === 0) return;
  const message = "lies outside the account's allowedIps; a member's key may only narrow them";
  const errors = blocks(list).flatMap((block, i) => (outer.some((o) => within(block, o)) ? [] : [{ field: `allowedIps[${i}]`, message }]));
  if (errors.length > 0) throw invalidRequest(errors);
}

/** A key the caller may see and manage; anything else is 404, whoever owns it. */
export async function getKey(deps: Deps, p: Principal, id: string): Promise<ApiKey> {
  const key = await findKey(deps.db, p, id);
  if (!key) throw new ApiError("not_found", "No API key with this id in this account.");
  return key;
}

/** A page of the keys the caller may see (members: their own), newest first. */
export function listKeys(deps: Deps, p: Principal, page: Page) {
  return keysPage(deps.db, p, page);
}

/** The keys among `ids` the caller may see, in one read (a page naming several keys at once). */
export function keysByIds(deps: Deps, p: Principal, ids: string[]): Promise<ApiKey[]> {
  return findKeys(deps.db, p, ids);
}

/** Whether the caller may create keys: an admin always, a member where the account allows it now. */
export async function mayCreateKeys(deps: Deps, p: Principal): Promise<boolean> {
  return p.role === "admin" || (await accountOf(deps.db, p))?.membersCanCreateKeys === true;
}

async function accountOf(d: Db, p: Principal) {
  const [account] = await d.select().from(accounts).where(eq(accounts.id, p.accountId)).limit(1);
  return account;
}
