import { decodeProtectedHeader } from "jose";
import { QUERY_PARAM } from "../auth/credentials";
import { parseKey } from "../keys/format";
import { SESSION_COOKIE } from "../people/sessions";
import { TOKEN_TYPE } from "../tokens/handshake";

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
 * Headers that make an upstream act on another method than the one the route table judged: never forwarded on
 * authenticated routes, where the method decides what a key may do.
 */
const METHOD_OVERRIDES = ["x-http-method-override", "x-http-method", "x-method-override"];
const CREDENTIAL_HEADERS = ["authorization", "x-api-key"];

/**
 * Whether any part of a header value is Keygate's key or token: split at every character neither can hold, so quotes,
 * `;` or a repeated header's `, ` around it change nothing.
 */
function carriesCredential(value: string): boolean {
  return value.split(/[^A-Za-z0-9_.-]+/).some((part) => parseKey(part) !== null || isHandshakeToken(part));
}

function isHandshakeToken(part: string): boolean {
  try {
    return decodeProtectedHeader(part).typ === TOKEN_TYPE;
  } catch {
    return false;
  }
}

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
 * query without Keygate's credential. Only the path is set on a copy of the base, so no path can name another host.
 */
export function upstreamUrl(base: URL, path: string, query: URLSearchParams): URL {
  const url = new URL(base);
  url.pathname = base.pathname.replace(/\/$/, "") + path;
  for (const [name, value] of query) if (name !== QUERY_PARAM) url.searchParams.append(name, value);
  return url;
}

/**
 * The request's headers as the upstream gets them: no hop-by-hop headers, no Host, no identity header the client
 * wrote, and no Keygate credential (`authenticated`: the request's Authorization and X-API-Key carried it; else those
 * headers go on only when they hold something that is not a Keygate key or token). Then `identity`, Keygate's own.
 */
export function upstreamHeaders(incoming: Headers, authenticated: boolean, identity: Record<string, string>): Headers {
  const headers = endToEnd(incoming);
  headers.delete("Host");
  for (const name of [...headers.keys()]) {
    const n = canonicalName(name);
    const value = headers.get(name) ?? "";
    if (
      isIdentityHeader(name) ||
      (CREDENTIAL_HEADERS.includes(n) && (authenticated || carriesCredential(value))) ||
      (authenticated && METHOD_OVERRIDES.includes(n))
    )
      headers.delete(name);
  }
  const cookies = withoutSessionCookie(headers.get("Cookie"));
  if (cookies === null) headers.delete("Cookie");
  else headers.set("Cookie", cookies);
  for (const [name, value] of Object.entries(identity)) headers.set(name, value);
  return headers;
}

/**
 * A `Cookie` header without the dashboard's session cookie (null when nothing else is left): browsers send it to every
 * path of the host, gateway routes included, and it is a person's full access to Keygate, no upstream's business. Every other cookie goes on as the client sent it. Pairs are separated by
 * `;`, and by `,` where repeated headers were joined (a cookie's value holds neither, RFC 6265).
 */
function withoutSessionCookie(header: string | null): string | null {
  if (header === null || !header.includes(SESSION_COOKIE)) return header;
  const isSession = (pair: string) => pair.split("=", 1)[0]?.trim() === SESSION_COOKIE;
  const kept = header.split(";").flatMap((piece) => {
    const pairs = piece.split(",");
    // A piece without the session cookie goes on untouched, a non-standard comma in a value included.
    if (!pairs.some(isSession)) return [piece.trim()];
    const rest = pairs.filter((pair) => !isSession(pair)).map((pair) => pair.trim());
    return rest.length === 0 ? [] : [rest.join(", ")];
  });
  const out = kept.filter((piece) => piece !== "").join("; ");
  return out === "" ? null : out;
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
      response: new Response(res.body, { status: res.status, statusText: res.statusText, headers: endToEnd(res.headers) }),
    };
  } catch {
    return { ok: false, reason: timedOut ? "timeout" : "unavailable" };
  } finally {
    clearTimeout(timer);
  }
}
