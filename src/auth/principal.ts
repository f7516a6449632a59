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
  /** The account's key prefix (it never changes). */
  keyPrefix: string;
  /** The key's own limit, else the account's default. */
  rateLimit: Policy;
};

export const FULL_ACCESS = "*";

/** What a route asks of a key: any valid key, a full-access key, or a full-access key of an admin. */
export type Need = "any" | "full" | "admin";

const DETAIL = {
  insufficient_scope: "This action needs a full-access key; this key is limited to specific resources.",
  insufficient_role: "This action needs an account admin.",
} as const;

export type Refusal = keyof typeof DETAIL;

/** Why the principal falls short of `need`, or null. Pure, so the key's counter can decide it before spending. */
export function refusal(p: Principal, need: Need): Refusal | null {
  if (need === "any") return null;
  if (!p.scopes.includes(FULL_ACCESS)) return "insufficient_scope";
  if (need === "admin" && p.role !== "admin") return "insufficient_role";
  return null;
}

export function refused(code: Refusal): ApiError {
  return new ApiError(code, DETAIL[code]);
}

/** Throws the 403 for a principal that falls short of `need`. */
export function requireRights(p: Principal, need: Need): void {
  const code = refusal(p, need);
  if (code) throw refused(code);
}

/** Admins act on every key of the account; members only on keys they own. */
export function canManageKey(p: Principal, ownerId: string): boolean {
  return p.role === "admin" || p.userId === ownerId;
}
