import { type Limit, named, type Policy, tightest } from "../core/window";
import { deadline, retryFor } from "../platform/deadline";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import { safeError } from "../platform/log";
import type { Counter } from "./counter-object";
import { type Holdings, holdings } from "./held";
import { counterKind, leasedCall, timedOut } from "./leased-call";
import type { Spent } from "./protocol";

export type { Spent } from "./protocol";

/**
 * Spends `cost` requests (one by default) of the named identity's budget, of each of its `limits` (or what `costs`
 * names of those it names: then it takes no lease); a hot counter leases
 * admissions as a hot key does (counters/leased-call.ts). Over the limit: 429 `rate_limited`. When the counter fails or does not answer in
 * time: 503 `rate_limiter_unavailable` in closed mode, or null in open mode (admitted, unlimited: the caller marks its
 * answer `X-RateLimit-Status: unavailable`). `isolate` is replaceable in tests.
 */
export async function spend(
  deps: Deps,
  name: string,
  limits: readonly Limit[],
  cost = 1,
  costs?: Record<string, number>,
  isolate: Holdings = holdings,
): Promise<Spent | null> {
  const answer = leasedCall<DurableObjectStub<Counter>, null>(
    deps,
    {
      name,
      stub: deps.env.COUNTERS.getByName(name),
      cost,
      costs,
      ask: async (stub, spending) => ({ ok: true, record: null, granted: await stub.consume({ limits: [...limits], ...spending }) }),
    },
    isolate,
  );
  // Spent from a lease: no await.
  const leased = answer instanceof Promise ? await answer : answer;
  return leased && admit(leased.spent);
}

/**
 * Spends from the budget of the client's address, as Cloudflare saw it (`ip`: the `CF-Connecting-IP` header; headers a
 * client can write, such as X-Forwarded-For, are ignored). Requests without it did not come through Cloudflare: they
 * share one bucket with a tenth of the budget, so going around Cloudflare never buys more attempts.
 */
export function spendPerAddress(deps: Deps, ip: string | undefined, kind: string, policy: Policy): Promise<Spent | null> {
  if (ip) return spend(deps, `${kind}:${ip}`, [named(policy)]);
  return spend(deps, `${kind}:missing-address`, [
    named({ limit: Math.max(1, Math.floor(policy.limit / 10)), windowSeconds: policy.windowSeconds }),
  ]);
}

/**
 * Passes an admitted request on; a refused one becomes 429 with the headers and `retry_after` that say when to return
 * (when every limit that refused admits again), naming the limit that refused (`limit`: the one admitting again last).
 */
export function admit(spent: Spent): Spent {
  if (!spent.allowed) {
    const limit = spent.refusedBy[0] as string;
    throw new ApiError("rate_limited", `Rate limit exceeded (${limit}). Try again in ${spent.retryAfter} seconds.`, {
      headers: { ...rateLimitHeaders(spent), "Retry-After": String(spent.retryAfter) },
      body: { retry_after: spent.retryAfter, limit },
    });
  }
  return spent;
}

/** How long after the answer a refund that failed is tried again. */
const REFUND_RETRY_MS = 5_000;

/**
 * Gives the request back before the answer leaves (401/403 answers spend nothing), so a burst of refused requests
 * never borrows the budget of the requests beside it. The answer is not held up past the deadline: a refund that
 * failed is tried again after it, for REFUND_RETRY_MS. Every attempt carries one id and its own deadline, so the
 * counter gives back once however many attempts reach it, and an attempt that arrives too late gives back nothing.
 */
export async function refund(deps: Deps, spent: Spent, isolate: Holdings = holdings): Promise<void> {
  const { name, at, cost, costs } = spent;
  if (spent.leased && isolate.giveBack(name, at, cost)) return;
  const stub = name.startsWith("key:") ? deps.env.KEYS.getByName(name) : deps.env.COUNTERS.getByName(name);
  const id = `${deps.requestId}-refund-${at}`;
  const attempt = (ms: number) =>
    deadline(stub.refund({ at, cost, costs, tag: { id, deadline: Date.now() + ms } }), ms, timedOut).then(
      () => true,
      (err: unknown) => {
        deps.log("warn", "refund_failed", { counter: counterKind(name), error: safeError(err) });
        return false;
      },
    );
  const timeout = deps.config.rateLimitTimeoutMs;
  if (await attempt(timeout)) return;
  deps.waitUntil(retryFor(REFUND_RETRY_MS, (stop) => attempt(Math.min(timeout, stop - Date.now()))));
}

/**
 * X-RateLimit-* (as Roboticks documents them) of the tightest limit the request spent (least remaining; of those, the
 * one full again last), and the IETF draft's RateLimit-Policy / RateLimit headers listing every one; for a request
 * admitted unlimited because the counter was down (open mode: null), `X-RateLimit-Status: unavailable`. A request that
 * spent no limit (its route names none the key has) gets none.
 */
export function rateLimitHeaders(a: Spent | null): Record<string, string> {
  if (a === null) return { "X-RateLimit-Status": "unavailable" };
  const t = tightest(a.limits);
  if (!t) return {};
  return {
    "X-RateLimit-Limit": String(t.limit),
    "X-RateLimit-Remaining": String(t.remaining),
    "X-RateLimit-Reset": String(Math.ceil(t.resetAt / 1000)),
    "RateLimit-Policy": a.limits.map((l) => `"${l.name}";q=${l.limit};w=${l.windowSeconds}`).join(", "),
    RateLimit: a.limits.map((l) => `"${l.name}";r=${l.remaining};t=${Math.ceil((l.resetAt - a.at) / 1000)}`).join(", "),
  };
}
