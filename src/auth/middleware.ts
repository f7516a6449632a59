import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { db } from "../db/client";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { parseKey } from "../keys/format";
import { touchKey, verifyKey } from "../keys/store";
import { clientIp, rateLimitHeaders, refund, spend } from "../ratelimit/limiter";
import { deprecationHeaders, extractCredential, invalidToken } from "./credentials";

const REFUSED = {
  invalid_key: "The API key is not valid.",
  key_revoked: "The API key has been revoked.",
  key_expired: "The API key has expired.",
  key_owner_disabled: "The user who owns this API key is disabled.",
} as const;

/**
 * Authenticates the request with an API key, puts the principal on the context and spends one request of the key's
 * rate limit. Every protected route uses it. Failed attempts count against the client IP's failure limit.
 */
export const authenticate = createMiddleware<AppEnv>(async (c, next) => {
  const config = c.get("config");
  const now = new Date();
  const { method, result } = await identify(c, now).catch((err: unknown) => countFailure(c, err));
  c.set("principal", result.principal);

  const admission = await spend(c, `key:${result.key.id}`, result.principal.rateLimit);
  const touch = touchKey(db(c.env.DB), result.key, method, now);
  if (touch) {
    c.executionCtx.waitUntil(
      touch.run().then(
        () => undefined,
        (err: unknown) => console.error(`lastUsedAt update failed for ${result.key.id}: ${String(err)}`),
      ),
    );
  }

  await next();
  if (admission) {
    if (c.res.status === 401 || c.res.status === 403) refund(c, admission);
    for (const [name, value] of Object.entries(rateLimitHeaders(admission))) c.res.headers.set(name, value);
  }
  if (method === "query") {
    for (const [name, value] of Object.entries(deprecationHeaders(config))) c.res.headers.set(name, value);
  }
});

async function identify(c: Context<AppEnv>, now: Date) {
  const found = extractCredential(c.req.raw, new URL(c.req.url), c.get("config"), now);
  if (!found) {
    throw new ApiError("missing_credentials", "Send your API key in the `X-API-Key` header or as `Authorization: Bearer <key>`.");
  }
  if (!parseKey(found.credential)) {
    throw new ApiError(
      "malformed_credentials",
      "The credential is not an API key: keys look like `<prefix>_` followed by 64 hex characters.",
      {
        headers: invalidToken,
      },
    );
  }
  const result = await verifyKey(db(c.env.DB), found.credential, now);
  if (!result.ok) throw new ApiError(result.code, REFUSED[result.code], { headers: invalidToken });
  return { method: found.method, result };
}

/** A refused credential spends the client IP's failure budget; past it, the answer is 429 instead of 401. */
async function countFailure(c: Context<AppEnv>, err: unknown): Promise<never> {
  if (err instanceof ApiError && err.status === 401) {
    try {
      await spend(c, `ip:${clientIp(c)}`, c.get("config").ipPolicy);
    } catch (limited) {
      // Only the verdict matters here; an unavailable counter must not turn a 401 into a 503.
      if (limited instanceof ApiError && limited.code === "rate_limited") throw limited;
    }
  }
  throw err;
}
