import type { Next } from "hono";
import { createMiddleware } from "hono/factory";
import { findAgent } from "../agents/store";
import { db } from "../db/client";
import type { KeyEnv, MaybeKeyEnv, RequestContext } from "../env";
import { ApiError } from "../errors";
import { hashKey, parseKey } from "../keys/format";
import { evaluateKey, keyIdByHash, loadKey } from "../keys/store";
import type { Authorization } from "../objects/key";
import { type Admission, admit, callCounter, rateLimitHeaders, refund, spend, spendPerAddress } from "../ratelimit/limiter";
import { type ChatClaims, looksLikeToken, verifyToken } from "../tokens/handshake";
import { deprecationHeaders, extractCredential, invalidToken } from "./credentials";
import { type Need, type Principal, refused, requireRights } from "./principal";

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
 * Authenticates the request, checks what the route needs of the key, and spends one request of its rate limit: an API
 * key (then `principal` is set) or, where `tokens` is true, a handshake token (limited per agent user). A valid
 * handshake token anywhere else is 403. The key's counter decides 401 and 403 before spending; a 401, 403 or 5xx the
 * handler answers later is refunded before the answer leaves. Failed attempts count against the client IP's failures.
 */
async function guard(c: RequestContext, next: Next, tokens: boolean, need: Need, setPrincipal: (p: Principal) => void) {
  const admission = await identify(c, tokens, need, setPrincipal).catch((err: unknown) => countFailure(c, err));
  await next();
  if (admission) {
    // Refused (401/403) or not served (5xx): the request spends nothing.
    if (c.res.status === 401 || c.res.status === 403 || c.res.status >= 500) await refund(c, admission);
    for (const [name, value] of Object.entries(rateLimitHeaders(admission))) c.res.headers.set(name, value);
  }
}

/** API keys only (the management API), with what the route needs of them; the handler gets the key's `principal`. */
export const authenticate = (need: Need) =>
  createMiddleware<KeyEnv>((c, next) => guard(c, next, false, need, (p) => c.set("principal", p)));
/**
 * The handshake: a backend sends a full-access key (then `principal` is set), a browser sends nothing secret and goes
 * on unauthenticated.
 */
export const authenticateIfSent = (need: Need) =>
  createMiddleware<MaybeKeyEnv>(async (c, next) => {
    if (c.req.header("Authorization") === undefined && c.req.header("X-API-Key") === undefined) return next();
    return guard(c, next, false, need, (p) => c.set("principal", p));
  });
/** API keys or handshake tokens: the chat endpoints. `principal` is set when the credential was a key. */
export const authenticateChat = createMiddleware<MaybeKeyEnv>((c, next) => guard(c, next, true, "any", (p) => c.set("principal", p)));

async function identify(c: RequestContext, tokens: boolean, need: Need, setPrincipal: (p: Principal) => void): Promise<Admission | null> {
  const config = c.get("config");
  const found = extractCredential(c.req.raw, new URL(c.req.url), config, new Date());
  if (!found) {
    throw new ApiError("missing_credentials", "Send your API key in the `X-API-Key` header or as `Authorization: Bearer <key>`.");
  }
  // Set now, so that every answer to a query-parameter request says it is deprecated, refusals included.
  if (found.method === "query") for (const [name, value] of Object.entries(deprecationHeaders(config))) c.header(name, value);
  if (looksLikeToken(found.credential)) {
    const claims = await checkToken(c, found.credential);
    if (!tokens) throw new ApiError("insufficient_scope", "Handshake tokens work only on the /v1/chat endpoints; use an API key here.");
    const name = `chat:${claims.agt}:${claims.sub}`;
    return spend(c, name, config.chatPolicy);
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
  const authorization = await callCounter(
    c,
    c.env.KEYS.getByName(name),
    name,
    (stub, tag) => stub.authorize(keyId, found.method, need, tag) as Promise<Authorization>,
  );
  if (authorization === null) {
    // Open mode with the counter down: check the key in D1 and let the request through unlimited.
    const result = evaluateKey(await loadKey(db(c.env.DB), { hash }), new Date());
    if (!result.ok) throw refusedKey(result.code);
    requireRights(result.principal, need);
    setPrincipal(result.principal);
    return null;
  }
  if (!authorization.ok) {
    if (authorization.code === "insufficient_scope" || authorization.code === "insufficient_role") throw refused(authorization.code);
    throw refusedKey(authorization.code);
  }
  const { principal } = authorization;
  setPrincipal(principal);
  return admit({ ...authorization.admission, name, policy: principal.rateLimit });
}

/**
 * A handshake token is valid, bound to the origin the request comes from (when a browser minted it) and issued by an
 * agent that is still enabled: disabling an agent stops its tokens on their next request.
 */
async function checkToken(c: RequestContext, token: string): Promise<ChatClaims> {
  const result = await verifyToken(c.get("config").signingKeys, token, new Date());
  if (!result.ok) {
    if (result.code === "invalid_token") throw new ApiError("invalid_token", "The token is not valid.", { headers: invalidToken });
    // The widget must read this answer to renew its token: readable from the origin the token was minted for.
    if (result.origin !== undefined && result.origin === c.req.header("Origin")) c.set("corsOrigin", result.origin);
    throw new ApiError("token_expired", "The token has expired; call the handshake endpoint for a new one.", { headers: invalidToken });
  }
  const { claims } = result;
  if (claims.origin !== undefined && claims.origin !== (c.req.header("Origin") ?? null)) {
    throw new ApiError("invalid_token", "The token was issued for another origin.", { headers: invalidToken });
  }
  const agent = await findAgent(db(c.env.DB), claims.agt);
  if (!agent || agent.accountId !== claims.acc) throw new ApiError("invalid_token", "The token is not valid.", { headers: invalidToken });
  if (agent.disabled) throw new ApiError("agent_disabled", "The agent that issued this token is disabled.");
  // Removing an origin from the agent ends the tokens minted for it, as disabling the agent ends all of them.
  if (claims.origin !== undefined && !(JSON.parse(agent.allowedOrigins) as string[]).includes(claims.origin)) {
    throw new ApiError("invalid_token", "The token was issued for an origin the agent no longer allows.", { headers: invalidToken });
  }
  if (claims.origin !== undefined) c.set("corsOrigin", claims.origin);
  return claims;
}

async function lookUpKeyId(c: RequestContext, hash: string): Promise<string> {
  const id = await keyIdByHash(db(c.env.DB), hash);
  if (id === undefined) throw refusedKey("invalid_key");
  if (keyIds.size >= MAX_CACHED_KEY_IDS) keyIds.delete(keyIds.keys().next().value as string);
  keyIds.set(hash, id);
  return id;
}

function refusedKey(code: keyof typeof REFUSED): ApiError {
  return new ApiError(code, REFUSED[code], { headers: invalidToken });
}

/** A refused credential spends the client IP's failure budget; past it, the answer is 429 instead of 401. */
async function countFailure(c: RequestContext, err: unknown): Promise<never> {
  if (err instanceof ApiError && err.status === 401) {
    try {
      await spendPerAddress(c, "ip", c.get("config").ipPolicy);
    } catch (limited) {
      // Only the verdict matters here; an unavailable counter must not turn a 401 into a 503.
      if (limited instanceof ApiError && limited.code === "rate_limited") throw limited;
    }
  }
  throw err;
}
