import type { z } from "@hono/zod-openapi";
import { and, eq } from "drizzle-orm";
import { findAccount } from "../accounts/store";
import type { CreditsConfig } from "../core/credits";
import { type Principal, userCreditsOf } from "../core/principal";
import type { Adjusted, CreditsView } from "../counters/stored-balance";
import { findKey } from "../keys/store";
import { type AuditInput, auditInsert } from "../platform/db/audit";
import type { Page } from "../platform/db/pagination";
import { accounts, plans, users } from "../platform/db/schema";
import { objectAnswer } from "../platform/deadline";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import { findUser } from "../users/store";
import type { CreditsAdjustment, CreditsSettlement, LedgerEntryView, Settled } from "./schemas";
import { ledgerPage, type Owner, visibleTo } from "./store";

type LedgerPage = { data: LedgerEntryView[]; nextCursor: string | null };

async function page(deps: Deps, owner: Owner, p: Principal | null, pg: Page): Promise<LedgerPage> {
  const { rows, nextCursor } = await ledgerPage(deps.db, owner, p ? visibleTo(p) : undefined, pg);
  return { data: rows.map(({ createdAt, ...row }) => ({ ...row, at: createdAt })), nextCursor };
}

/** A page of a key's own ledger, newest first; a key the caller may not see (another account's, a member's not own) is 404. */
export async function keyLedger(deps: Deps, p: Principal, keyId: string, pg: Page): Promise<LedgerPage> {
  const key = await findKey(deps.db, p, keyId);
  if (!key) throw new ApiError("not_found", "No API key with this id in this account.");
  return page(deps, { accountId: key.accountId, keyId: key.id }, p, pg);
}

/** A page of the caller's account pool's ledger, newest first (the route lets admins only). */
export function poolLedger(deps: Deps, p: Principal, pg: Page): Promise<LedgerPage> {
  return page(deps, { accountId: p.accountId, keyId: null }, p, pg);
}

/** The operator's view of an account pool's ledger; an unknown account is 404. */
export async function accountPoolLedger(deps: Deps, accountId: string, pg: Page): Promise<LedgerPage> {
  if (!(await findAccount(deps.db, accountId))) throw new ApiError("not_found", "No account with this id.");
  return page(deps, { accountId, keyId: null }, null, pg);
}

/** How a balance's refused change is answered. */
function adjustmentRefused(code: Exclude<Adjusted, { ok: true }>["code"], remaining: number | null): ApiError {
  if (code === "idempotency_key_reused")
    return new ApiError("idempotency_key_reused", "This Idempotency-Key was used for another change within the last 24 hours.");
  if (code === "credits_unlimited")
    return new ApiError("credits_unlimited", "This balance is unlimited: set its credits first, then adjust them.");
  return new ApiError("credits_insufficient", `The balance would go below zero: ${remaining ?? 0} are left.`, {
    body: { remaining },
  });
}

/** The answer to an adjustment, and its audit event when it moved the balance (a replay of one does not write it again). */
async function adjusted(deps: Deps, result: Adjusted | undefined, audit: AuditInput, missing: string): Promise<CreditsView> {
  if (result === undefined) throw new ApiError("not_found", missing);
  if (!result.ok) throw adjustmentRefused(result.code, result.remaining);
  if (!result.replayed) await auditInsert(deps.db, audit, deps.now());
  return result.credits;
}

/**
 * An admin's change to a key's own credits, in the key's object (exact whatever runs beside it), audited; once per
 * `Idempotency-Key` within 24 hours. A key the caller may not see is 404.
 */
export async function adjustKeyCredits(
  deps: Deps,
  p: Principal,
  keyId: string,
  change: z.infer<typeof CreditsAdjustment>,
  idempotencyKey: string | undefined,
): Promise<CreditsView> {
  const key = await findKey(deps.db, p, keyId);
  const missing = "No API key with this id in this account.";
  if (!key) throw new ApiError("not_found", missing);
  const result = await withinDeadline(
    deps,
    deps.env.KEYS.getByName(`key:${key.id}`).adjustCredits(key.id, { ...change, actor: p.userId, idempotencyKey }) as Promise<
      Adjusted | undefined
    >,
  );
  const audit = {
    accountId: key.accountId,
    actor: p.userId,
    action: `api_key.credits_${change.operation}`,
    target: key.id,
    requestId: deps.requestId,
  };
  return adjusted(deps, result, audit, missing);
}

/**
 * A change to an account's pool (what the provider sells), audited; once per `Idempotency-Key`. The operator changes
 * any account's pool any way; an account's admin (`by` a person) only subtracts from its own, to cap what its keys may
 * still spend: adding to or setting a pool would let a customer mint the credits it buys.
 */
export async function adjustPoolCredits(
  deps: Deps,
  accountId: string,
  change: z.infer<typeof CreditsAdjustment>,
  idempotencyKey: string | undefined,
  by: Principal | "operator" = "operator",
): Promise<CreditsView> {
  if (by !== "operator" && change.operation !== "subtract")
    throw new ApiError("operator_only", "An admin may only subtract from the account's pool; the operator adds to it or sets it.");
  const actor = by === "operator" ? "operator" : by.userId;
  const missing = "No account with this id.";
  if (!(await findAccount(deps.db, accountId))) throw new ApiError("not_found", missing);
  const name = `account:${accountId}`;
  const result = await withinDeadline(
    deps,
    deps.env.ACCOUNTS.getByName(name).adjustCredits({ accountId }, { ...change, actor, idempotencyKey }) as Promise<Adjusted | undefined>,
  );
  const audit = {
    accountId,
    actor,
    action: `account.credits_${change.operation}`,
    target: accountId,
    requestId: deps.requestId,
  };
  return adjusted(deps, result, audit, missing);
}

/**
 * Settles a request's reservations at what it `used`, in the objects that may hold them (the key's, the account's, the
 * person's): what it reserved beyond it comes back. A request with no open reservation there (settled already, settled
 * at its reserve after CREDITS_SETTLE_TIMEOUT_S, refunded, or another account's) changes nothing and is 404.
 */
export async function settleCredits(deps: Deps, s: z.infer<typeof CreditsSettlement>): Promise<z.infer<typeof Settled>> {
  type Settle = Promise<{ overrun: number } | null>;
  const calls = [
    deps.env.ACCOUNTS.getByName(`account:${s.accountId}`).settleCredits({ accountId: s.accountId }, s.requestId, s.used) as Settle,
  ];
  if (s.keyId !== undefined)
    calls.push(deps.env.KEYS.getByName(`key:${s.keyId}`).settleCredits(s.keyId, s.requestId, s.used, s.accountId) as Settle);
  if (s.userId !== undefined) {
    // Only a person of the account named: a reservation of another account's person is not found.
    const credits = await personCredits(deps, s.accountId, s.userId);
    if (credits !== undefined) {
      const owner = { accountId: s.accountId, person: { userId: s.userId, credits } };
      calls.push(deps.env.ACCOUNTS.getByName(`user:${s.userId}`).settleCredits(owner, s.requestId, s.used) as Settle);
    }
  }
  const settled = (await withinDeadline(deps, Promise.all(calls))).filter((r) => r !== null);
  const first = settled[0];
  if (!first)
    throw new ApiError("not_found", "No open reservation for this request: settled already, past its time, or not this account's.");
  if (first.overrun > 0) deps.log("warn", "credits_overrun", { requestId: s.requestId, used: s.used, overrun: first.overrun });
  return { requestId: s.requestId, charged: s.used - first.overrun, overrun: first.overrun };
}

/** What the balance of a person of the account opens with (null: unlimited); undefined when no such person is the account's. */
async function personCredits(deps: Deps, accountId: string, userId: string): Promise<CreditsConfig | null | undefined> {
  const [found] = await deps.db
    .select({ userCredits: accounts.userCredits, planUserCredits: plans.userCredits })
    .from(users)
    .innerJoin(accounts, eq(accounts.id, users.accountId))
    .leftJoin(plans, eq(plans.id, accounts.planId))
    .where(and(eq(users.id, userId), eq(users.accountId, accountId)))
    .limit(1);
  return found && userCreditsOf(found);
}

/** A person's balance object, and who it is, when `p` may see them (members: themselves); else 404. */
async function person(deps: Deps, p: Principal, userId: string) {
  const user = await findUser(deps.db, p, userId);
  if (!user) throw new ApiError("not_found", "No user with this id in this account.");
  const owner = { accountId: user.accountId, person: { userId: user.id, credits: p.credits.user } };
  return { owner, stub: deps.env.ACCOUNTS.getByName(`user:${user.id}`) };
}

/** A person's balance as of now (null: the account gives each person none). */
export async function userBalance(deps: Deps, p: Principal, userId: string): Promise<CreditsView> {
  const { owner, stub } = await person(deps, p, userId);
  if (owner.person.credits === null) return null;
  return ((await withinDeadline(deps, stub.credits(owner) as Promise<CreditsView | undefined>)) ?? null) as CreditsView;
}

/** An admin's change to a person's balance, audited; once per `Idempotency-Key` within 24 hours. */
export async function adjustUserCredits(
  deps: Deps,
  p: Principal,
  userId: string,
  change: z.infer<typeof CreditsAdjustment>,
  idempotencyKey: string | undefined,
): Promise<CreditsView> {
  const { owner, stub } = await person(deps, p, userId);
  const result = await withinDeadline(
    deps,
    stub.adjustCredits(owner, { ...change, actor: p.userId, idempotencyKey }) as Promise<Adjusted | undefined>,
  );
  const audit = {
    accountId: p.accountId,
    actor: p.userId,
    action: `user.credits_${change.operation}`,
    target: userId,
    requestId: deps.requestId,
  };
  return adjusted(deps, result, audit, "No user with this id in this account.");
}

/** A page of a person's ledger, newest first (members: their own). */
export async function userLedger(deps: Deps, p: Principal, userId: string, pg: Page): Promise<LedgerPage> {
  const { owner } = await person(deps, p, userId);
  return page(deps, { accountId: owner.accountId, keyId: null, userId }, p, pg);
}

/**
 * The live balances of these keys, by id (a key configured with none has none): each from its object, as of now.
 * Their objects are asked together; one that does not answer in time makes the read 503.
 */
export async function keyBalances(deps: Deps, keys: readonly { id: string; credits: string | null }[]): Promise<Map<string, CreditsView>> {
  const limited = keys.filter((k) => k.credits !== null);
  const views = await withinDeadline(
    deps,
    Promise.all(limited.map((k) => deps.env.KEYS.getByName(`key:${k.id}`).credits(k.id) as Promise<CreditsView | undefined>)),
  );
  return new Map(limited.map((k, i) => [k.id, views[i] ?? null]));
}

/** The account's pool (its own credits, else its plan's) as of now, from its object; null when it has none. */
export async function poolBalance(
  deps: Deps,
  { id: accountId, credits, planCredits }: { id: string; credits: string | null; planCredits?: string | null },
): Promise<CreditsView> {
  if ((credits ?? planCredits ?? null) === null) return null;
  return (
    (await withinDeadline(
      deps,
      deps.env.ACCOUNTS.getByName(`account:${accountId}`).credits({ accountId }) as Promise<CreditsView | undefined>,
    )) ?? null
  );
}

/** A balance's object answers within the rate limiter's deadline, or the request is 503 (nothing is assumed of it). */
function withinDeadline<T>(deps: Deps, call: Promise<T>): Promise<T> {
  return objectAnswer(deps, call, "The balance's counter did not answer; retry shortly.");
}
