import { z } from "@hono/zod-openapi";
import { defaultLimits } from "../core/ceilings";
import { storedCredits } from "../core/credits";
import { DEFAULT_PREFIX, PREFIX } from "../core/ids";
import { KEY_FORMATS } from "../core/key-format";
import {
  AllowedIps,
  allowedIpsField,
  CreditsBalance,
  CreditsSetting,
  creditsField,
  creditsView,
  extend,
  externalFields,
  externalView,
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
  userCreditsField,
} from "../core/schemas";
import { KeyWithSecret } from "../keys/schemas";
import { Email } from "../people/schemas";
import { PlanId } from "../plans/schemas";
import { InvitedUser } from "../users/schemas";
import type { AccountRecord } from "./store";

const SLUG = /^[a-z0-9][a-z0-9-]{1,62}$/;

const KeyFormatField = z.enum(KEY_FORMATS).openapi({
  description:
    "`checksummed`: `<namespace>_<keyPrefix>_` then 43 random and 6 checksum characters (base62), which secret scanners recognise and Keygate refuses unread when mistyped; `plain`: `<keyPrefix>_` then 64 hex characters (README, Key formats)",
});

export const NewAccount = z
  .strictObject({
    name: text(200),
    slug: matching(SLUG, "must be 2-63 characters: lowercase letters, digits and hyphens, starting with a letter or digit")
      .optional()
      .openapi({ description: "A unique name for URLs; gateway routes with `account` accept it in place of the id", example: "acme" }),
    keyPrefix: matching(PREFIX, "must be 2-12 characters: a lowercase letter, then lowercase letters or digits").default(DEFAULT_PREFIX),
    membersCanCreateKeys: z.boolean().default(false),
    keyFormat: KeyFormatField.default("checksummed"),
    rateLimit: RateLimit.optional().openapi({
      description: 'Shorthand for `rateLimits: [{name: "default", ...}]`; with neither, 60 requests a minute',
    }),
    rateLimits: RateLimits.optional().openapi({ description: "The default limits of the account's keys" }),
    maxRateLimit: orNull(RateLimit).default(null),
    plan: PlanId.optional().openapi({ description: "The plan the account is on (`PUT /v1/plans/{id}`): its keys get its limits" }),
    credits: creditsField.openapi({
      description:
        "The account's credits pool, spent by all its keys together, in place of its plan's; `null` or absent: its plan's, else unlimited",
    }),
    userCredits: userCreditsField,
    admin: z.strictObject({ email: Email }),
    ...externalFields,
  })
  .superRefine(oneLimitForm)
  .openapi("NewAccount");

/** What a reported leak of one of the account's keys does (README, Leaks). */
const LeakResponse = z.enum(["revoke", "notify"]).openapi({
  description:
    "`revoke`: a key reported leaked is revoked at once; `notify` (the default): it is marked (`leakedAt`) and told (`api_key.leaked`)",
});

export const AccountChange = z
  .strictObject({
    rateLimit: RateLimit.optional().openapi({ description: 'Shorthand for `rateLimits: [{name: "default", ...}]`' }),
    rateLimits: RateLimits.optional(),
    maxRateLimit: orNull(RateLimit).optional().openapi({ description: "`null` makes the account's default limit the ceiling" }),
    membersCanCreateKeys: z.boolean().optional(),
    leakResponse: LeakResponse.optional(),
    allowedIps: allowedIpsField.openapi({
      description:
        "The addresses the account's keys may be used from, unless a key carries its own (a member's key: within these); `null` clears it. In force before the answer, as a revocation is.",
    }),
    keyFormat: KeyFormatField.optional().openapi({
      description:
        "The format of the keys the account issues from now on (rotations included); keys issued before keep theirs and keep working",
    }),
  })
  .superRefine(oneLimitForm)
  .openapi("AccountChange");

/** What the operator changes on an account; absent fields stay as they are. */
export const OperatorAccountChange = z
  .strictObject({
    plan: orNull(PlanId)
      .optional()
      .openapi({ description: "The plan the account is on (`PUT /v1/plans/{id}`); `null` takes it off its plan" }),
    credits: creditsField.openapi({
      description: "The account's own credits pool, in place of its plan's; `null` clears it: its plan's apply, else unlimited",
    }),
    userCredits: userCreditsField,
    ...externalFields,
  })
  .openapi("OperatorAccountChange", {
    description:
      "The account's plan, credits pool, each person's credits, `externalId` (unique across the deployment) and `meta`; `null` clears any of them. Its keys have the change before it is answered.",
  });

export const RecoveryRequest = z.strictObject({ userId: text(64).optional() }).openapi("RecoveryRequest");

export const AccountView = z
  .strictObject({
    id: z.string().openapi({ example: "acc_5f0c9a1e2b7d43a8c6e1f0b2" }),
    name: z.string(),
    slug: z.string().nullable(),
    keyPrefix: z.string(),
    keyFormat: KeyFormatField,
    membersCanCreateKeys: z.boolean(),
    rateLimit: RateLimit.openapi({ description: 'The default limit named "default" of `rateLimits`, else its first' }),
    rateLimits: RateLimits,
    maxRateLimit: orNull(RateLimit),
    plan: z.string().nullable(),
    leakResponse: LeakResponse,
    credits: orNull(CreditsBalance).openapi({
      description: "The credits pool all the account's keys spend, as of now: the account's own, else its plan's; null: unlimited",
    }),
    userCredits: orNull(CreditsSetting).openapi({
      description:
        "What each person's balance opens with and its refill (`GET /v1/users/{id}/credits` shows one as of now): the account's own, else its plan's; null: unlimited",
    }),
    allowedIps: orNull(AllowedIps).openapi({
      description: "The addresses the account's keys may be used from, unless a key carries its own; null: anywhere",
    }),
    createdAt: Timestamp,
    ...externalView,
  })
  .openapi("Account");

export const AuditEvent = z
  .strictObject({
    id: z.string(),
    actor: z.string(),
    action: z.string(),
    target: z.string(),
    createdAt: Timestamp,
    requestId: z.string(),
    detail: z.string().nullable().openapi({ description: "What else it names: where a leaked key was seen" }),
  })
  .openapi("AuditEvent");

export const AccountActivity = extend(AccountView, {
  activeKeys: z.number().int(),
  lastUsedAt: Timestamp.nullable(),
  recentEvents: z.array(AuditEvent),
}).openapi("AccountActivity");

export const Provisioned = z.strictObject({ account: AccountView, admin: InvitedUser, key: KeyWithSecret }).openapi("Provisioned");

/**
 * An account as the API shows it; `pool`: its live credits pool (credits/service.ts `poolBalance`), else the pool as
 * configured to open.
 */
export function accountView(a: AccountRecord, now: Date, pool?: z.infer<typeof CreditsBalance> | null): z.infer<typeof AccountView> {
  return {
    id: a.id,
    name: a.name,
    slug: a.slug,
    keyPrefix: a.keyPrefix,
    keyFormat: a.keyFormat,
    membersCanCreateKeys: a.membersCanCreateKeys,
    rateLimit: shorthand(defaultLimits(a)),
    rateLimits: defaultLimits(a),
    maxRateLimit:
      a.maxRateLimit === null || a.maxRateLimitWindowSeconds === null
        ? null
        : { limit: a.maxRateLimit, windowSeconds: a.maxRateLimitWindowSeconds },
    plan: a.planId,
    leakResponse: a.leakResponse,
    // The pool, as the account's principal spends it (core/principal.ts): its own, else its plan's.
    credits: pool !== undefined ? pool : creditsView(storedCredits(a.credits ?? a.planCredits), now),
    userCredits: storedCredits(a.userCredits ?? a.planUserCredits),
    allowedIps: parseAllowedIps(a.allowedIps),
    createdAt: a.createdAt,
    externalId: a.externalId,
    meta: parseMeta(a.meta),
  };
}
