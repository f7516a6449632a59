import { errors } from "jose";
import { ISSUER, type SigningKey, signToken as sign, verifySigned } from "./jwt";

export { ISSUER, type SigningKey };
export const AUDIENCE = "keygate:chat";
/** The explicit `typ`, so a token of another kind signed with the same secret is never taken for this one. */
export const TOKEN_TYPE = "keygate-chat+jwt";
const KIND = { typ: TOKEN_TYPE, audience: AUDIENCE };
/** The longest lifetime an agent may give its tokens; a token claiming a longer one was not made by Keygate. */
export const MAX_TOKEN_TTL_SECONDS = 86_400;

/** What a handshake token says: who (sub), for which agent and account, and from which origin when a browser minted it. */
export type ChatClaims = { sub: string; agt: string; acc: string; origin?: string; jti: string; iat: number; exp: number };

export function signToken(
  keys: readonly SigningKey[],
  claims: { sub: string; agt: string; acc: string; origin?: string },
  ttlSeconds: number,
  now: Date,
): Promise<string> {
  const { sub, agt, acc, origin } = claims;
  return sign(keys, KIND, sub, { agt, acc, ...(origin ? { origin } : {}) }, ttlSeconds, now);
}

/** An expired token's signature was verified, so its `origin` is the one it was really minted for. */
export type TokenResult =
  | { ok: true; claims: ChatClaims }
  | { ok: false; code: "invalid_token" }
  | { ok: false; code: "token_expired"; origin: string | undefined };

/**
 * Verifies a handshake token (see `verifySigned`: no lifetime beyond the longest an agent may give). Anything else
 * (another algorithm or key, an unknown kid, a changed byte) is invalid.
 */
export async function verifyToken(keys: readonly SigningKey[], token: string, now: Date): Promise<TokenResult> {
  try {
    const payload = await verifySigned(keys, token, KIND, MAX_TOKEN_TTL_SECONDS, now);
    const { agt, acc, origin } = payload;
    if (typeof agt !== "string" || typeof acc !== "string" || (origin !== undefined && typeof origin !== "string")) {
      return { ok: false, code: "invalid_token" };
    }
    return { ok: true, claims: payload as ChatClaims };
  } catch (err) {
    if (!(err instanceof errors.JWTExpired)) return { ok: false, code: "invalid_token" };
    const { origin } = err.payload;
    return { ok: false, code: "token_expired", origin: typeof origin === "string" ? origin : undefined };
  }
}

/** Keys never contain a dot; a credential with one (or a JWT's `eyJ` start) is a token attempt. */
export function looksLikeToken(credential: string): boolean {
  return credential.includes(".") || credential.startsWith("eyJ");
}
