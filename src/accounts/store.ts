import { and, desc, eq, getTableColumns, or, sql } from "drizzle-orm";
import type { Principal } from "../core/principal";
import type { Db } from "../platform/db/client";
import { type Page, pageWhere, toPage } from "../platform/db/pagination";
import { type Account, accounts, auditEvents, plans, users } from "../platform/db/schema";

/** An account with its plan's credits (JSON), the pool its keys spend when it sets none of its own. */
export type AccountRecord = Account & { planCredits: string | null; planUserCredits: string | null };

/**
 * SQL: the account's activity `p` may see: every audit event of the account for an admin; for a member, their own
 * actions and what happened to the keys they own.
 */
export function visibleTo(p: Principal) {
  return and(
    eq(auditEvents.accountId, p.accountId),
    p.role === "admin"
      ? undefined
      : or(eq(auditEvents.actor, p.userId), sql`${auditEvents.target} IN (SELECT id FROM api_keys WHERE owner_id = ${p.userId})`),
  );
}

export async function findAccount(d: Db, id: string): Promise<AccountRecord | undefined> {
  const [account] = await d
    .select({ ...getTableColumns(accounts), planCredits: plans.credits, planUserCredits: plans.userCredits })
    .from(accounts)
    .leftJoin(plans, eq(plans.id, accounts.planId))
    .where(eq(accounts.id, id))
    .limit(1);
  return account;
}

/** A page of the events `p` may see, newest first, each with its actor's email where the actor is a user of the account. */
export async function listEvents(d: Db, p: Principal, page: Page) {
  const rows = await d
    .select({
      id: auditEvents.id,
      actor: auditEvents.actor,
      action: auditEvents.action,
      target: auditEvents.target,
      createdAt: auditEvents.createdAt,
      requestId: auditEvents.requestId,
      detail: auditEvents.detail,
      actorEmail: users.email,
    })
    .from(auditEvents)
    .leftJoin(users, and(eq(users.id, auditEvents.actor), eq(users.accountId, auditEvents.accountId)))
    .where(and(visibleTo(p), pageWhere(auditEvents, page)))
    .orderBy(desc(auditEvents.createdAt), desc(auditEvents.id))
    .limit(page.limit + 1);
  return toPage(rows, page);
}
