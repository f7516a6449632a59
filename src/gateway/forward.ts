import { QUERY_PARAM } from "../guards/credentials";
import { carriesSecret } from "../guards/secret";
import { SESSION_COOKIE } from "../people/sessions";

/** Headers that describe one connection, not the message (RFC 9110 §7.6.1): never forwarded either way. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/**
 * A header a client must never be able to set on its way upstream: Keygate's identity headers are Keygate's alone,
 * whatever their spelling (`Keygate_Role` too: CGI-style servers read `_` and `-` as one).
 */
function isIdentityHeader(name: string): boolean {
  const n = canonicalName(name);
  return n.startsWith("keygate-") || n.startsWith("x-keygate-");
}

/** A header name as a CGI-style upstream reads it: case and `_` versus `-` make no difference there. */
function canonicalName(name: string): string {
  return name.toLowerCase().replaceAll("_", "-");
}

/**
 * Headers that make an upstream act on another method or path than the ones the route table judged (IIS, Symfony and
 * Zend route by X-Original-URL and X-Rewrite-URL): never forwarded.
 */
const OVERRIDES = ["x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url"];
/** The query parameter Rails, Laravel and Express's method-override take a method from (in any case): never forwarded. */
const METHOD_PARAM = "_method";

/**
 * Whether a query parameter is `_method` as an upstream reads it, in any case: PHP (under Laravel and Symfony) drops
 * leading blanks from a name, stores `.` and ` ` as `_` (`.method` is `_method`), and `_method[]` as an array of it.
 */
function isMethodParam(name: string): boolean {
  // PHP reads a name as a C string: up to its first NUL byte.
  const php = (name.split("\0")[0] as string).replace(/^ +/, "").replaceAll(/[ .]/g, "_").toLowerCase();
  return php === METHOD_PARAM || php.startsWith(`${METHOD_PARAM}[`);
}
const CREDENTIAL_HEADERS = ["authorization", "x-api-key"];

/** The headers of a message without its hop-by-hop ones (those listed and those its `Connection` names). */
function endToEnd(headers: Headers): Headers {
  const named = (headers.get("Connection") ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  const out = new Headers();
  for (const [name, value] of headers) if (!HOP_BY_HOP.has(name) && !named.includes(name)) out.append(name, value);
  return out;
}

/**
 * The upstream URL of a request: the upstream's origin and base path, then the request's (canonical) path and its
 * query without Keygate's credential, a method override or a parameter holding a secret of Keygate's (`tokens`: see
 * `carriesSecret`). Only the path is set on a copy of the base, so no path can name another host.
 */
export function upstreamUrl(base: URL, path: string, query: URLSearchParams, tokens: readonly string[]): URL {
  const url = new URL(base);
  url.pathname = base.pathname.replace(/\/$/, "") + path;
  for (const [name, value] of query) {
    if (name === QUERY_PARAM || isMethodParam(name) || carriesSecret(`${name}=${value}`, tokens)) continue;
    url.searchParams.append(name, value);
  }
  return url;
}

/**
 * The request's headers as the upstream gets them: no hop-by-hop headers, no Host, no identity header the client
 * wrote, no method or path override, no Authorization or X-API-Key unless `authorization` says the route passes them
 * on, and no header or cookie holding a secret of Keygate's (see `carriesSecret`). Then `identity`, Keygate's own.
 */
export function upstreamHeaders(
  incoming: Headers,
  { authorization, tokens }: { authorization: boolean; tokens: readonly string[] },
  identity: Record<string, string>,
): Headers {
  const headers = endToEnd(incoming);
  headers.delete("Host");
  for (const name of [...headers.keys()]) {
    const n = canonicalName(name);
    if (n === "cookie") continue;
    if (
      isIdentityHeader(name) ||
      OVERRIDES.includes(n) ||
      (CREDENTIAL_HEADERS.includes(n) && !authorization) ||
      carriesSecret(`${name}: ${headers.get(name) ?? ""}`, tokens)
    )
      headers.delete(name);
  }
  const cookies = withoutKeygateCookies(headers.get("Cookie"), tokens);
  if (cookies === null) headers.delete("Cookie");
  else headers.set("Cookie", cookies);
  for (const [name, value] of Object.entries(identity)) headers.set(name, value);
  return headers;
}

/**
 * A `Cookie` header without the dashboard's session cookie and any cookie holding a secret of Keygate's (null when
 * nothing else is left): browsers send the session cookie to every path of the host, gateway routes included, and it
 * is a person's full access to Keygate, no upstream's business. Every other cookie goes on as the client sent it.
 * Pairs are separated by `;`, and by `,` where repeated headers were joined (a cookie's value holds neither, RFC 6265).
 */
function withoutKeygateCookies(header: string | null, tokens: readonly string[]): string | null {
  const dropped = (pair: string) => pair.split("=", 1)[0]?.trim() === SESSION_COOKIE || carriesSecret(pair, tokens);
  if (header === null || !header.split(/[;,]/).some(dropped)) return header;
  const kept = header.split(";").flatMap((piece) => {
    const pairs = piece.split(",");
    // A piece without a dropped cookie goes on untouched, a non-standard comma in a value included.
    if (!pairs.some(dropped)) return [piece.trim()];
    const rest = pairs.filter((pair) => !dropped(pair)).map((pair) => pair.trim());
    return rest.length === 0 ? [] : [rest.join(", ")];
  });
  const out = kept.filter((piece) => piece !== "").join("; ");
  return out === "" ? null : out;
}

/** The session cookie's name without its prefix, in lower case: how a browser may be made to store a look-alike. */
const SESSION_NAME = SESSION_COOKIE.toLowerCase().replace(/^__host-/, "");

/**
 * Whether an upstream's `Set-Cookie` would give the browser a cookie it sends back under the name of Keygate's session
 * cookie (any case, with a `__Host-` or `__Secure-` prefix or none, blanks around it, or nameless: `=name=value` goes
 * back as `name=value`). Where the upstream shares the dashboard's host, such a cookie would sign the browser in as a
 * session of the upstream's choosing.
 */
function setsKeygateCookie(setCookie: string): boolean {
  const pair = setCookie.split(";", 1)[0] ?? "";
  const eq = pair.indexOf("=");
  const sent = eq === -1 || pair.slice(0, eq).trim() === "" ? pair.slice(eq + 1) : pair;
  const name = (sent.split("=", 1)[0] ?? "").trim().toLowerCase();
  return name.replace(/^__(host|secure)-/, "") === SESSION_NAME;
}

/** The upstream's answer headers as the client gets them: end-to-end ones only, and no cookie of Keygate's. */
function answerHeaders(incoming: Headers): Headers {
  const headers = endToEnd(incoming);
  const cookies = headers.getSetCookie();
  headers.delete("Set-Cookie");
  for (const cookie of cookies) if (!setsKeygateCookie(cookie)) headers.append("Set-Cookie", cookie);
  return headers;
}

export type Outcome = { ok: true; response: Response } | { ok: false; reason: "unavailable" | "timeout" };

/**
 * Sends the request upstream with its body streaming as it arrives, and answers as soon as the upstream's headers do
 * (its body streams back the same way). `timeoutMs` bounds the wait for those headers only. Redirects are the
 * client's to follow.
 */
export async function send(url: URL, method: string, headers: Headers, body: ReadableStream | null, timeoutMs: number): Promise<Outcome> {
  const abort = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
  }, timeoutMs);
  try {
    const res = await fetch(url, {
      method,
      headers,
      body: method === "GET" || method === "HEAD" ? null : body,
      redirect: "manual",
      signal: abort.signal,
    });
    return {
      ok: true,
      response: new Response(res.body, { status: res.status, statusText: res.statusText, headers: answerHeaders(res.headers) }),
    };
  } catch {
    return { ok: false, reason: timedOut ? "timeout" : "unavailable" };
  } finally {
    clearTimeout(timer);
  }
}
