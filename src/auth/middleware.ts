import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { db } from "../db/client";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { hashKey, parseKey } from "../keys/format";
import { evaluateKey, keyIdByHash, loadKey } from "../keys/store";
import type { Authorization } from "../ratelimit/durable-object";
import { type Admission, admit, callLimiter, clientIp, rateLimitHeaders, refund, spend } from "../ratelimit/limiter";
import { type AuthMethod, deprecationHeaders, extractCredential, invalidToken } from "./credentials";
import type { Principal } from "./principal";

const REFUSED = {
  invalid_key: "The API key is not valid.",
  key_revoked: "The API key has been revoked.",
  key_expired: "The API key has expired.",
  key_owner_disabled: "The user who owns this API key is disabled.",
} as const;

/** Key hash -> key id. Immutable facts, so safe to keep; everything that can change is checked by the key's counter. */
const keyIds = new Map<string, string>();
const MAX_CACHED_KEY_IDS = 10_000;

/**
 * Authenticates the request with an API key, puts the principal on the context and spends one request of the key's
 * rate limit. Every protected route uses it. Failed attempts count against the client IP's failure limit.
 */
export const authenticate = createMiddleware<AppEnv>(async (c, next) => {
  const { method, principal, admission } = await identify(c).catch((err: unknown) => countFailure(c, err));
  c.set("principal", principal);

  await next();
  if (admission) {
    if (c.res.status === 401 || c.res.status === 403) refund(c, admission);
    for (const [name, value] of Object.entries(rateLimitHeaders(admission))) c.res.headers.set(name, value);
  }
  if (method === "query") {
    for (const [name, value] of Object.entries(deprecationHeaders(c.get("config")))) c.res.headers.set(name, value);
  }
});

async function identify(c: Context<AppEnv>): Promise<{ method: AuthMethod; principal: Principal; admission: Admission | null }> {
  const found = extractCredential(c.req.raw, new URL(c.req.url), c.get("config"), new Date());
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
  const hash = await hashKey(found.credential);
  const keyId = keyIds.get(hash) ?? (await lookUpKeyId(c, hash));
  const name = `key:${keyId}`;
  const authorization: Authorization | null = await callLimiter(
    c,
    name,
    async (stub) => (await stub.authorize(keyId, found.method)) as Authorization,
  );
  if (authorization === null) {
    // Open mode with the counter down: check the key in D1 and let the request through unlimited.
    const result = evaluateKey(await loadKey(db(c.env.DB), { hash }), new Date());
    if (!result.ok) throw refused(result.code);
    return { method: found.method, principal: result.principal, admission: null };
  }
  if (!authorization.ok) throw refused(authorization.code);
  const { principal } = authorization;
  return { method: found.method, principal, admission: admit({ ...authorization.admission, name, policy: principal.rateLimit }) };
}

async function lookUpKeyId(c: Context<AppEnv>, hash: string): Promise<string> {
  const id = await keyIdByHash(db(c.env.DB), hash);
  if (id === undefined) throw refused("invalid_key");
  if (keyIds.size >= MAX_CACHED_KEY_IDS) keyIds.delete(keyIds.keys().next().value as string);
  keyIds.set(hash, id);
  return id;
}

function refused(code: keyof typeof REFUSED): ApiError {
  return new ApiError(code, REFUSED[code], { headers: invalidToken });
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
