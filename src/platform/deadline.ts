import type { Config } from "./config";
import { ApiError } from "./errors";

/** Settles as `promise` does, or rejects with `onTimeout()` once `ms` have passed, whichever comes first. */
export function deadline<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), Math.max(0, ms));
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Work after the answer that must happen even though its first try failed: calls `attempt` (given the instant it must
 * be done by) 100 ms from now, then pausing twice as long each time up to a second, until it answers true or `ms` have
 * passed. Answers whether it succeeded.
 */
export async function retryFor(ms: number, attempt: (stop: number) => Promise<boolean>): Promise<boolean> {
  const stop = Date.now() + ms;
  for (let pause = 100; Date.now() < stop; pause = Math.min(pause * 2, 1_000)) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(pause, stop - Date.now())));
    if (await attempt(stop)) return true;
  }
  return false;
}

/** A Durable Object's answer within RATE_LIMIT_TIMEOUT_MS, or 503 `rate_limiter_unavailable` (retry in 5 s). */
export function objectAnswer<T>(deps: { config: Pick<Config, "rateLimitTimeoutMs"> }, call: Promise<T>, detail: string): Promise<T> {
  return deadline(
    call,
    deps.config.rateLimitTimeoutMs,
    () => new ApiError("rate_limiter_unavailable", detail, { headers: { "Retry-After": "5" } }),
  );
}
