import { z } from "@hono/zod-openapi";
import { GRANT, parseGrant } from "../core/grants";
import { type External, type Need, NO_ACCOUNT, type Principal } from "../core/principal";
import { ClientIp, externalView, IdempotencyKey, integer, matching, parseMeta } from "../core/schemas";
import { tightest } from "../core/window";
import type { Deps } from "../platform/deps";
import { ownerOf } from "../resources/owners";
import { authorizeKey } from "./authorize";

export const VerifyRequest = z
  .strictObject({
    key: z.string().min(1).max(512),
    resource: matching(GRANT, "must be a grant of the form <type>:<id>").optional().openapi({ example: "mailbox:mbx_1" }),
    cost: integer(1, 1000).default(1),
    credits: integer(0, 1_000_000)
      .default(0)
      .openapi({ description: "Credits the request spends from the key's balance and its account's pool, with its limits: all or none" }),
    reserve: integer(1, 1_000_000).optional().openapi({
      description:
        "Credits to hold instead (not with `credits`): settled later with POST /v1/credits/settle `{requestId, used}` (the answer's `requestId`), or at the reserve after CREDITS_SETTLE_TIMEOUT_S",
    }),
    clientIp: ClientIp.optional().openapi({
      description:
        "The address the request being verified came from, as your edge saw it (never a header the client writes): judged against the key's `allowedIps`. Absent while a list applies: `ip_not_allowed`",
    }),
    idempotencyKey: IdempotencyKey.optional().openapi({
      description: "Charged once per key and idempotency key within 24 hours (over HTTP, the `Idempotency-Key` header)",
    }),
  })
  .refine((r) => !(r.reserve !== undefined && r.credits > 0), { path: ["reserve"], message: "cannot be sent with credits" })
  .openapi("VerifyRequest");

const Valid = z.strictObject({
  valid: z.literal(true),
  accountId: z.string(),
  keyId: z.string(),
  userId: z.string(),
  role: z.enum(["admin", "member"]),
  scopes: z.array(z.string()),
  rateLimit: z
    .strictObject({
      limit: z.number().int(),
      remaining: z.number().int(),
      reset: z.number().int().openapi({ description: "Unix seconds" }),
    })
    .nullable()
    .openapi({
      description: "The key's tightest limit (least remaining); null when the rate limiter was unavailable and the deployment fails open",
    }),
  requestId: z.string().openapi({ description: "This verification's id: what POST /v1/credits/settle names a reservation by" }),
  credits: z
    .strictObject({ remaining: z.number().int(), nextRefillAt: z.string().nullable() })
    .nullable()
    .openapi({ description: "The least credits left of the key's balance and its account's pool; null when both are unlimited" }),
  ...externalView,
  account: z.strictObject(externalView).openapi({ description: "The account's `externalId` and `meta`" }),
});
const Invalid = z.strictObject({
  valid: z.literal(false),
  code: z
    .enum([
      "invalid_key",
      "key_revoked",
      "key_expired",
      "key_owner_disabled",
      "insufficient_scope",
      "not_found",
      "rate_limited",
      "credits_exhausted",
      "idempotency_in_flight",
      "idempotency_key_reused",
      "ip_not_allowed",
    ])
    .openapi({
      description:
        "`not_found`: the resource belongs to another account, or to none Keygate knows of; `ip_not_allowed`: the key's `allowedIps` do not include `clientIp` (or none was sent)",
    }),
  retryAfter: z.number().int().optional().openapi({
    description: "With `rate_limited`: seconds until the key may spend again; with `credits_exhausted`, until the next refill",
  }),
  required: z.number().int().optional().openapi({ description: "With `credits_exhausted`: the credits the request needed" }),
  remaining: z.number().int().optional().openapi({ description: "With `credits_exhausted`: the credits left" }),
  nextRefillAt: z.string().nullable().optional().openapi({ description: "With `credits_exhausted`: when more arrive; null: never" }),
});
export const Verdict = z.union([Valid, Invalid]).openapi("Verdict");
export type Verdict = z.infer<typeof Verdict>;

/** Any valid key, or a grant of `resource` held by a key of the account that owns it. */
async function needOf(deps: Deps, resource: string | undefined): Promise<Need> {
  const parsed = resource === undefined ? null : parseGrant(resource);
  if (!parsed) return "any";
  return { resource, account: (await ownerOf(deps.env.DB, parsed.type, parsed.id)) ?? NO_ACCOUNT };
}

/**
 * Verifies a key for a backend that cannot sit behind the gateway: the same judgement and the same spend as a gateway
 * request (its object decides, `cost` is spent only when the key passes), so a key is never cheaper to use here; a key
 * with allowed addresses passes only with the `clientIp` its request came from.
 */
export async function verifyKey(
  deps: Deps,
  { key, resource, cost, credits, reserve, idempotencyKey, clientIp }: z.output<typeof VerifyRequest>,
): Promise<Verdict> {
  const verdict = await authorizeKey(deps, {
    key,
    method: "verify",
    need: () => needOf(deps, resource),
    ip: clientIp ?? null,
    cost,
    credits: reserve ?? credits,
    reserve: reserve === undefined ? undefined : { until: deps.now().getTime() + deps.config.creditsSettleTimeoutS * 1000 },
    idempotency:
      idempotencyKey === undefined
        ? undefined
        : { key: idempotencyKey, pendingMs: 0, fingerprint: JSON.stringify(["verify", resource ?? null, cost, credits, reserve ?? null]) },
  });
  if (!verdict.ok) {
    // A verify asks for no role: its refusals are a missing grant (403 on the gateway) and another account's resource
    // (404 there).
    if (!("refusal" in verdict)) return { valid: false, code: verdict.code };
    if (verdict.refusal === "ip_not_allowed") return { valid: false, code: "ip_not_allowed" };
    return { valid: false, code: verdict.refusal === "other_account" ? "not_found" : "insufficient_scope" };
  }
  const { principal: p, spent } = verdict;
  const refused = spent.find((s) => !s.allowed);
  if (refused?.exhausted) {
    const { required, remaining, nextRefillAt } = refused.exhausted;
    const at = nextRefillAt === null ? null : new Date(nextRefillAt).toISOString();
    const wait = nextRefillAt === null ? {} : { retryAfter: Math.max(1, Math.ceil((nextRefillAt - deps.now().getTime()) / 1000)) };
    return { valid: false, code: "credits_exhausted", required, remaining, nextRefillAt: at, ...wait };
  }
  if (refused) return { valid: false, code: "rate_limited", retryAfter: refused.retryAfter };
  // A key's principal always carries them.
  const external = p.external as NonNullable<Principal["external"]>;
  // Of several limits, the one the key is closest to, as X-RateLimit-* shows it.
  const t = verdict.unlimited ? null : tightest(spent.flatMap((s) => s.limits));
  const balances = spent.flatMap((s) => (s.credits ? [s.credits] : []));
  const least = balances.sort((x, y) => x.remaining - y.remaining)[0];
  return {
    valid: true,
    accountId: p.accountId,
    // A key's principal always names its key.
    keyId: p.keyId as string,
    userId: p.userId,
    role: p.role,
    scopes: p.scopes,
    requestId: deps.requestId,
    rateLimit: t ? { limit: t.limit, remaining: t.remaining, reset: Math.ceil(t.resetAt / 1000) } : null,
    credits: least
      ? { remaining: least.remaining, nextRefillAt: least.nextRefillAt === null ? null : new Date(least.nextRefillAt).toISOString() }
      : null,
    ...shown(external.key),
    account: shown(external.account),
  };
}

function shown({ externalId, meta }: External) {
  return { externalId, meta: parseMeta(meta) };
}
