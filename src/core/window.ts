/** A limit: at most `limit` requests in any window of `windowSeconds`. */
export type Policy = { limit: number; windowSeconds: number };

/**
 * One of a key's (or an account's) limits, by name: a plan's "minute" and "day". `shared: "account"`: one budget for
 * every key and person of the account together, counted in the account's object, so ten keys are not ten quotas;
 * `shared: "user"`: one budget for each person of the account, all their keys and sessions together.
 */
export type Limit = Policy & { name: string; shared?: "account" | "user" };

/** What a limit may be called: a lowercase letter, then up to 31 lowercase letters, digits, `_` or `-`. */
export const LIMIT_NAME = /^[a-z][a-z0-9_-]{0,31}$/;
/** The name of a single limit: the `rateLimit` shorthand, and every plain counter's. */
export const DEFAULT_LIMIT = "default";
/** The most limits one key or account carries: each is a sliding log in the key's object. */
export const MAX_LIMITS = 8;

/** `policy` as the limit named `name`. */
export function named(policy: Policy, name = DEFAULT_LIMIT): Limit {
  return { name, limit: policy.limit, windowSeconds: policy.windowSeconds };
}

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

/** Sliding logs by limit name: the times (ms, ascending) of what each limit admitted. */
export type Logs = Map<string, number[]>;

/** The log of the limit named `name`, created empty when it has none yet. */
export function logOf(logs: Logs, name: string): number[] {
  let log = logs.get(name);
  if (!log) {
    log = [];
    logs.set(name, log);
  }
  return log;
}

/** What a request spends of one limit. */
export type Charge = { limit: Limit; cost: number };

/**
 * What a request spends: every limit at `cost`, or, when its route names limits (`costs`), only those, each at the
 * route's cost for it (a name the key has no limit of is ignored).
 */
export function charges(limits: readonly Limit[], cost: number, costs?: Readonly<Record<string, number>>): Charge[] {
  if (!costs) return limits.map((limit) => ({ limit, cost }));
  return limits.flatMap((limit) => (Object.hasOwn(costs, limit.name) ? [{ limit, cost: costs[limit.name] as number }] : []));
}

/** One limit's state after a decision: what its rate-limit headers show. */
export type LimitState = Limit & { remaining: number; resetAt: number };

/**
 * A decision on every limit a request spends: admitted only when each admits it. `limits`: each limit's state;
 * `refusedBy`: the limits that refused, the one admitting again last first; `retryAfter`: whole seconds until every
 * one of them admits again.
 */
export type Decisions = { allowed: boolean; retryAfter: number; limits: LimitState[]; refusedBy: string[] };

/**
 * Decides a request on every limit it spends (`decide` on each limit's log); changes no log. Refused, it spends from
 * none: a limit that would have admitted it shows what it had left before it.
 */
export function decideAll(logs: Logs, now: number, spend: readonly Charge[]): Decisions {
  const each = spend.map(({ limit, cost }) => ({ limit, cost, d: decide(logs.get(limit.name) ?? [], now, limit, cost) }));
  const refused = each.filter(({ d }) => !d.allowed).sort((a, b) => b.d.retryAfter - a.d.retryAfter);
  const allowed = refused.length === 0;
  return {
    allowed,
    retryAfter: refused[0]?.d.retryAfter ?? 0,
    limits: each.map(({ limit, cost, d }) => ({
      ...limit,
      remaining: allowed || !d.allowed ? d.remaining : d.remaining + cost,
      resetAt: d.resetAt,
    })),
    refusedBy: refused.map(({ limit }) => limit.name),
  };
}

/** The limit a client is closest to: the least remaining; of those, the one full again last. */
export function tightest(limits: readonly LimitState[]): LimitState | undefined {
  let t: LimitState | undefined;
  for (const l of limits) if (!t || l.remaining < t.remaining || (l.remaining === t.remaining && l.resetAt > t.resetAt)) t = l;
  return t;
}
