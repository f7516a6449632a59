import { findAccount } from "../accounts/store";
import type { Principal } from "../core/principal";
import { findKey } from "../keys/store";
import type { Page } from "../platform/db/pagination";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import type { LedgerEntryView } from "./schemas";
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
