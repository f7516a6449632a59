import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { findAgent } from "../agents/store";
import { db } from "../db/client";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { hashKey, parseKey } from "../keys/format";
import { evaluateKey, keyIdByHash, loadKey } from "../keys/store";
import type { Authorization } from "../ratelimit/durable-object";
import { type Admission, admit, callLimiter, clientIp, rateLimitHeaders, refund, spend } from "../ratelimit/limiter";
import { type ChatClaims, looksLikeToken, verifyToken } from "../tokens/handshake";
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
 * Authenticates the request and spends one request of its rate limit: an API key (then `principal` is set) or, where
 * `tokens` is true, a handshake token (limited per agent user). Every protected route uses it; a valid handshake token
 * anywhere else is 403. Failed attempts count against the client IP's failure limit.
 */
function authenticateWith({ tokens }: { tokens: boolean }) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const { method, admission } = await identify(c, tokens).catch((err: unknown) => countFailure(c, err));
    await next();
    if (admission) {
      if (c.res.status === 401 || c.res.status === 403) refund(c, admission);
      for (const [name, value] of Object.entries(rateLimitHeaders(admission))) c.res.headers.set(name, value);
    }
    if (method === "query") {
      for (const [name, value] of Object.entries(deprecationHeaders(c.get("config")))) c.res.headers.set(name, value);
    }
  });
}

/** A middleware that applies a permission check (requireAdmin, requireFullAccess, ...) to the key's principal. */
export function guard(check: (p: Principal) => void) {
  return createMiddleware<AppEnv>(async (c, next) => {
    check(c.get("principal"));
    await next();
  });
}

/** API keys only: the management API. */
export const authenticate = authenticateWith({ tokens: false });
/** API keys or handshake tokens: the chat endpoints. */
export const authenticateChat = authenticateWith({ tokens: true });

async function identify(c: Context<AppEnv>, tokens: boolean): Promise<{ method: AuthMethod; admission: Admission | null }> {
  const config = c.get("config");
  const found = extractCredential(c.req.raw, new URL(c.req.url), config, new Date());
  if (!found) {
    throw new ApiError("missing_credentials", "Send your API key in the `X-API-Key` header or as `Authorization: Bearer <key>`.");
  }
  if (looksLikeToken(found.credential)) {
    const claims = await checkToken(c, found.credential);
    if (!tokens) throw new ApiError("insufficient_scope", "Handshake tokens work only on the /v1/chat endpoints; use an API key here.");
    const name = `chat:${claims.agt}:${claims.sub}`;
    return { method: found.method, admission: await spend(c, name, config.chatPolicy) };
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
    c.set("principal", result.principal);
    return { method: found.method, admission: null };
  }
  if (!authorization.ok) throw refused(authorization.code);
  const { principal } = authorization;
  c.set("principal", principal);
  return { method: found.method, admission: admit({ ...authorization.admission, name, policy: principal.rateLimit }) };
}

/**
 * A handshake token is valid, bound to the origin the request comes from (when a browser minted it) and issued by an
 * agent that is still enabled: disabling an agent stops its tokens on their next request.
 */
async function checkToken(c: Context<AppEnv>, token: string): Promise<ChatClaims> {
  const result = await verifyToken(c.get("config").signingKeys, token, new Date());
  if (!result.ok) {
    const detail =
      result.code === "token_expired" ? "The token has expired; call the handshake endpoint for a new one." : "The token is not valid.";
    throw new ApiError(result.code, detail, { headers: invalidToken });
  }
  const { claims } = result;
  if (claims.origin !== undefined && claims.origin !== (c.req.header("Origin") ?? null)) {
    throw new ApiError("invalid_token", "The token was issued for another origin.", { headers: invalidToken });
  }
  const agent = await findAgent(db(c.env.DB), claims.agt);
  if (!agent || agent.accountId !== claims.acc) throw new ApiError("invalid_token", "The token is not valid.", { headers: invalidToken });
  if (agent.disabled) throw new ApiError("agent_disabled", "The agent that issued this token is disabled.");
  if (claims.origin !== undefined) c.set("corsOrigin", claims.origin);
  return claims;
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
