import type { Context, MiddlewareHandler, Next } from "hono";
import type { ContentfulStatusCode, StatusCode } from "hono/utils/http-status";
import { grantOf, parseGrant } from "../core/grants";
import { type Need, NO_ACCOUNT } from "../core/principal";
import { canonicalPath, type GatewayRoute } from "../core/route-table";
import { timedOut } from "../counters/leased-call";
import { creditsRemaining } from "../counters/limiter";
import { settleReservation } from "../credits/settle";
import { type Admitted, authenticateRequest, type Identified, idempotencyKeyOf } from "../guards/authenticate";
import type { AppEnv } from "../guards/context";
import { cors } from "../guards/cors";
import { problem } from "../guards/problem";
import { carriesSecret } from "../guards/secret";
import { localOrigin, misconfigured, serviceTokens } from "../platform/config";
import { deadline } from "../platform/deadline";
import type { Deps } from "../platform/deps";
import { ApiError, apiErrorOf } from "../platform/errors";
import { log, safeError } from "../platform/log";
import { claim, ownerOf, release } from "../resources/owners";
import { type Identity, signAssertion } from "./assertion";
import { send, upstreamHeaders, upstreamUrl } from "./forward";

/**
 * The gateway, in front of an app whose own paths are `ownPaths()` (read on the first request, once every route is
 * mounted): those, in any case (an upstream may route without regard to case), and every path under one, are never
 * forwarded, whatever the route table says.
 */
export function gateway(ownPaths: () => readonly string[]): MiddlewareHandler<AppEnv> {
  let own: readonly string[] | undefined;
  const isOwn = (path: string) => {
    own ??= ownPaths().map((o) => o.toLowerCase());
    const p = path.toLowerCase();
    return own.some((o) => p === o || p.startsWith(`${o}/`));
  };
  return (c, next) => pass(c, next, isOwn);
}

/**
 * The gateway: a request outside Keygate's own paths that a GATEWAY_ROUTES route takes is authenticated and limited as
 * that route says, then forwarded to UPSTREAM_URL. Anything else goes on to Keygate's routes (the built-in chat among
 * them), and from there to 404: without UPSTREAM_URL nothing is forwarded, and nothing on DASHBOARD_HOST.
 */
async function pass(c: Context<AppEnv>, next: Next, isOwn: (path: string) => boolean) {
  const url = new URL(c.req.url);
  // A path with a spelling an upstream could read two ways is never forwarded (Keygate's own routes then 404 it).
  const path = canonicalPath(url.pathname);
  if (path === null || isOwn(path)) return next();
  const config = c.get("config");
  const base = config.upstreamUrl;
  const match = base ? config.gatewayRoutes.match(c.req.method, path) : null;
  // The dashboard's own host serves no upstream: its pages would share the dashboard's origin.
  if (!base || !match || (config.dashboardHost !== undefined && url.host === config.dashboardHost)) return next();
  const tokens = serviceTokens(c.env);
  if (carriesSecret(path, tokens)) throw new ApiError("not_found", "Keygate forwards no path that holds one of its secrets.");
  const { route, params } = match;
  if (route.auth === "public") {
    const sent = await forward(c, { base, path, tokens, route }, null);
    if ("error" in sent) throw sent.error;
    c.res = sent.res;
    return;
  }
  if (config.assertionKeys.length === 0) misconfigured("ASSERTION_SIGNING_KEYS", "is not set; the gateway cannot vouch for its requests");
  const issuer = config.publicOrigin ?? localOrigin(c.env, url);
  if (issuer === null) misconfigured("PUBLIC_ORIGIN", "is not set; the gateway cannot name itself in its assertions");
  const target = { base, path, tokens, route };
  const reserve = typeof route.credits === "object" ? route.credits.reserve : undefined;
  const idempotencyKey = idempotencyKeyOf(c);
  // The first request may take as long as its upstream, and the counter calls around it.
  // A retry is the same request: method, path and query, and what its route charges.
  const fingerprint = JSON.stringify([c.req.method, path, url.search, route.cost, route.limits ?? null, route.credits]);
  const idempotency =
    idempotencyKey === undefined
      ? undefined
      : { key: idempotencyKey, pendingMs: config.upstreamTimeoutMs + 2 * config.rateLimitTimeoutMs, fingerprint };
  const authenticated = async () => {
    const admission = await authenticateRequest(c, {
      tokens: takesTokens(route),
      need: need(c, route, params),
      cost: route.cost,
      costs: route.limits,
      credits: reserve ?? (route.credits as number),
      reserve: reserve === undefined ? undefined : { until: Date.now() + config.creditsSettleTimeoutS * 1000 },
      refundOn: route.refundOn && ((status) => (route.refundOn as number[]).includes(status)),
      idempotency,
    });
    const left = creditsRemaining(admission.spent);
    const added: Record<string, string> = left === null ? {} : { "Keygate-Credits-Remaining": String(left) };
    // The key this request was charged under, as Keygate read it (quotes removed), set after the hop-by-hop headers
    // are gone: a retry let through free reaches the upstream under the same key even when the client quoted it
    // differently or named it in `Connection`, so the upstream can tell it from a new request.
    if (idempotencyKey !== undefined) added["Idempotency-Key"] = idempotencyKey;
    let sent: Sent;
    try {
      sent = await forward(c, target, { identity: identityOf(admission.identity), issuer, added });
    } catch (err) {
      if (!(err instanceof ApiError)) {
        await admission.settle(500);
        throw err;
      }
      sent = { error: err, forwarded: false };
    }
    c.res = "error" in sent ? problem(c, sent.error) : sent.res;
    const used = "res" in sent ? creditsUsed(c, sent.res) : undefined;
    const headers = await admission.settle(c.res.status, sent);
    if (reserve !== undefined && used !== undefined) {
      const principal = "principal" in admission.identity ? admission.identity.principal : undefined;
      await settleReservation(c.get("deps"), principal, admission.spent, used, reserve);
    }
    if (idempotency) await finishIdempotent(c.get("deps"), admission, idempotency.key);
    for (const [name, value] of Object.entries(headers)) c.res.headers.set(name, value);
  };
  // Routes that take handshake tokens serve browsers: their preflights and answers speak CORS, as the chat does, a
  // refusal included (the widget reads a 401 `token_expired` to renew its token, a 429 to wait), so it is answered
  // inside, where the CORS headers are added.
  if (route.auth !== "key-or-token") {
    await authenticated();
    return c.res;
  }
  const early = await cors(c, async () => {
    try {
      await authenticated();
    } catch (err) {
      const known = apiErrorOf(err);
      if (!known) throw err;
      c.res = problem(c, known);
    }
  });
  return early ?? c.res;
}

/** Tokens carry no grants: they pass only routes that take them and ask for no resource and no full access. */
function takesTokens(route: GatewayRoute): boolean {
  return route.auth === "key-or-token" && route.resource === undefined && route.access === undefined;
}

/**
 * What the route asks of a key: full access (`access: "full"`, or no `resource`), else a grant of the named resource;
 * and that the URL is the caller's account's: the account it names (`account`), else the registered owner of the
 * resource it names, so another account's resource id never matches, whatever the key's rights.
 */
function need(c: Context<AppEnv>, route: GatewayRoute, params: Record<string, string>): Need | (() => Promise<Need>) {
  const resourceId = route.resource === undefined ? undefined : params[route.resource.param];
  // The route table names only parameters its pattern has, so a resource route always has its id.
  const resource = route.access === "full" || route.resource === undefined ? undefined : grantOf(route.resource.type, resourceId ?? "");
  if (route.account !== undefined) return { account: params[route.account], resource };
  if (route.resource === undefined || resourceId === undefined) return { resource };
  const { type } = route.resource;
  return async () => ({ account: (await ownerOf(c.get("deps").env.DB, type, resourceId)) ?? NO_ACCOUNT, resource });
}

function identityOf(id: Identified): Identity {
  if ("claims" in id) return { accountId: id.claims.acc, userId: id.claims.sub, method: "token", agentId: id.claims.agt };
  const p = id.principal;
  const by = p.keyId === null ? { method: "session" as const } : { method: "key" as const, keyId: p.keyId, external: p.external };
  return { accountId: p.accountId, userId: p.userId, ...by, role: p.role, scopes: p.scopes };
}

/** The identity headers the upstream gets, the assertion that proves them (issued by `issuer`) among them. */
async function identityHeaders(c: Context<AppEnv>, { identity, issuer }: Vouched, url: URL): Promise<Record<string, string>> {
  const config = c.get("config");
  const headers: Record<string, string> = {
    "Keygate-Account-Id": identity.accountId,
    "Keygate-User-Id": identity.userId,
    "Keygate-Auth-Method": identity.method,
  };
  if (identity.keyId !== undefined) headers["Keygate-Key-Id"] = identity.keyId;
  if (identity.role !== undefined) headers["Keygate-Role"] = identity.role;
  if (identity.scopes !== undefined) headers["Keygate-Scopes"] = identity.scopes.join(",");
  if (identity.agentId !== undefined) headers["Keygate-Agent-Id"] = identity.agentId;
  const { account, key } = identity.external ?? {};
  if (account?.externalId) headers["Keygate-External-Id"] = account.externalId;
  if (key?.externalId) headers["Keygate-Key-External-Id"] = key.externalId;
  const assertion = await signAssertion(config.assertionKeys, identity, {
    issuer,
    audience: url.origin,
    method: c.req.method,
    url,
    id: c.get("requestId"),
  });
  if (assertion) headers["Keygate-Assertion"] = assertion;
  return headers;
}

/**
 * Who the gateway vouches for, as which Keygate (the assertion's `iss`), and the headers it adds beside: the credits
 * left (`Keygate-Credits-Remaining`), the `Idempotency-Key` the request was charged under.
 */
type Vouched = { identity: Identity; issuer: string; added: Record<string, string> };
/** Where a request goes: the upstream's base URL, the canonical path, the route that took it, and the tokens it must not carry. */
type Target = { base: URL; path: string; route: GatewayRoute; tokens: readonly string[] };

/**
 * The upstream's answer, or why there is none; `forwarded` once the upstream got the request (it may have done the
 * work, answer or not).
 */
type Sent = { res: Response; forwarded: true } | { error: ApiError; forwarded: boolean };

/** Sends the request upstream as `vouched` (null: a public route) and answers what the upstream answers. */
async function forward(c: Context<AppEnv>, { base, path, route, tokens }: Target, vouched: Vouched | null): Promise<Sent> {
  const config = c.get("config");
  const identity = vouched?.identity ?? null;
  const url = upstreamUrl(base, path, new URL(c.req.url).searchParams, tokens);
  const own: Record<string, string> = vouched
    ? { ...(await identityHeaders(c, vouched, url)), ...vouched.added }
    : { "Keygate-Auth-Method": "none" };
  const headers = upstreamHeaders(
    c.req.raw.headers,
    { authorization: route.forwardAuthorization, tokens },
    { ...own, "Keygate-Request-Id": c.get("requestId") },
  );
  const outcome = await send(url, c.req.method, headers, c.req.raw.body, config.upstreamTimeoutMs);
  if (!outcome.ok) {
    // Timed out, the upstream got the request and may have done the work: it spends, as an answered request does.
    const forwarded = outcome.reason === "timeout";
    const error = forwarded
      ? new ApiError("upstream_timeout", `The upstream did not answer within ${config.upstreamTimeoutMs} ms.`)
      : new ApiError("upstream_unavailable", "The upstream could not be reached.");
    return { error, forwarded };
  }
  if (identity) await recordOwnership(c, identity, outcome.response);
  else for (const name of [...OWNERSHIP_HEADERS, CREDITS_USED]) outcome.response.headers.delete(name);
  // Through the context, so the headers Keygate set on the way (`X-RateLimit-Status`, a deprecation) come along.
  const answer = outcome.response;
  const res =
    answer.body === null
      ? c.body(null, { status: answer.status as StatusCode, headers: answer.headers })
      : c.body(answer.body, { status: answer.status as ContentfulStatusCode, headers: answer.headers });
  return { res, forwarded: true };
}

/**
 * Tells the key's object how the first request with this `Idempotency-Key` ended: charged (its retries within 24
 * hours are not), or given back (a retry is charged). A key's only; a retry (`replayed`) changes nothing. A failure is
 * logged: the key counts the request as charged once its time in flight is up.
 */
async function finishIdempotent(deps: Deps, admission: Admitted, key: string): Promise<void> {
  const [first] = admission.spent;
  if (!first?.name.startsWith("key:") || first.replayed) return;
  const stub = deps.env.KEYS.getByName(first.name);
  try {
    await deadline(stub.idempotent(key, admission.refunded ? "refunded" : "kept"), deps.config.rateLimitTimeoutMs, timedOut);
  } catch (err) {
    deps.log("warn", "idempotency_not_recorded", { requestId: deps.requestId, error: safeError(err) });
  }
}

const CREDITS_USED = "Keygate-Credits-Used";

/**
 * What the upstream says the request cost (`Keygate-Credits-Used: 37`), a header for Keygate that never reaches the
 * client; undefined when it says nothing, or nothing Keygate can read (logged: the reservation then settles later).
 */
function creditsUsed(c: Context<AppEnv>, res: Response): number | undefined {
  const said = res.headers.get(CREDITS_USED);
  res.headers.delete(CREDITS_USED);
  if (said === null) return undefined;
  if (/^\d{1,9}$/.test(said.trim())) return Number(said.trim());
  log("warn", "credits_used_invalid", { requestId: c.get("requestId") });
  return undefined;
}

const CREATED = "Keygate-Resource-Created";
const DELETED = "Keygate-Resource-Deleted";
const OWNERSHIP_HEADERS = [CREATED, DELETED];

/**
 * The upstream says which resources a request created or deleted (`Keygate-Resource-Created: mailbox:mbx_9`, a list):
 * on a 2xx answer they become, or stop being, the caller's account's. The headers are for Keygate and never reach the
 * client. The upstream did the work whatever happens here, so a failure to record is logged, not answered.
 */
async function recordOwnership(c: Context<AppEnv>, identity: Identity, response: Response): Promise<void> {
  const listed = (name: string) =>
    (response.headers.get(name) ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  const changes = [
    ...listed(CREATED).map((grant) => ({ grant, created: true })),
    ...listed(DELETED).map((grant) => ({ grant, created: false })),
  ];
  for (const name of OWNERSHIP_HEADERS) response.headers.delete(name);
  if (response.status < 200 || response.status > 299) return;
  const { accountId } = identity;
  for (const { grant, created } of changes) {
    const parsed = parseGrant(grant);
    if (!parsed) {
      // Not a grant: whatever the upstream wrote there stays out of the logs.
      log("warn", "resource_header_invalid", { requestId: c.get("requestId"), accountId });
      continue;
    }
    const fields = { requestId: c.get("requestId"), resource: grant, accountId };
    try {
      if (!created) await release(c.get("deps").env.DB, parsed.type, parsed.id, accountId);
      else if ((await claim(c.get("deps").env.DB, parsed.type, parsed.id, accountId)) !== accountId)
        log("warn", "resource_owned_elsewhere", fields);
    } catch (err) {
      log("error", "resource_ownership_not_recorded", { ...fields, error: safeError(err) });
    }
  }
}
