import { hashKey } from "../core/ids";
import type { AuthMethod, Need } from "../core/principal";
import { type Limit, named, type Policy } from "../core/window";
import { type Charge, refund, type Spent, spend, spendPerAddress } from "../counters/limiter";
import type { Idempotency } from "../counters/protocol";
import { authorizeKey, type KeyVerdict } from "../keys/authorize";
import { LOGIN_EMAIL_POLICY } from "../people/sessions";
import { ApiError } from "../platform/errors";
import type { RequestContext } from "./context";

// The guards' spends, each marking an answer that went unlimited because its counter was down (open mode).

/** Spends `cost` of each of the named budget's limits: the spend (which may be a refusal, see `admit`), or null when it went unlimited. */
export async function spendOn(
  c: RequestContext,
  name: string,
  limits: readonly Limit[],
  cost: number,
  costs?: Record<string, number>,
): Promise<Spent | null> {
  return unlimitedIfNull(c, await spend(c.get("deps"), name, limits, cost, costs));
}

/** Spends one request of the client address's `kind` budget (over it, 429). */
export async function spendOnAddress(c: RequestContext, kind: string, policy: Policy): Promise<Spent | null> {
  return unlimitedIfNull(c, await spendPerAddress(c.get("deps"), c.req.header("CF-Connecting-IP"), kind, policy));
}

/** Spends one attempt of the client address's failure budget (IP_FAILURE_RATE_LIMIT). */
export function spendFailure(c: RequestContext): Promise<Spent | null> {
  return spendOnAddress(c, "ip", c.get("config").ipPolicy);
}

/**
 * A key's verdict from its object (or this isolate's lease of it), which spends the charge only when the key passes,
 * in the key's object and its account's.
 */
export async function authorize(
  c: RequestContext,
  input: { key: string; method: AuthMethod; need: Need | (() => Promise<Need>); idempotency?: Idempotency } & Charge,
): Promise<KeyVerdict> {
  // The key's allowed addresses are judged on the address Cloudflare saw the connection come from, never on a header
  // the client writes (X-Forwarded-For and the like).
  const verdict = await authorizeKey(c.get("deps"), { ...input, ip: c.req.header("CF-Connecting-IP") ?? null });
  if (verdict.ok && verdict.unlimited) c.header("X-RateLimit-Status", "unavailable");
  return verdict;
}

function unlimitedIfNull(c: RequestContext, spent: Spent | null): Spent | null {
  if (spent === null) c.header("X-RateLimit-Status", "unavailable");
  return spent;
}

/**
 * The password attempts of this request's client: each spends from the email's budget (LOGIN_EMAIL_POLICY) and the
 * client address's; past either, 429 (what the first had spent given back).
 */
export function passwordAttempts(c: RequestContext): (email: string) => Promise<Spent[]> {
  return async (email) => {
    const spent: Spent[] = [];
    for (const admission of [await spendOn(c, `login:${await hashKey(email)}`, [named(LOGIN_EMAIL_POLICY)], 1), await spendFailure(c)]) {
      if (!admission) continue;
      if (!admission.allowed) {
        for (const s of spent) await refund(c.get("deps"), s);
        throw new ApiError("rate_limited", `Too many password attempts. Try again in ${admission.retryAfter} seconds.`, {
          headers: { "Retry-After": String(admission.retryAfter) },
          body: { retry_after: admission.retryAfter },
        });
      }
      spent.push(admission);
    }
    return spent;
  };
}
