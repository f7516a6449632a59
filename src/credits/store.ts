import { and, desc, eq, isNull, or, sql } from "drizzle-orm";
import type { Principal } from "../core/principal";
import type { Db } from "../platform/db/client";
import { type Page, pageWhere, toPage } from "../platform/db/pagination";
import { creditLedger } from "../platform/db/schema";

/**
 * SQL: the ledger rows `p` may see: every row of the account for an admin; for a member, the rows of the keys they own
 * and of their own balance (never the account pool's).
 */
export function visibleTo(p: Principal) {
  return and(
    eq(creditLedger.accountId, p.accountId),
    p.role === "admin"
      ? undefined
      : or(sql`${creditLedger.keyId} IN (SELECT id FROM api_keys WHERE owner_id = ${p.userId})`, eq(creditLedger.userId, p.userId)),
  );
}

/** Whose rows: a key's own balance (`keyId`), a person's (`userId`), or the account pool's (neither). */
export type Owner = { accountId: string; keyId: string | null; userId?: string };

const ordered = { createdAt: creditLedger.at, id: creditLedger.id };

/** A page of an owner's rows, newest first, within `visible` (the caller's view; none for the operator). */
export async function ledgerPage(d: Db, owner: Owner, visible: ReturnType<typeof visibleTo> | undefined, page: Page) {
  const rows = await d
    .select({
      id: creditLedger.id,
      createdAt: creditLedger.at,
      delta: creditLedger.delta,
      balanceAfter: creditLedger.balanceAfter,
      kind: creditLedger.kind,
      count: creditLedger.count,
      requestId: creditLedger.requestId,
      actor: creditLedger.actor,
      reason: creditLedger.reason,
    })
    .from(creditLedger)
    .where(
      and(
        visible,
        eq(creditLedger.accountId, owner.accountId),
        owner.keyId === null ? isNull(creditLedger.keyId) : eq(creditLedger.keyId, owner.keyId),
        owner.userId === undefined ? isNull(creditLedger.userId) : eq(creditLedger.userId, owner.userId),
        pageWhere(ordered, page),
      ),
    )
    .orderBy(desc(creditLedger.at), desc(creditLedger.id))
    .limit(page.limit + 1);
  return toPage(rows, page);
}
