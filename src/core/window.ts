/** A limit: at most `limit` requests in any window of `windowSeconds`. */
export type Policy = { limit: number; windowSeconds: number };

/** Largest limit: the sliding log keeps one entry per admitted request in the window. */
export const MAX_LIMIT = 1_000_000;
export const MAX_WINDOW_SECONDS = 86_400;

/** 60 requests a minute, the default of every new account (RPA Watch's documented limit). */
export const DEFAULT_POLICY: Policy = { limit: 60, windowSeconds: 60 };

export type Decision = {
  allowed: boolean;
  limit: number;
  /** Requests left in the window after this one. */
  remaining: number;
  /** When every request counted now has left the window: the budget is full again (ms since epoch). */
  resetAt: number;
  /** When denied: whole seconds until a request would be admitted, rounded up so it is never early. */
  retryAfter: number;
};

/**
 * Sliding-log decision. `log` holds the times (ms, ascending) of admitted requests; a request at `now` costing `cost`
 * requests is admitted when at most `limit - cost` of them are later than `now - window`. Exact: no window ever holds
 * more than `limit`.
 */
export function decide(log: readonly number[], now: number, policy: Policy, cost = 1): Decision {
  const windowMs = policy.windowSeconds * 1000;
  const first = firstInWindow(log, now - windowMs);
  const used = log.length - first;
  if (used + cost <= policy.limit) {
    // Leased admissions lie ahead of now (ratelimit/lease.ts): the budget is full again once the latest has left.
    const latest = Math.max(now, log[log.length - 1] ?? now);
    return { allowed: true, limit: policy.limit, remaining: policy.limit - used - cost, resetAt: latest + windowMs, retryAfter: 0 };
  }
  // The request fits once enough old entries leave the window: the (used - limit + cost)-th oldest one. A request
  // that costs more than the whole limit never fits; it is told to come back after a window.
  const freeAt = cost > policy.limit ? now + windowMs : (log[first + used - policy.limit + cost - 1] as number) + windowMs;
  return {
    allowed: false,
    limit: policy.limit,
    // What is left can be less than this request's cost and still be something (a lowered limit can leave less than none).
    remaining: Math.max(0, policy.limit - used),
    resetAt: (log[log.length - 1] as number) + windowMs,
    retryAfter: Math.ceil((freeAt - now) / 1000),
  };
}

/** Index of the first entry later than `cutoff` (binary search over the ascending log). */
export function firstInWindow(log: readonly number[], cutoff: number): number {
  let lo = 0;
  let hi = log.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((log[mid] as number) > cutoff) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
