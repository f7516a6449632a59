import type { AuthMethod, Need } from "../core/principal";
import type { Policy } from "../core/window";
import { type Admission, admit, rateLimitHeaders, refund, spend, spendPerAddress } from "../counters/limiter";
import { authorizeKey, type KeyVerdict } from "../keys/authorize";
import type { RequestContext } from "./context";

// Every call the guards make to the counters and to a key's authorization is in this file, so that how they are
// called (what they take of the request) changes here and nowhere else.

export type { Admission };

/**
 * Spends `cost` of the named budget: an admission, which may be a refusal (see `admitted`), or null when the counter
 * was down and the deployment fails open; the answer then says it went unlimited.
 */
export async function spendOn(c: RequestContext, name: string, policy: Policy, cost: number): Promise<Admission | null> {
  return unlimitedIfNull(c, await spend(c, name, policy, cost));
}

/** Spends one attempt of the client address's failure budget (IP_FAILURE_RATE_LIMIT). */
export function spendFailure(c: RequestContext): Promise<Admission | null> {
  return spendPerAddress(c, "ip", c.get("config").ipPolicy);
}

/** A key's verdict from its object (or this isolate's lease of it), which spends `cost` only when the key passes. */
export async function authorize(
  c: RequestContext,
  { key, method, need, cost }: { key: string; method: AuthMethod; need: Need | (() => Promise<Need>); cost: number },
): Promise<KeyVerdict> {
  const verdict = await authorizeKey(c, key, method, need, cost);
  if (verdict.ok) unlimitedIfNull(c, verdict.admission);
  return verdict;
}

/** The admission when it admits; a refused one throws 429 with the headers that say when to return. */
export const admitted = (spent: Admission): Admission => admit(spent);

/** Gives a spend back. */
export const giveBack = (c: RequestContext, spent: Admission): Promise<void> => refund(c, spent);

/** The rate-limit headers of an admission. */
export const limitHeaders = (spent: Admission): Record<string, string> => rateLimitHeaders(spent);

function unlimitedIfNull(c: RequestContext, spent: Admission | null): Admission | null {
  if (spent === null) c.header("X-RateLimit-Status", "unavailable");
  return spent;
}
