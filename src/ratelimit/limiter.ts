import type { Context } from "hono";
import type { AppEnv, Bindings } from "../env";
import { ApiError } from "../errors";
import type { Admission as Counted, RateLimiter } from "./durable-object";
import type { Policy } from "./window";

/** The admission a request got, to show in headers and to refund. */
export type Admission = Counted & { name: string; policy: Policy };

/**
 * Spends one request of the named identity's budget. Over the limit: 429 `rate_limited`. When the counter fails or
 * does not answer in time: 503 `rate_limiter_unavailable` in closed mode, or null (admitted, unlimited) in open mode.
 */
export async function spend(c: Context<AppEnv>, name: string, policy: Policy): Promise<Admission | null> {
  const counted = await callLimiter(c, name, (stub) => stub.consume(policy));
  return counted === null ? null : admit({ ...counted, name, policy });
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

/**
 * Calls the named counter with a deadline. When it fails: 503 in closed mode; null in open mode, and the response
 * is marked so the client (and the log) can tell it was not limited.
 */
export async function callLimiter<T>(
  c: Context<AppEnv>,
  name: string,
  call: (stub: DurableObjectStub<RateLimiter>) => Promise<T>,
): Promise<T | null> {
  const { rateLimitFailureMode, rateLimitTimeoutMs } = c.get("config");
  try {
    return await withTimeout(() => call(c.env.RATE_LIMITER.getByName(name)), rateLimitTimeoutMs);
  } catch (err) {
    if (rateLimitFailureMode === "closed") {
      console.error(`rate limiter unavailable for ${name}, refused: ${describe(err)}`);
      throw new ApiError("rate_limiter_unavailable", "The rate limiter is unavailable; retry shortly.", {
        headers: { "Retry-After": String(UNAVAILABLE_RETRY_SECONDS) },
      });
    }
    console.warn(`rate limiter unavailable for ${name}, admitted without limit: ${describe(err)}`);
    c.header("X-RateLimit-Status", "unavailable");
    return null;
  }
}

/** One call with a deadline; retried once only when the platform marks the error retryable (and not overload). */
async function withTimeout<T>(call: () => Promise<T>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  const attempt = () => {
    const signal = AbortSignal.timeout(Math.max(0, deadline - Date.now()));
    const timeout = new Promise<never>((_, reject) => {
      signal.addEventListener("abort", () => reject(new Error(`no answer within ${ms} ms`)));
    });
    return Promise.race([call(), timeout]);
  };
  try {
    return await attempt();
  } catch (err) {
    const e = err as { retryable?: boolean; overloaded?: boolean };
    if (e.retryable === true && e.overloaded !== true && Date.now() < deadline) return attempt();
    throw err;
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Gives the request back, off the response path: refused answers do not spend a budget. */
export function refund(c: Context<AppEnv>, admission: Admission): void {
  c.executionCtx.waitUntil(
    c.env.RATE_LIMITER.getByName(admission.name)
      .refund(admission.at)
      .catch((err: unknown) => console.warn(`rate limit refund failed for ${admission.name}: ${describe(err)}`)),
  );
}

/** X-RateLimit-* (seed 003) and the IETF draft's RateLimit-Policy / RateLimit headers. */
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

/** The client's address as Cloudflare saw it; forwarding headers a client can write are ignored. */
export function clientIp(c: Context<AppEnv>): string {
  return c.req.header("CF-Connecting-IP") ?? "unknown";
}

/**
 * Makes the counters of these keys read their key, owner and account again, so a revocation or a change of the
 * owner's role takes effect on the next request. A counter that cannot be reached reloads within RECORD_TTL_MS.
 */
export async function reloadKeys(env: Bindings, keyIds: string[]): Promise<void> {
  const results = await Promise.allSettled(keyIds.map((id) => env.RATE_LIMITER.getByName(`key:${id}`).reload()));
  for (const [i, r] of results.entries()) {
    if (r.status === "rejected") console.error(`reload of key:${keyIds[i]} failed: ${describe(r.reason)}`);
  }
}
