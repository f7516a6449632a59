import { z } from "@hono/zod-openapi";
import type { Need } from "../auth/principal";
import type { CounterContext } from "../env";
import { integer, matching } from "../schemas";
import { authorizeKey } from "./authorize";
import { parseKey } from "./format";

export const VerifyRequest = z
  .strictObject({
    key: z.string().min(1).max(512),
    resource: matching(/^[a-z][a-z0-9]{0,31}:[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, "must be a grant of the form <type>:<id>")
      .optional()
      .openapi({ example: "mailbox:mbx_1" }),
    cost: integer(1, 1000).default(1),
  })
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
    .openapi({ description: "Null when the rate limiter was unavailable and the deployment fails open" }),
});
const Invalid = z.strictObject({
  valid: z.literal(false),
  code: z.enum(["invalid_key", "key_revoked", "key_expired", "key_owner_disabled", "insufficient_scope", "rate_limited"]),
  retryAfter: z.number().int().optional().openapi({ description: "With `rate_limited`: seconds until the key may spend again" }),
});
export const Verdict = z.union([Valid, Invalid]).openapi("Verdict");
export type Verdict = z.infer<typeof Verdict>;

/**
 * Verifies a key for a backend that cannot sit behind the gateway: the same judgement and the same spend as a gateway
 * request (its object decides, `cost` is spent only when the key passes), so a key is never cheaper to use here.
 */
export async function verifyKey(c: CounterContext, { key, resource, cost }: z.output<typeof VerifyRequest>): Promise<Verdict> {
  if (!parseKey(key)) return { valid: false, code: "invalid_key" };
  const need: Need = resource === undefined ? "any" : { resource };
  const verdict = await authorizeKey(c, key, "verify", need, cost);
  if (!verdict.ok) {
    // The only refusal a verify can meet is a missing grant (it names no account and asks for no role): the same
    // 403 code a gateway request gets.
    return { valid: false, code: "refusal" in verdict ? "insufficient_scope" : verdict.code };
  }
  const { principal: p, admission: a } = verdict;
  if (a && !a.allowed) return { valid: false, code: "rate_limited", retryAfter: a.retryAfter };
  return {
    valid: true,
    accountId: p.accountId,
    keyId: p.keyId,
    userId: p.userId,
    role: p.role,
    scopes: p.scopes,
    rateLimit: a ? { limit: a.limit, remaining: a.remaining, reset: Math.ceil(a.resetAt / 1000) } : null,
  };
}
