import type { Policy } from "../core/window";
import type { CounterContext, RequestContext, Variables } from "../guards/context";
import type { KeyObject } from "../keys/object";
import { deadline, retryFor } from "../platform/deadline";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import { log, safeError } from "../platform/log";
import type { Counter } from "./counter-object";
import { holdings } from "./held";
import type { CallTag, Admission as Counted, Unspent } from "./sliding-log";

/** The admission a request got, to show in headers and to refund; `leased` when it was spent from this isolate's lease. */
export type Admission = Counted & { name: string; policy: Policy; leased?: true };

/**
 * Spends `cost` requests (one by default) of the named identity's budget. Over the limit: 429 `rate_limited`. When the counter fails or
 * does not answer in time: 503 `rate_limiter_unavailable` in closed mode, or null (admitted, unlimited) in open mode.
 */
export async function spend(c: RequestContext, name: string, policy: Policy, cost = 1): Promise<Admission | null> {
  // A hot counter leases admissions as a hot key does (ratelimit/lease.ts).
  for (let renewal = holdings.inFlight(name); ; renewal = holdings.inFlight(name)) {
    const local = holdings.take(name, cost, policy);
    if (local) return local;
    if (!renewal || !(await renewal)) break;
  }
  const askedAt = holdings.now();
  const returned = holdings.unspent(name);
  const counted = await holdings.track(
    name,
    callCounter(c, c.env.COUNTERS.getByName(name), name, (stub, tag) => stub.consume(policy, tag, cost, returned), returned),
    (answer) => answer?.lease != null,
    c.get("config").rateLimitTimeoutMs,
  );
  if (counted === null) return null;
  const { lease, ...admission } = counted;
  if (lease) holdings.hold(name, askedAt, null, lease, admission.remaining, admission.resetAt);
  // Refused because a concurrent call of this isolate took the budget as a lease: spend from that lease instead.
  if (!admission.allowed) {
    const leased = holdings.take(name, cost, policy);
    if (leased) return leased;
  }
  return admit({ ...admission, remaining: admission.remaining + holdings.available(name), name, policy });
}

/**
 * Spends from the budget of the client's address, as Cloudflare saw it (`CF-Connecting-IP`; headers a client can
 * write, such as X-Forwarded-For, are ignored). Requests without it did not come through Cloudflare: they share one
 * bucket with a tenth of the budget, so going around Cloudflare never buys more attempts.
 */
export function spendPerAddress(c: RequestContext, kind: string, policy: Policy): Promise<Admission | null> {
  const ip = c.req.header("CF-Connecting-IP");
  if (ip) return spend(c, `${kind}:${ip}`, policy);
  return spend(c, `${kind}:missing-address`, { limit: Math.max(1, Math.floor(policy.limit / 10)), windowSeconds: policy.windowSeconds });
}

/** Passes an admitted request on; a refused one becomes 429 with the headers and `retry_after` that say when to return. */
export function admit(admission: Admission): Admission {
  if (!admission.allowed) {
    throw new ApiError("rate_limited", `Rate limit exceeded. Try again in ${admission.retryAfter} seconds.`, {
      headers: { ...rateLimitHeaders(admission), "Retry-After": String(admission.retryAfter) },
      body: { retry_after: admission.retryAfter },
    });
  }
  return admission;
}

/** The retry hint when the counter is down: long enough for a retried call to find it back. */
const UNAVAILABLE_RETRY_SECONDS = 5;

/** The kind of a counter for logs (`key:<id>` keeps its id; addresses and end-user ids are not logged). */
function counterKind(name: string): string {
  return name.startsWith("key:") ? name : (name.split(":", 1)[0] ?? "");
}

/**
 * Calls the named counter with a deadline (RATE_LIMIT_TIMEOUT_MS). The call carries the request id and the deadline,
 * so a retry spends once and a call that arrives too late spends nothing; when the call fails or times out, the
 * counter is told to give back whatever it spent for it, and takes `returned` (what the isolate's ended leases left
 * unspent, which the call carried) unless the call already brought it. Then: 503 in closed mode; null in open mode,
 * and the response is marked so the client (and the log) can tell it was not limited.
 */
export async function callCounter<S extends DurableObjectStub<Counter> | DurableObjectStub<KeyObject>, T>(
  c: CounterContext,
  stub: S,
  name: string,
  call: (stub: S, tag: CallTag) => Promise<T>,
  returned: Unspent[] = [],
): Promise<T | null> {
  const { rateLimitFailureMode, rateLimitTimeoutMs } = c.get("config");
  const tag = { id: c.get("requestId"), deadline: Date.now() + rateLimitTimeoutMs };
  try {
    return await retriedOnce(() => call(stub, tag), tag.deadline);
  } catch (err) {
    c.executionCtx.waitUntil(
      deadline(stub.cancel(tag, returned), rateLimitTimeoutMs, timedOut).catch((e: unknown) =>
        log("warn", "counter_cancel_failed", { counter: counterKind(name), error: safeError(e) }),
      ),
    );
    const fields = { counter: counterKind(name), error: safeError(err), requestId: tag.id };
    if (rateLimitFailureMode === "closed") {
      log("error", "counter_unavailable_refused", fields);
      throw unavailable();
    }
    log("warn", "counter_unavailable_admitted", fields);
    c.header("X-RateLimit-Status", "unavailable");
    return null;
  }
}

function unavailable(): ApiError {
  return new ApiError("rate_limiter_unavailable", "The rate limiter is unavailable; retry shortly.", {
    headers: { "Retry-After": String(UNAVAILABLE_RETRY_SECONDS) },
  });
}

const timedOut = () => new Error("no answer before the deadline");

/** One call with a deadline; retried once only when the platform marks the error retryable (and not overload). */
async function retriedOnce<T>(call: () => Promise<T>, until: number): Promise<T> {
  const attempt = () => deadline(call(), until - Date.now(), timedOut);
  try {
    return await attempt();
  } catch (err) {
    const e = err as { retryable?: boolean; overloaded?: boolean };
    if (e.retryable === true && e.overloaded !== true && Date.now() < until) return attempt();
    throw err;
  }
}

/** How long after the answer a refund that failed is tried again. */
const REFUND_RETRY_MS = 5_000;

/**
 * Gives the request back before the answer leaves (401/403 answers spend nothing), so a burst of refused requests
 * never borrows the budget of the requests beside it. The answer is not held up past the deadline: a refund that
 * failed is tried again after it, for REFUND_RETRY_MS. Every attempt carries one id and its own deadline, so the
 * counter gives back once however many attempts reach it, and an attempt that arrives too late gives back nothing.
 */
export async function refund(c: RequestContext, admission: Admission): Promise<void> {
  if (admission.leased && holdings.giveBack(admission.name, admission.at, admission.cost)) return;
  const stub = admission.name.startsWith("key:") ? c.env.KEYS.getByName(admission.name) : c.env.COUNTERS.getByName(admission.name);
  const id = `${c.get("requestId")}-refund-${admission.at}`;
  const attempt = (ms: number) =>
    deadline(stub.refund(admission.at, admission.cost, { id, deadline: Date.now() + ms }), ms, timedOut).then(
      () => true,
      (err: unknown) => {
        log("warn", "refund_failed", { counter: counterKind(admission.name), error: safeError(err) });
        return false;
      },
    );
  const timeout = c.get("config").rateLimitTimeoutMs;
  if (await attempt(timeout)) return;
  c.executionCtx.waitUntil(retryFor(REFUND_RETRY_MS, (stop) => attempt(Math.min(timeout, stop - Date.now()))));
}

/** X-RateLimit-* (as Roboticks documents them) and the IETF draft's RateLimit-Policy / RateLimit headers. */
export function rateLimitHeaders(a: Admission): Record<string, string> {
  const secondsToReset = Math.ceil((a.resetAt - a.at) / 1000);
  return {
    "X-RateLimit-Limit": String(a.limit),
    "X-RateLimit-Remaining": String(a.remaining),
    "X-RateLimit-Reset": String(Math.ceil(a.resetAt / 1000)),
    "RateLimit-Policy": `"default";q=${a.policy.limit};w=${a.policy.windowSeconds}`,
    RateLimit: `"default";r=${a.remaining};t=${secondsToReset}`,
  };
}

/**
 * A context for calls made outside a request's own (a background renewal, the verify entrypoint): its bindings, its
 * configuration and an id of its own; there is no response to mark.
 */
export function counterContext(deps: Deps, executionCtx: CounterContext["executionCtx"]): CounterContext {
  const vars: Variables = { requestId: deps.requestId, deps, config: deps.config, corsOrigin: null };
  return { env: deps.env, executionCtx, header: () => {}, get: (key) => vars[key] };
}
