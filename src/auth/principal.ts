import { ApiError } from "../errors";
import type { Policy } from "../ratelimit/window";

/** Who is calling: an API key, acting with the rights of its owner inside one account. */
export type Principal = {
  accountId: string;
  keyId: string;
  userId: string;
  role: "admin" | "member";
  /** `["*"]` for full access, else resource grants such as `mailbox:mbx_123`. */
  scopes: string[];
  /** The account's key prefix and key-creation policy, read with the key. */
  keyPrefix: string;
  membersCanCreateKeys: boolean;
  /** The key's own limit, else the account's default. */
  rateLimit: Policy;
};

export const FULL_ACCESS = "*";

export function hasFullAccess(p: Principal): boolean {
  return p.scopes.includes(FULL_ACCESS);
}

/** Key management, users and the account need a full-access key. */
export function requireFullAccess(p: Principal): void {
  if (!hasFullAccess(p))
    throw new ApiError("insufficient_scope", "This action needs a full-access key; this key is limited to specific resources.");
}

export function requireAdmin(p: Principal): void {
  requireFullAccess(p);
  if (p.role !== "admin") throw new ApiError("insufficient_role", "This action needs an account admin.");
}

/** Admins act on every key of the account; members only on keys they own. */
export function canManageKey(p: Principal, ownerId: string): boolean {
  return p.role === "admin" || p.userId === ownerId;
}

export function requireKeyCreator(p: Principal): void {
  requireFullAccess(p);
  if (p.role !== "admin" && !p.membersCanCreateKeys) {
    throw new ApiError("insufficient_role", "Only account admins can create API keys in this account.");
  }
}
