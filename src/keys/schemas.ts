import { z } from "@hono/zod-openapi";
import { storedCredits } from "../core/credits";
import { FULL_ACCESS, GRANTS_HINT, grantOf, isFullAccess, MIXED, RESOURCE_ID, rightsProblems, SCOPE } from "../core/grants";
import { keyLimits } from "../core/principal";
import {
  AllowedIps,
  allowedIpsField,
  CreditsBalance,
  creditsField,
  creditsView,
  extend,
  externalFields,
  externalView,
  FutureInstant,
  integer,
  KeyRateLimits,
  matching,
  oneLimitForm,
  orNull,
  parseAllowedIps,
  parseMeta,
  RateLimit,
  RateLimits,
  shorthand,
  Timestamp,
  text,
} from "../core/schemas";
import { keyStatus } from "../core/verdict";
import type { Limit, Policy } from "../core/window";
import type { ApiKey } from "../platform/db/schema";
import type { FieldError } from "../platform/errors";

const MAX_GRANTS = 100;

const ALLOWED_IPS_HINT =
  "The addresses the key may be used from, in place of the account's `allowedIps` (a member's key: within them); `null` or absent: the account's apply";
/** The longest grace period a rotated key may keep working: seven days. */
export const MAX_GRACE_SECONDS = 7 * 24 * 3600;

/** A list of grants, `["*"]` or `<type>:<id>` entries (a user's grants; a key's scopes). */
export const Grants = z
  .array(matching(SCOPE, GRANTS_HINT))
  .min(1)
  .max(MAX_GRANTS)
  .openapi("Grants", { example: ["mailbox:mbx_8a1c"] });

/** What is wrong with a list of grants against the configured resource types: unknown types, `*` mixed with grants. */
export function grantErrors(list: readonly string[], types: readonly string[], field: string): FieldError[] {
  return rightsProblems(list, types).map(({ index, message }) => ({ field: index === null ? field : `${field}[${index}]`, message }));
}

/**
 * A new key. Besides these fields, `<type>Ids` for each type in RESOURCE_TYPES (e.g. `mailboxIds`) adds grants
 * `<type>:<id>`; which types exist is deployment configuration, so `grants()` checks them against it, by the field
 * names as sent.
 */
export const NewKey = z
  .object({
    name: text(100),
    scopes: Grants.optional(),
    expiresAt: FutureInstant.nullable()
      .optional()
      .openapi({ type: ["string", "null"], description: "`null` or absent: the key never expires" }),
    ownerId: text(64).optional(),
    rateLimit: RateLimit.optional().openapi({ description: 'Shorthand for `rateLimits: [{name: "default", ...}]`' }),
    rateLimits: KeyRateLimits.optional().openapi({ description: "The key's own limits, in place of the account's default ones" }),
    credits: creditsField.openapi({
      description:
        "The key's own credits, spent beside its account's pool (members may set them: they only restrict); `null` or absent: none",
    }),
    allowedIps: allowedIpsField.openapi({ description: ALLOWED_IPS_HINT }),
    ...externalFields,
  })
  .catchall(z.array(matching(RESOURCE_ID, "must be a resource id")).min(1).max(MAX_GRANTS))
  .superRefine(oneLimitForm)
  .openapi("NewKey", { description: "Also `<type>Ids: [id, ...]` for each resource type the deployment configures." });

/** A change of a key's provider fields and allowed addresses; absent fields stay as they are. */
export const KeyChange = z
  .strictObject({ allowedIps: allowedIpsField.openapi({ description: ALLOWED_IPS_HINT }), ...externalFields })
  .openapi("KeyChange", {
    description: "The key's `externalId` (unique within the account), `meta` and `allowedIps`; `null` clears any of them.",
  });

export const Rotation = z
  .strictObject({
    gracePeriodSeconds: integer(0, MAX_GRACE_SECONDS).default(0),
    rateLimit: RateLimit.optional(),
    rateLimits: KeyRateLimits.optional(),
    credits: creditsField.openapi({ description: "The new key's own credits; absent: the old key's, `null`: none" }),
    allowedIps: allowedIpsField.openapi({
      description: "The new key's own allowed addresses; absent: the old key's, `null`: the account's",
    }),
  })
  .superRefine(oneLimitForm)
  .openapi("Rotation");

/**
 * The key's grants from `scopes` and the `<type>Ids` fields, against the configured resource types: full access
 * (`["*"]`, the default) or resource grants, never both. Fields that are not `<type>Ids` of a configured type are
 * unknown, so a misspelt `mailboxId` can never create a full-access key.
 */
export function grants(
  body: z.infer<typeof NewKey>,
  fields: readonly string[],
  types: readonly string[],
): { scopes: string[]; errors: FieldError[] } {
  const fromScopes = body.scopes ?? [];
  const errors = grantErrors(fromScopes, types, "scopes").filter((e) => e.field !== "scopes");
  // The schema's own fields: every other one is a `<type>Ids` or unknown.
  const known = new Set(Object.keys(NewKey.shape));
  const fromIds: string[] = [];
  // The names as sent: a parsed object can lose some (`__proto__` becomes a prototype, not a field).
  for (const field of fields) {
    if (known.has(field)) continue;
    const type = field.endsWith("Ids") ? field.slice(0, -3) : "";
    const ids = Object.hasOwn(body, field) ? (body as Record<string, unknown>)[field] : undefined;
    if (!types.includes(type) || !Array.isArray(ids)) errors.push({ field, message: "is not a known field" });
    else fromIds.push(...ids.map((id) => grantOf(type, id)));
  }
  const all = [...new Set([...fromScopes, ...fromIds])];
  if (isFullAccess(all) && all.length > 1) errors.push({ field: "scopes", message: MIXED });
  if (all.length > MAX_GRANTS) errors.push({ field: "scopes", message: `a key may carry at most ${MAX_GRANTS} grants` });
  return { scopes: all.length === 0 ? [FULL_ACCESS] : all, errors };
}

export const KeyView = z
  .strictObject({
    id: z.string().openapi({ example: "key_5f0c9a1e2b7d43a8c6e1f0b2" }),
    name: z.string(),
    prefix: z.string().openapi({
      description: "Everything before the key's random part: the account's key prefix, or `<namespace>_<keyPrefix>` for a checksummed key",
      example: "kg_sk",
    }),
    start: z.string().openapi({ description: "The first 8 characters after `<prefix>_`, to recognise a key" }),
    scopes: z.array(z.string()),
    status: z.enum(["active", "revoked", "expired"]),
    ownerId: z.string(),
    createdBy: z.string(),
    createdAt: Timestamp,
    expiresAt: Timestamp.nullable(),
    rateLimit: orNull(RateLimit).openapi({
      description: 'The limit named "default" of `rateLimits`, else its first; null when the account\'s default applies',
    }),
    rateLimits: orNull(RateLimits).openapi({ description: "The key's own limits; null when the account's default ones apply" }),
    credits: orNull(CreditsBalance).openapi({ description: "The key's own credits as of now; null: none of its own (unlimited)" }),
    allowedIps: orNull(AllowedIps).openapi({ description: "The key's own allowed addresses; null: the account's `allowedIps` apply" }),
    lastUsedAt: Timestamp.nullable(),
    lastAuthMethod: z.enum(["bearer", "header", "query", "verify"]).nullable(),
    revokedAt: Timestamp.nullable().openapi({ description: "May lie in the future: the end of a rotation's grace period" }),
    revokedBy: z.string().nullable(),
    rotatedFrom: z.string().nullable(),
    leakedAt: Timestamp.nullable().openapi({ description: "When a leak of the key was first reported (README, Leaks)" }),
    ...externalView,
  })
  .openapi("Key");

/** A key with its raw value: only in the answer that creates it. */
export const KeyWithSecret = extend(KeyView, { key: z.string().openapi({ example: "sk_5f0c…" }) }).openapi("KeyWithSecret");

/** The API view of a key: never the hash, never the raw key. */
/**
 * A key as the API shows it. `balances`: the live balances of keys that have one (credits/service.ts `keyBalances`);
 * without it (a key just created, never used), its balance is what it was configured to open at.
 */
export function keyView(
  key: ApiKey,
  now: Date,
  balances?: ReadonlyMap<string, z.infer<typeof CreditsBalance> | null>,
): z.infer<typeof KeyView> {
  return {
    id: key.id,
    name: key.name,
    prefix: key.prefix,
    start: key.start,
    scopes: JSON.parse(key.scopes) as string[],
    status: keyStatus(key, now),
    ownerId: key.ownerId,
    createdBy: key.createdBy,
    createdAt: key.createdAt,
    expiresAt: key.expiresAt,
    ...limitsView(keyLimits(key)),
    credits: balances?.has(key.id) ? (balances.get(key.id) ?? null) : creditsView(storedCredits(key.credits), now),
    allowedIps: parseAllowedIps(key.allowedIps),
    lastUsedAt: key.lastUsedAt,
    lastAuthMethod: key.lastAuthMethod,
    revokedAt: key.revokedAt,
    revokedBy: key.revokedBy,
    rotatedFrom: key.rotatedFrom,
    leakedAt: key.leakedAt,
    externalId: key.externalId,
    meta: parseMeta(key.meta),
  };
}

/** `rateLimits` and its shorthand `rateLimit`, as a key or an account shows them (null: the default applies). */
export function limitsView(limits: Limit[] | null): { rateLimit: Policy | null; rateLimits: Limit[] | null } {
  return { rateLimit: limits && shorthand(limits), rateLimits: limits };
}

/** The most key ids a hygiene category lists; its `count` is exact all the same. */
export const HYGIENE_IDS = 100;

const HygieneCategory = (description: string) =>
  z
    .strictObject({
      count: z.number().int().openapi({ description: "How many of the keys are in it" }),
      keyIds: z.array(z.string()).openapi({ description: `Their ids, oldest key first, at most ${HYGIENE_IDS}` }),
    })
    .openapi({ description });

/** Active keys that need a look, by what is wrong with them (README, Keys: hygiene). */
export const KeyHygiene = z
  .strictObject({
    activeKeys: z.number().int().openapi({ description: "Active keys the caller sees (members: their own)" }),
    neverUsed: HygieneCategory("Active keys never used"),
    idle90d: HygieneCategory("Active keys last used more than 90 days ago"),
    noExpiry: HygieneCategory("Active keys with neither an expiry nor a scheduled revocation"),
    olderThanYear: HygieneCategory("Active keys created more than a year ago"),
    leakedActive: HygieneCategory("Active keys a leak was reported of (`leakedAt`): rotate or revoke them"),
  })
  .openapi("KeyHygiene", {
    description: `Each category's count and the ids of at most ${HYGIENE_IDS} of its keys (oldest first); a key may be in several.`,
  });
