import { decodeProtectedHeader } from "jose";
import { SECRET_SHAPE } from "../core/ids";
import { ACCESS_TYPE } from "../tokens/access";
import { TOKEN_TYPE } from "../tokens/handshake";

/** Whether `Authorization: Bearer <secret>` carries this secret, compared in constant time. */
export async function bearerMatches(authorization: string | undefined, secret: string): Promise<boolean> {
  const sent = /^Bearer +(\S+) *$/i.exec(authorization ?? "")?.[1] ?? "";
  return constantTimeEqual(sent, secret);
}

/** Compares digests, so neither the content nor the length of the secret leaks through timing. */
async function constantTimeEqual(a: string, b: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [da, db] = await Promise.all([crypto.subtle.digest("SHA-256", enc.encode(a)), crypto.subtle.digest("SHA-256", enc.encode(b))]);
  return crypto.subtle.timingSafeEqual(da, db);
}

/** Types of the tokens Keygate issues: a person's access token and a handshake token. */
const TOKEN_TYPES = new Set([ACCESS_TYPE, TOKEN_TYPE]);
/**
 * How every token Keygate signs starts: the protected header as jose writes it, `{"alg":"HS256",` base64url-encoded
 * (the header is signed, so a token of Keygate's has exactly this one).
 */
const TOKEN_START = "eyJhbGciOiJIUzI1NiIs";
/** A run of base64url characters: a JWS's header is one, followed by `.`. Matched whole, so scanning stays linear. */
const BASE64URL_RUN = /[A-Za-z0-9_-]+/g;
/** A percent-escape; decoded one byte at a time, so one malformed escape elsewhere in the text hides nothing. */
const ESCAPE = /%[0-9A-Fa-f]{2}/g;
/** How many times a text is percent-decoded (an upstream may decode twice: `%255F` is `_`). */
const DECODINGS = 3;
/** A run long enough to be base64 of a secret (the shortest, a 32-character token, takes 44). */
const BASE64 = /[A-Za-z0-9+/_-]{44,}={0,2}/g;

/**
 * Whether a text holds a secret of Keygate's: a key or any secret of its shape (a refresh token's, the dashboard
 * cookie's), a handshake or access token, or one of `tokens` (the operator and verify tokens), in any case for the
 * shapes and the tokens, with characters stuck to it, percent-encoded, or base64-encoded (`Basic base64(key:)`). The
 * one place that says what a secret of Keygate's looks like wherever one must be recognised.
 */
export function carriesSecret(text: string, tokens: readonly string[]): boolean {
  return readings(text).some((view) => {
    if (SECRET_SHAPE.test(view)) return true;
    const lower = view.toLowerCase();
    if (tokens.some((token) => lower.includes(token.toLowerCase()))) return true;
    return holdsToken(view);
  });
}

/**
 * The text, percent-decoded once, twice and three times (escapes byte by byte: a secret is ASCII), and every long
 * base64 run in any of these decoded (at each of the 4 alignments).
 */
function readings(text: string): string[] {
  const views = [text];
  let view = text;
  for (let i = 0; i < DECODINGS; i++) {
    const decoded = view.replace(ESCAPE, (hex) => String.fromCharCode(Number.parseInt(hex.slice(1), 16)));
    if (decoded === view) break;
    view = decoded;
    views.push(view);
  }
  for (const view of [...views]) {
    for (const [run] of view.matchAll(BASE64)) {
      const standard = run.replaceAll("-", "+").replaceAll("_", "/").replace(/=+$/, "");
      for (let skip = 0; skip < 4; skip++) {
        let part = standard.slice(skip);
        // Padding is often left out: what a whole group of 4 cannot be goes, the rest is padded.
        if (part.length % 4 === 1) part = part.slice(0, -1);
        try {
          views.push(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
        } catch {
          // Not base64 at this alignment.
        }
      }
    }
  }
  return views;
}

/**
 * Whether a text holds a handshake or access token: a header of Keygate's followed by `.`, with anything stuck before
 * it (`eyJ` or another token's start included: the header is read from the last start in its run).
 */
function holdsToken(text: string): boolean {
  for (const match of text.matchAll(BASE64URL_RUN)) {
    const [run] = match;
    const start = run.lastIndexOf(TOKEN_START);
    if (start !== -1 && text[match.index + run.length] === "." && isKeygateToken(`${run.slice(start)}..`)) return true;
  }
  return false;
}

function isKeygateToken(jws: string): boolean {
  try {
    return TOKEN_TYPES.has(decodeProtectedHeader(jws).typ ?? "");
  } catch {
    return false;
  }
}
