import { QUERY_PARAM } from "../auth/credentials";
import { parseKey } from "../keys/format";
import { looksLikeToken } from "../tokens/handshake";

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

/** A header a client must never be able to set on its way upstream: Keygate's identity headers are Keygate's alone. */
export function isIdentityHeader(name: string): boolean {
  const n = name.toLowerCase();
  return n.startsWith("keygate-") || n.startsWith("x-keygate-");
}

/** Whether a header value carries a Keygate key or token (`Bearer <credential>` or the credential alone). */
function carriesCredential(value: string): boolean {
  const credential = value.replace(/^Bearer +/i, "").trim();
  return parseKey(credential) !== null || looksLikeToken(credential);
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

/** The upstream URL of a request: the upstream's origin and base path, then the request's path and query. */
export function upstreamUrl(base: URL, incoming: URL): URL {
  const url = new URL(base.pathname.replace(/\/$/, "") + incoming.pathname, base.origin);
  for (const [name, value] of incoming.searchParams) if (name !== QUERY_PARAM) url.searchParams.append(name, value);
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
  for (const name of [...headers.keys()]) if (isIdentityHeader(name)) headers.delete(name);
  for (const name of ["Authorization", "X-API-Key"]) {
    const value = headers.get(name);
    if (value !== null && (authenticated || carriesCredential(value))) headers.delete(name);
  }
  for (const [name, value] of Object.entries(identity)) headers.set(name, value);
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
      response: new Response(res.body, { status: res.status, statusText: res.statusText, headers: endToEnd(res.headers) }),
    };
  } catch {
    return { ok: false, reason: timedOut ? "timeout" : "unavailable" };
  } finally {
    clearTimeout(timer);
  }
}
