import { type AccountLimits, defaultLimits, withinCeiling } from "./ceilings";
import { allows, clientAddress, intersect } from "./cidr";
import { type CreditsConfig, storedCredits } from "./credits";
import { FULL_ACCESS, isFullAccess, reaches } from "./grants";
import { storedLimits } from "./schemas";
import { type Limit, named } from "./window";

/** How a key came: `Authorization: Bearer`, `X-API-Key`, the deprecated query parameter, or the verify API. */
export type AuthMethod = "bearer" | "header" | "query" | "verify";

/** Who is calling: an API key, acting with the rights of its owner inside one account, or that owner in a session. */
export type Principal = {
  accountId: string;
  /** The key the request came with; null for a person's session (access token or dashboard cookie). */
  keyId: string | null;
  /** The session of a person's request (`Keygate-Auth-Method: session`). */
  sessionId?: string;
  /** A key's principal: the provider's own id and data of the account and of the key, for verify and the upstream. */
  external?: { account: External; key: External };
  userId: string;
  role: "admin" | "member";
  /**
   * What the key may reach: `["*"]` for full access, else resource grants such as `mailbox:mbx_123`. The key's own
   * scopes intersected with its owner's grants (see `effectiveScopes`).
   */
  scopes: string[];
  /** The account's optional slug, which gateway routes accept in place of its id. */
  accountSlug: string | null;
  /** The account's key prefix (it never changes). */
  keyPrefix: string;
  /** The key's own limits, else the account's default ones (never empty): a request must pass every one it spends. */
  limits: Limit[];
  /**
   * The balances a request spends credits from, each null when unlimited: the key's own (null for a session), the
   * account's pool (its own, else its plan's) and the person's (`userCredits`: the account's, else its plan's). A
   * request must be covered by every one.
   */
  credits: { key: CreditsConfig | null; account: CreditsConfig | null; user: CreditsConfig | null };
  /**
   * The limits the account shares: among all its keys and people (`shared: "account"`, counted in the account's
   * object) and per person (`shared: "user"`, counted in the person's object).
   */
  shared: Limit[];
  /**
   * The addresses a key may be used from (canonical CIDR blocks, core/cidr.ts), judged on the client's address with
   * the key's record; absent: anywhere (a session, or a key to which no list applies).
   */
  allowedIps?: string[];
};

/**
 * The provider's own id and JSON object on an account or a key, null when unset. `meta` stays the JSON text D1 holds
 * on its way through the key's object and leases (core/schemas' `parseMeta` reads it where it is answered).
 */
export type External = { externalId: string | null; meta: string | null };

/**
 * What a route asks of a key: any valid key, a full-access key, or a full-access key of an admin. A gateway route
 * asks for a grant of one `resource` (`mailbox:mbx_1`), or full access when it names none, and with `account` for a
 * path parameter that must name the key's own account (by id or slug).
 */
export type Need = "any" | "full" | "admin" | { resource?: string; account?: string };

/** The `account` of a resource no account owns: it names no account, so no key reaches it. */
export const NO_ACCOUNT = "";

/** Why a principal falls short of what a route needs, or of where the request comes from (`ip_not_allowed`). */
export type Refusal = "insufficient_scope" | "insufficient_role" | "not_granted" | "other_account" | "ip_not_allowed";

/** Why the principal falls short of `need`, or null. Pure, so the key's object (or an isolate's lease of it) can decide it before spending. */
export function refusal(p: Principal, need: Need): Refusal | null {
  if (need === "any") return null;
  if (typeof need === "object") {
    // Another tenant's URL is not found, whatever the key's rights: nothing says it exists.
    if (need.account !== undefined && need.account !== p.accountId && need.account !== p.accountSlug) return "other_account";
    if (isFullAccess(p.scopes)) return null;
    if (need.resource === undefined) return "insufficient_scope";
    return reaches(p.scopes, need.resource) ? null : "not_granted";
  }
  if (!isFullAccess(p.scopes)) return "insufficient_scope";
  if (need === "admin" && p.role !== "admin") return "insufficient_role";
  return null;
}

/**
 * Whether a request from `ip` (the client's address as Cloudflare saw it, or the one a verify names; null: none) may
 * use the principal: refused when a list applies and the address is missing, unreadable or outside it. Pure, so the
 * key's object and an isolate's lease decide it from the record they hold, with no call.
 */
export function addressRefusal(p: Pick<Principal, "allowedIps">, ip: string | null | undefined): "ip_not_allowed" | null {
  if (p.allowedIps === undefined) return null;
  const address = clientAddress(ip);
  return address && allows(p.allowedIps, address) ? null : "ip_not_allowed";
}

/** Why a key's request falls short: where it comes from first (a key is nothing from elsewhere), then what the route needs. */
export function keyRefusal(p: Principal, need: Need, ip: string | null | undefined): Refusal | null {
  return addressRefusal(p, ip) ?? refusal(p, need);
}

/**
 * The addresses a key may be used from: its own list, else its account's. A member's key never reaches beyond its
 * account's list, even one narrowed after the key's was set: both apply (the blocks they share). Admins' keys may
 * carry a list of their own in place of the account's (a server elsewhere). Undefined: anywhere.
 */
export function allowedIps(r: Pick<KeyRecord, "role" | "accountAllowedIps"> & { key: Pick<KeyRow, "allowedIps"> }): string[] | undefined {
  const own = r.key.allowedIps == null ? null : (JSON.parse(r.key.allowedIps) as string[]);
  const account = r.accountAllowedIps == null ? null : (JSON.parse(r.accountAllowedIps) as string[]);
  if (own && account && r.role === "member") return intersect(own, account);
  return own ?? account ?? undefined;
}

/**
 * A key's rights: its own scopes within its owner's grants (keys inherit the rights of the user they belong to).
 * Admins hold every grant. A full-access key of a member limited to `project:warehouse` reaches only that project.
 */
export function effectiveScopes(keyScopes: readonly string[], ownerGrants: readonly string[], role: Principal["role"]): string[] {
  if (role === "admin" || isFullAccess(ownerGrants)) return [...keyScopes];
  if (isFullAccess(keyScopes)) return [...ownerGrants];
  return keyScopes.filter((s) => ownerGrants.includes(s));
}

/** A key as its principal is built from it (its row's columns; `scopes` as stored, JSON). */
export type KeyRow = {
  id: string;
  accountId: string;
  ownerId: string;
  scopes: string;
  rateLimit: number | null;
  rateLimitWindowSeconds: number | null;
  /** JSON: the key's named limits; when null, its single `rateLimit` (if any) is the one named "default". */
  rateLimits: string | null;
  revokedAt: string | null;
  expiresAt: string | null;
  externalId: string | null;
  meta: string | null;
  /** JSON `CreditsConfig`: the key's own credits; null: none of its own. */
  credits: string | null;
  /** JSON: the CIDR blocks the key may be used from; null: its account's list applies. */
  allowedIps: string | null;
};

/** A key with what decides its rights: its owner's role, state and grants (JSON, as stored), and its account. */
export type KeyRecord = {
  key: KeyRow;
  role: Principal["role"];
  disabled: boolean;
  grants: string;
  keyPrefix: string;
  accountSlug: string | null;
  account: AccountLimits;
  /** The account's `externalId` and `meta` (as stored). */
  accountExternal: External;
  /** JSON: the account's default list of CIDR blocks its keys may be used from; null: anywhere. */
  accountAllowedIps: string | null;
};

/** A live session with what decides its person's rights: their role and grants (JSON, as stored), and their account. */
export type SessionRecord = {
  id: string;
  userId: string;
  accountId: string;
  role: Principal["role"];
  grants: string;
  keyPrefix: string;
  accountSlug: string | null;
  account: AccountLimits;
};

/** The key's own limits, or null when the account's apply. */
export function keyLimits(key: Pick<KeyRow, "rateLimit" | "rateLimitWindowSeconds" | "rateLimits">): Limit[] | null {
  if (key.rateLimits !== null) return storedLimits(key.rateLimits);
  return key.rateLimit === null || key.rateLimitWindowSeconds === null
    ? null
    : [named({ limit: key.rateLimit, windowSeconds: key.rateLimitWindowSeconds })];
}

/**
 * The limits of a key or session that has none of its own: the account's default ones, except that a member never gets
 * more than the members' ceiling (`maxRateLimit`), which may be set below a default: each limit above it is capped to it.
 */
function accountLimits(role: Principal["role"], account: AccountLimits): Limit[] {
  const limits = defaultLimits(account);
  if (role === "admin" || account.maxRateLimit === null || account.maxRateLimitWindowSeconds === null) return limits;
  const ceiling = { limit: account.maxRateLimit, windowSeconds: account.maxRateLimitWindowSeconds };
  // A limit the account shares is the account's total, not one member's: the ceiling is not for it.
  return limits.map((l) => (l.shared !== undefined || withinCeiling(l, ceiling) ? l : named(ceiling, l.name)));
}

/** The account's credits pool: its own, else its plan's; null: unlimited. */
export function poolOf(a: AccountLimits): CreditsConfig | null {
  return storedCredits(a.credits ?? a.planCredits);
}

/** What each person of the account has to spend, all their keys and sessions together: its own, else its plan's; null: unlimited. */
export function userCreditsOf(a: Pick<AccountLimits, "userCredits" | "planUserCredits">): CreditsConfig | null {
  return storedCredits(a.userCredits ?? a.planUserCredits);
}

/** The limits the account's keys and people spend together (`shared: "account"`), counted in the account's object. */
export function sharedLimits(a: AccountLimits): Limit[] {
  return defaultLimits(a).filter((l) => l.shared === "account");
}

/** Every limit the account shares: among all its keys and people, and per person. */
function allShared(a: AccountLimits): Limit[] {
  return defaultLimits(a).filter((l) => l.shared !== undefined);
}

/** Whether the account's object spends beside a key's or a person's: the account shares limits or keeps a pool. */
export function pooled(p: Pick<Principal, "credits" | "shared">): boolean {
  return p.credits.account !== null || p.shared.some((l) => l.shared === "account");
}

/** The limits the person spends with all their keys and sessions together (`shared: "user"`), counted per person. */
export function perPerson(p: Pick<Principal, "shared">): Limit[] {
  return p.shared.filter((l) => l.shared === "user");
}

/** Whether the person's object spends beside the key's: the account limits each person, or gives each a balance. */
export function personal(p: Pick<Principal, "credits" | "shared">): boolean {
  return p.credits.user !== null || perPerson(p).length > 0;
}

/** Limits each key or person spends alone: shared ones are the account object's. */
const own = (limits: Limit[]) => limits.filter((l) => l.shared === undefined);

/** A key's principal: its scopes within its owner's grants, its own limits or else the account's (`accountLimits`). */
export function keyPrincipal(r: KeyRecord): Principal {
  const ips = allowedIps(r);
  return {
    ...(ips === undefined ? {} : { allowedIps: ips }),
    accountId: r.key.accountId,
    keyId: r.key.id,
    external: { account: r.accountExternal, key: { externalId: r.key.externalId, meta: r.key.meta } },
    userId: r.key.ownerId,
    role: r.role,
    scopes: effectiveScopes(JSON.parse(r.key.scopes) as string[], JSON.parse(r.grants) as string[], r.role),
    accountSlug: r.accountSlug,
    keyPrefix: r.keyPrefix,
    limits: own(keyLimits(r.key) ?? accountLimits(r.role, r.account)),
    credits: { key: storedCredits(r.key.credits), account: poolOf(r.account), user: userCreditsOf(r.account) },
    shared: allShared(r.account),
  };
}

/**
 * A session's principal: its person as a full-access key of theirs on the account's limits, so a member's session gets
 * no more than a member's key (`accountLimits`).
 */
export function sessionPrincipal(s: SessionRecord): Principal {
  return {
    accountId: s.accountId,
    keyId: null,
    sessionId: s.id,
    userId: s.userId,
    role: s.role,
    scopes: effectiveScopes([FULL_ACCESS], JSON.parse(s.grants) as string[], s.role),
    accountSlug: s.accountSlug,
    keyPrefix: s.keyPrefix,
    limits: own(accountLimits(s.role, s.account)),
    credits: { key: null, account: poolOf(s.account), user: userCreditsOf(s.account) },
    shared: allShared(s.account),
  };
}
