import { eq } from "drizzle-orm";
import type { Next } from "hono";
import { createMiddleware } from "hono/factory";
import { decodeProtectedHeader } from "jose";
import { findAgent } from "../agents/store";
import type { AuthMethod, Need, Principal } from "../core/principal";
import { IdempotencyKey } from "../core/schemas";
import { named } from "../core/window";
import { admit, type Charge, rateLimitHeaders, refund, type Spent, spendPool } from "../counters/limiter";
import type { Idempotency } from "../counters/protocol";
import { authorizePerson } from "../people/authorize";
import { ENDED } from "../people/sessions";
import { accounts } from "../platform/db/schema";
import { ApiError, invalidRequest, refused } from "../platform/errors";
import { ACCESS_TYPE, verifyAccessToken } from "../tokens/access";
import { type ChatClaims, looksLikeToken, verifyToken } from "../tokens/handshake";
import type { KeyEnv, MaybeKeyEnv, RequestContext } from "./context";
import { deprecationHeaders, extractCredential, invalidToken } from "./credentials";
import { authorize, spendFailure, spendOn } from "./spending";

/**
 * What a route takes: handshake tokens too or keys only, what it needs of a key (or how to find out, asked only once
 * the credential proved to be a key or session that exists: a gateway route asks D1 who owns the resource in its
 * URL), and what a request spends.
 */
type Options = { tokens: boolean; need: Need | (() => Promise<Need>) } & Partial<Charge> & {
    refundOn?: (status: number) => boolean;
    /** The request's `Idempotency-Key`: a key's request is charged once per key and idempotency key. */
    idempotency?: Idempotency;
  };

/**
 * The request's `Idempotency-Key` (its structured-field quotes removed), or undefined when it sends none; one that is
 * not 1-255 visible ASCII characters is 400.
 */
export function idempotencyKeyOf(c: RequestContext): string | undefined {
  const sent = c.req.header("Idempotency-Key");
  if (sent === undefined) return undefined;
  const key = /^"(.*)"$/.exec(sent.trim())?.[1] ?? sent.trim();
  const parsed = IdempotencyKey.safeParse(key);
  if (!parsed.success) throw invalidRequest([{ field: "Idempotency-Key", message: "must be 1-255 visible ASCII characters" }]);
  return parsed.data;
}

/** The `Idempotency-Key` was charged for another request (another method, path, query or charge) within 24 hours. */
export const REUSED = () =>
  new ApiError("idempotency_key_reused", "This Idempotency-Key was used for another request within the last 24 hours.");

/** The first request with this `Idempotency-Key` is still being answered: its retry is refused, not queued. */
export const IN_FLIGHT = () =>
  new ApiError("idempotency_in_flight", "A request with this Idempotency-Key is still being answered; retry once it is.", {
    headers: { "Retry-After": "1" },
  });
/** Who the request proved to be: a key's or a person's principal, or a handshake token's claims. */
export type Identified = { principal: Principal } | { claims: ChatClaims };

/**
 * A credential's verdict: who it proved to be and what it spent, in each object that counted it (none: unlimited), or
 * why it is refused.
 */
type Verified = { ok: true; identity: Identified; spent: Spent[] } | { ok: false; refusal: ApiError; free?: boolean };

/** An authenticated request, to settle once it has its answer. */
export type Admitted = {
  identity: Identified;
  /**
   * Settles the spend by the answer's status and answers the rate-limit and credits headers it carries. Refused
   * (401/403) or not served (5xx) by Keygate, the request spends nothing; a `forwarded` request was served, so its
   * limits stay spent, but its credits come back when the upstream failed (a 5xx, or no answer in time: `refundOn`).
   */
  settle(status: number, how?: { forwarded?: boolean }): Promise<Record<string, string>>;
  /** What the request spent, in each object that counted it. */
  spent: readonly Spent[];
  /** Once settled: whether what it spent was given back, its credits or all of it (an `Idempotency-Key` retry then pays). */
  refunded: boolean;
};

/** By default an upstream's 5xx (and the gateway's 504 for an upstream that did not answer) gives the credits back. */
const upstreamFailed = (status: number) => status >= 500;

/**
 * Authenticates the request, checks what the route needs of the credential, and spends `cost` of each of its limits
 * (or, where the route names limits, `costs` of those; a handshake token's single limit is spent at `cost`): an
 * API key, a person's access token, or where `tokens` is true a handshake token (limited per agent user; a valid one
 * anywhere else is 403). A refused credential spends the client address's failure budget (`refuse`).
 */
export async function authenticateRequest(c: RequestContext, options: Options): Promise<Admitted> {
  const verified = await verify(c, options);
  if (!verified.ok) throw verified.free ? verified.refusal : await refuse(c, verified.refusal);
  const { identity, spent } = verified;
  for (const s of spent) admit(s);
  const refundOn = options.refundOn ?? upstreamFailed;
  let settled = false;
  let refunded = false;
  return {
    identity,
    spent,
    get refunded() {
      return refunded;
    },
    async settle(status, { forwarded = false } = {}) {
      if (spent.length === 0) return {};
      const deps = c.get("deps");
      const all = !forwarded && (status === 401 || status === 403 || status >= 500);
      const credits = forwarded && refundOn(status);
      if (!settled && (all || credits)) {
        refunded = true;
        for (const s of spent) await refund(deps, s, undefined, { creditsOnly: !all });
      }
      settled = true;
      return rateLimitHeaders(spent);
    },
  };
}

/** API keys and access tokens only (the management API), with what the route needs; the handler gets the `principal`. */
export const authenticate = (need: Need) => createMiddleware<KeyEnv>((c, next) => guarded(c, next, { tokens: false, need }));
/**
 * The handshake: a backend sends a full-access key (then `principal` is set), a browser sends nothing secret and goes
 * on unauthenticated.
 */
export const authenticateIfSent = (need: Need) =>
  createMiddleware<MaybeKeyEnv>(async (c, next) => {
    if (c.req.header("Authorization") === undefined && c.req.header("X-API-Key") === undefined) return next();
    return guarded(c, next, { tokens: false, need });
  });
/** API keys, access tokens or handshake tokens: the chat endpoints. `principal` is set unless it was a handshake token. */
export const authenticateChat = createMiddleware<MaybeKeyEnv>((c, next) => guarded(c, next, { tokens: true, need: "any" }));

/** A route of Keygate's own behind the guard: its answer settles the spend. */
async function guarded(c: RequestContext & { set(key: "principal", value: Principal): void }, next: Next, options: Options) {
  const admission = await authenticateRequest(c, options);
  if ("principal" in admission.identity) c.set("principal", admission.identity.principal);
  try {
    await next();
  } catch (err) {
    // Whatever failed after admission was not served.
    await admission.settle(500);
    throw err;
  }
  for (const [name, value] of Object.entries(await admission.settle(c.res.status))) c.res.headers.set(name, value);
}

/**
 * A refused credential spends the client address's failure budget: past it, the answer is 429 instead of 401. Only
 * the verdict matters here: an unavailable counter never turns a 401 into a 503.
 */
async function refuse(c: RequestContext, refusal: ApiError): Promise<ApiError> {
  if (refusal.status !== 401) return refusal;
  try {
    const spent = await spendFailure(c);
    if (spent) admit(spent);
  } catch (limited) {
    if (limited instanceof ApiError && limited.code === "rate_limited") return limited;
  }
  return refusal;
}

/** Which kind of credential the request carries, and that kind's verdict on it. */
async function verify(c: RequestContext, options: Options): Promise<Verified> {
  const config = c.get("config");
  const found = extractCredential(c.req.raw, new URL(c.req.url), config, new Date());
  if (!found.ok) return found;
  // Set now, so that every answer to a query-parameter request says it is deprecated, refusals included.
  if (found.method === "query") for (const [name, value] of Object.entries(deprecationHeaders(config))) c.header(name, value);
  const { credential, method } = found;
  if (looksLikeToken(credential)) {
    return isAccessToken(credential) ? verifyPerson(c, credential, options) : verifyHandshakeToken(c, credential, options);
  }
  return verifyKey(c, credential, method, options);
}

const KEY_REFUSED = {
  invalid_key: "The API key is not valid.",
  key_revoked: "The API key has been revoked.",
  key_expired: "The API key has expired.",
  key_owner_disabled: "The user who owns this API key is disabled.",
} as const;

/**
 * An API key: its object (or this isolate's lease of it) decides 401 and 403 before it spends. A credential that
 * cannot be a key, or a checksummed key with a wrong checksum, is refused before any read (authorizeKey).
 */
async function verifyKey(
  c: RequestContext,
  key: string,
  method: AuthMethod,
  { need, cost = 1, costs, credits, reserve, idempotency }: Options,
): Promise<Verified> {
  const verdict = await authorize(c, { key, method, need, cost, costs, credits, reserve, idempotency });
  if (verdict.ok) return { ok: true, identity: { principal: verdict.principal }, spent: verdict.spent };
  if ("unread" in verdict && verdict.unread === "malformed") {
    const detail = "The credential is not an API key: keys look like `<prefix>_` followed by 64 hex characters, or are checksummed keys.";
    return { ok: false, refusal: new ApiError("malformed_credentials", detail, { headers: invalidToken }) };
  }
  if ("unread" in verdict) {
    // Anyone can compute a checksum, so this answer tells nothing about the keys that exist: it costs no failure of
    // the address's budget, and so no call at all.
    const refusal = new ApiError("invalid_key", "The API key is not valid: its checksum does not match (a mistyped or truncated key).", {
      headers: invalidToken,
    });
    return { ok: false, refusal, free: true };
  }
  if ("refusal" in verdict) return { ok: false, refusal: refused(verdict.refusal) };
  if (verdict.code === "idempotency_in_flight") return { ok: false, refusal: IN_FLIGHT() };
  if (verdict.code === "idempotency_key_reused") return { ok: false, refusal: REUSED() };
  return { ok: false, refusal: new ApiError(verdict.code, KEY_REFUSED[verdict.code], { headers: invalidToken }) };
}

function isAccessToken(token: string): boolean {
  try {
    return decodeProtectedHeader(token).typ === ACCESS_TYPE;
  } catch {
    return false;
  }
}

/**
 * A person's access token: valid (its signature, here), then its session live and the person's rights (as they are
 * now) enough for `need`, judged by the person's object or this isolate's lease of it (people/authorize.ts), which
 * spends `cost` of the person's own limit (one per user, whichever way they come) only when both pass.
 */
async function verifyPerson(c: RequestContext, token: string, { need, cost = 1, costs, credits, reserve }: Options): Promise<Verified> {
  const result = await verifyAccessToken(c.get("config").signingKeys, token, new Date());
  if (!result.ok) {
    const detail =
      result.code === "token_expired" ? "The access token has expired; refresh it or log in again." : "The token is not valid.";
    return { ok: false, refusal: new ApiError(result.code, detail, { headers: invalidToken }) };
  }
  const { sub, sid, acc } = result.claims;
  const verdict = await authorizePerson(c.get("deps"), {
    userId: sub,
    sessionId: sid,
    accountId: acc,
    need: typeof need === "function" ? await need() : need,
    cost,
    costs,
    credits,
    reserve,
  });
  if (!verdict.ok) return { ok: false, refusal: "code" in verdict ? ENDED() : refused(verdict.refusal) };
  if (verdict.unlimited) c.header("X-RateLimit-Status", "unavailable");
  return { ok: true, identity: { principal: verdict.principal }, spent: verdict.spent };
}

/**
 * A handshake token is valid, bound to the origin the request comes from (when a browser minted it) and issued by an
 * agent that is still enabled: disabling an agent stops its tokens on their next request. It works only where the
 * route takes tokens, and spends from its agent user's budget.
 */
async function verifyHandshakeToken(
  c: RequestContext,
  token: string,
  { tokens, need, cost = 1, credits = 0, reserve }: Options,
): Promise<Verified> {
  const invalid = (detail: string): Verified => ({ ok: false, refusal: new ApiError("invalid_token", detail, { headers: invalidToken }) });
  const result = await verifyToken(c.get("config").signingKeys, token, new Date());
  if (!result.ok) {
    if (result.code === "invalid_token") return invalid("The token is not valid.");
    // The widget must read this answer to renew its token: readable from the origin the token was minted for.
    if (result.origin !== undefined && result.origin === c.req.header("Origin")) c.set("corsOrigin", result.origin);
    const detail = "The token has expired; call the handshake endpoint for a new one.";
    return { ok: false, refusal: new ApiError("token_expired", detail, { headers: invalidToken }) };
  }
  const { claims } = result;
  if (claims.origin !== undefined && claims.origin !== (c.req.header("Origin") ?? null))
    return invalid("The token was issued for another origin.");
  const agent = await findAgent(c.get("deps").db, claims.agt);
  if (!agent || agent.accountId !== claims.acc) return invalid("The token is not valid.");
  if (agent.disabled) return { ok: false, refusal: new ApiError("agent_disabled", "The agent that issued this token is disabled.") };
  // Removing an origin from the agent ends the tokens minted for it, as disabling the agent ends all of them.
  if (claims.origin !== undefined && !(JSON.parse(agent.allowedOrigins) as string[]).includes(claims.origin)) {
    return invalid("The token was issued for an origin the agent no longer allows.");
  }
  if (claims.origin !== undefined) c.set("corsOrigin", claims.origin);
  if (!tokens) {
    const detail = "Handshake tokens work only on chat routes; use an API key here.";
    return { ok: false, refusal: new ApiError("insufficient_scope", detail) };
  }
  // Routes that take tokens name no resource, so their need is known without asking anyone.
  if (typeof need === "object" && need.account !== undefined && !(await isAccount(c, claims.acc, need.account)))
    return { ok: false, refusal: refused("other_account") };
  // Null: the chat limit's counter failed and the deployment lets requests through without it (open mode).
  const spent = await spendOn(c, `chat:${claims.agt}:${claims.sub}`, [named(c.get("config").chatPolicy)], cost);
  const chatSpent = spent ? [spent] : [];
  if (spent?.allowed === false || (credits === 0 && reserve === undefined)) return { ok: true, identity: { claims }, spent: chatSpent };
  // A route that costs credits spends them from the agent's account, with its shared limits: the widget's requests are
  // the account's as its keys' are, and are never let through unmetered. A token names no key, so only the account's
  // object is asked.
  const pool = await spendPool(c.get("deps"), { accountId: claims.acc }, { cost, credits, reserve });
  if (pool === null) return { ok: true, identity: { claims }, spent: chatSpent };
  if (spent && ("code" in pool || !pool.allowed)) await refund(c.get("deps"), spent);
  if ("code" in pool) return invalid("The token is not valid.");
  return { ok: true, identity: { claims }, spent: pool.allowed ? [...chatSpent, pool] : [pool] };
}

/** Whether `idOrSlug` names this account (a handshake token carries the id; a URL may carry the slug). */
async function isAccount(c: RequestContext, accountId: string, idOrSlug: string): Promise<boolean> {
  if (idOrSlug === accountId) return true;
  const [found] = await c.get("deps").db.select({ slug: accounts.slug }).from(accounts).where(eq(accounts.id, accountId)).limit(1);
  return found?.slug === idOrSlug;
}
