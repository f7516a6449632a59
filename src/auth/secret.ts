import { decodeProtectedHeader } from "jose";
import { SECRET_SHAPE } from "../keys/format";
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
/** A compact JWS as Keygate's start (`eyJ`: the header is signed, so it is exactly the JSON jose wrote). */
const JWS = /eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;
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
    for (const [jws] of view.matchAll(JWS)) if (isKeygateToken(jws)) return true;
    return false;
  });
}

/** The text, percent-decoded, and every long base64 run in either decoded (at each of the 4 alignments). */
function readings(text: string): string[] {
  const views = [text];
  if (text.includes("%")) {
    try {
      views.push(decodeURIComponent(text));
    } catch {
      // Not percent-encoding after all: the text as it is.
    }
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

function isKeygateToken(jws: string): boolean {
  try {
    return TOKEN_TYPES.has(decodeProtectedHeader(jws).typ ?? "");
  } catch {
    return false;
  }
}
