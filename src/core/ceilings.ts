import { storedLimits } from "./schemas";
import { type Limit, named, type Policy } from "./window";

/**
 * An account's limits: its default (`rateLimits`, JSON, or when null the single `rateLimit`; with several, `rateLimit`
 * is the one named "default" or the first), and the ceiling on its members' (null: the default is the ceiling).
 */
export type AccountLimits = {
  rateLimit: number;
  rateLimitWindowSeconds: number;
  rateLimits: string | null;
  /** The limits of the account's plan (JSON), when it is on one: its default when it sets none of its own. */
  planLimits?: string | null;
  maxRateLimit: number | null;
  maxRateLimitWindowSeconds: number | null;
  /** The account's credits pool (JSON `CreditsConfig`), else its plan's (`planCredits`); both null: unlimited. */
  credits?: string | null;
  planCredits?: string | null;
  /** The balance each person of the account has (JSON `CreditsConfig`), else its plan's; both null: unlimited. */
  userCredits?: string | null;
  planUserCredits?: string | null;
};

/** The highest limit members may give their keys: the account's `maxRateLimit`, else its default limit. */
export function rateLimitCeiling(a: AccountLimits): Policy {
  return a.maxRateLimit !== null && a.maxRateLimitWindowSeconds !== null
    ? { limit: a.maxRateLimit, windowSeconds: a.maxRateLimitWindowSeconds }
    : { limit: a.rateLimit, windowSeconds: a.rateLimitWindowSeconds };
}

/** Whether `p` admits no more requests than `ceiling` in one window, nor at a higher rate over a longer one. */
export function withinCeiling(p: Policy, ceiling: Policy): boolean {
  return p.limit <= ceiling.limit && p.limit * ceiling.windowSeconds <= ceiling.limit * p.windowSeconds;
}

/**
 * The account's default limits, those of its keys that have none of their own: the account's own named limits, else
 * its plan's, else its single `rateLimit`.
 */
export function defaultLimits(a: AccountLimits): Limit[] {
  const stored = a.rateLimits ?? a.planLimits ?? null;
  return stored === null ? [named({ limit: a.rateLimit, windowSeconds: a.rateLimitWindowSeconds })] : storedLimits(stored);
}
