import { eq } from "drizzle-orm";
import type { Next } from "hono";
import { createMiddleware } from "hono/factory";
import { decodeProtectedHeader } from "jose";
import { findAgent } from "../agents/store";
import { parseKey } from "../core/ids";
import type { Need, Principal } from "../core/principal";
import { type Admission, admit, rateLimitHeaders, refund, spend, spendPerAddress } from "../counters/limiter";
import { authorizeKey } from "../keys/authorize";
import { accessTokenPrincipal } from "../people/sessions";
import { db } from "../platform/db/client";
import { accounts } from "../platform/db/schema";
import { ApiError, refused } from "../platform/errors";
import { ACCESS_TYPE, verifyAccessToken } from "../tokens/access";
import { type ChatClaims, looksLikeToken, verifyToken } from "../tokens/handshake";
import type { KeyEnv, MaybeKeyEnv, RequestContext } from "./context";
import { deprecationHeaders, extractCredential, invalidToken } from "./credentials";

const REFUSED = {
  invalid_key: "The API key is not valid.",
  key_revoked: "The API key has been revoked.",
  key_expired: "The API key has expired.",
  key_owner_disabled: "The user who owns this API key is disabled.",
} as const;

/**
 * Authenticates the request, checks what the route needs of the key, and spends `cost` requests of its rate limit: an
 * API key (reported through `onIdentity` with its principal) or, where `tokens` is true, a handshake token (limited
 * per agent user). A valid handshake token anywhere else is 403. The key's object (or this isolate's lease of it)
 * decides 401 and 403 before spending; a 401, 403 or 5xx Keygate answers later is refunded before the answer leaves
 * (what a forwarded request's upstream answers is not). Failed attempts count against the client IP's failures.
 */
export async function guard(c: RequestContext, next: Next, options: Options, onIdentity: (identity: Identified) => void) {
  const admission = await identify(c, options, onIdentity).catch((err: unknown) => countFailure(c, err));
  try {
    await next();
  } catch (err) {
    // Whatever failed after admission was not served: it spends nothing either.
    if (admission && !c.get("forwarded")) await refund(c, admission);
    throw err;
  }
  if (admission) {
    // Refused (401/403) or not served (5xx) by Keygate: the request spends nothing. What the upstream answers a
    // forwarded request is the upstream's business: that request was served.
    const status = c.res.status;
    if (!c.get("forwarded") && (status === 401 || status === 403 || status >= 500)) await refund(c, admission);
    for (const [name, value] of Object.entries(rateLimitHeaders(admission))) c.res.headers.set(name, value);
  }
}

/**
 * What a route takes: handshake tokens too or keys only, what it needs of a key (or how to find out, asked only once
 * the credential proved to be a key or session that exists: a gateway route asks D1 who owns the resource in its
 * URL), and what a request spends.
 */
type Options = { tokens: boolean; need: Need | (() => Promise<Need>); cost?: number };
/** Who the request proved to be: a key's principal, or a handshake token's claims. */
export type Identified = { principal: Principal } | { claims: ChatClaims };

/** API keys only (the management API), with what the route needs of them; the handler gets the key's `principal`. */
export const authenticate = (need: Need) =>
  createMiddleware<KeyEnv>((c, next) => guard(c, next, { tokens: false, need }, (id) => setPrincipal(c, id)));
/**
 * The handshake: a backend sends a full-access key (then `principal` is set), a browser sends nothing secret and goes
 * on unauthenticated.
 */
export const authenticateIfSent = (need: Need) =>
  createMiddleware<MaybeKeyEnv>(async (c, next) => {
    if (c.req.header("Authorization") === undefined && c.req.header("X-API-Key") === undefined) return next();
    return guard(c, next, { tokens: false, need }, (id) => setPrincipal(c, id));
  });
/** API keys or handshake tokens: the chat endpoints. `principal` is set when the credential was a key. */
export const authenticateChat = createMiddleware<MaybeKeyEnv>((c, next) =>
  guard(c, next, { tokens: true, need: "any" }, (id) => setPrincipal(c, id)),
);

function setPrincipal(c: { set(key: "principal", value: Principal): void }, identity: Identified): void {
  if ("principal" in identity) c.set("principal", identity.principal);
}

async function identify(
  c: RequestContext,
  { tokens, need, cost = 1 }: Options,
  onIdentity: (identity: Identified) => void,
): Promise<Admission | null> {
  const config = c.get("config");
  const found = extractCredential(c.req.raw, new URL(c.req.url), config, new Date());
  if (!found) {
    throw new ApiError("missing_credentials", "Send your API key in the `X-API-Key` header or as `Authorization: Bearer <key>`.");
  }
  // Set now, so that every answer to a query-parameter request says it is deprecated, refusals included.
  if (found.method === "query") for (const [name, value] of Object.entries(deprecationHeaders(config))) c.header(name, value);
  if (looksLikeToken(found.credential) && isAccessToken(found.credential)) {
    const principal = await checkAccessToken(c, found.credential, need);
    onIdentity({ principal: principal.principal });
    return principal.admission && admit(principal.admission);
  }
  if (looksLikeToken(found.credential)) {
    const claims = await checkToken(c, found.credential);
    if (!tokens) throw new ApiError("insufficient_scope", "Handshake tokens work only on chat routes; use an API key here.");
    // Routes that take tokens name no resource, so their need is known without asking anyone.
    if (typeof need === "object" && need.account !== undefined && !(await isAccount(c, claims.acc, need.account)))
      throw refused("other_account");
    onIdentity({ claims });
    return spend(c, `chat:${claims.agt}:${claims.sub}`, config.chatPolicy, cost);
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
  const verdict = await authorizeKey(c, found.credential, found.method, need, cost);
  if (!verdict.ok) throw "refusal" in verdict ? refused(verdict.refusal) : refusedKey(verdict.code);
  onIdentity({ principal: verdict.principal });
  return verdict.admission && admit(verdict.admission);
}

function isAccessToken(token: string): boolean {
  try {
    return decodeProtectedHeader(token).typ === ACCESS_TYPE;
  } catch {
    return false;
  }
}

/**
 * A person's access token: valid, its session live, and the user's rights (as they are now) enough for `need`; then
 * the user's own limit is spent.
 */
async function checkAccessToken(
  c: RequestContext,
  token: string,
  need: Options["need"],
): Promise<{ principal: Principal; admission: Admission | null }> {
  const result = await verifyAccessToken(c.get("config").signingKeys, token, new Date());
  if (!result.ok) {
    const detail =
      result.code === "token_expired" ? "The access token has expired; refresh it or log in again." : "The token is not valid.";
    throw new ApiError(result.code, detail, { headers: invalidToken });
  }
  const { principal, admission } = await accessTokenPrincipal(c, result.claims, typeof need === "function" ? await need() : need);
  return { principal, admission };
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

/** Whether `idOrSlug` names this account (a handshake token carries the id; a URL may carry the slug). */
async function isAccount(c: RequestContext, accountId: string, idOrSlug: string): Promise<boolean> {
  if (idOrSlug === accountId) return true;
  const [found] = await db(c.env.DB).select({ slug: accounts.slug }).from(accounts).where(eq(accounts.id, accountId)).limit(1);
  return found?.slug === idOrSlug;
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
