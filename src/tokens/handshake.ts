import { errors, jwtVerify, SignJWT } from "jose";

/** A signing secret from JWT_SIGNING_KEYS: the first one signs, all of them verify. */
export type SigningKey = { kid: string; secret: Uint8Array };

export const ISSUER = "keygate";
export const AUDIENCE = "keygate:chat";
/** The explicit `typ`, so a token of another kind signed with the same secret is never taken for this one. */
export const TOKEN_TYPE = "keygate-chat+jwt";
export const MAX_TOKEN_BYTES = 8 * 1024;
export const CLOCK_SKEW_SECONDS = 5;
/** The longest lifetime an agent may give its tokens; a token claiming a longer one was not made by Keygate. */
export const MAX_TOKEN_TTL_SECONDS = 86_400;

/** What a handshake token says: who (sub), for which agent and account, and from which origin when a browser minted it. */
export type ChatClaims = { sub: string; agt: string; acc: string; origin?: string; jti: string; iat: number; exp: number };

export async function signToken(
  keys: readonly SigningKey[],
  claims: { sub: string; agt: string; acc: string; origin?: string },
  ttlSeconds: number,
  now: Date,
): Promise<string> {
  const [key] = keys;
  if (!key) throw new Error("no signing key");
  const iat = Math.floor(now.getTime() / 1000);
  return new SignJWT({ agt: claims.agt, acc: claims.acc, ...(claims.origin ? { origin: claims.origin } : {}) })
    .setProtectedHeader({ alg: "HS256", kid: key.kid, typ: TOKEN_TYPE })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(claims.sub)
    .setJti(crypto.randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttlSeconds)
    .sign(key.secret);
}

/** An expired token's signature was verified, so its `origin` is the one it was really minted for. */
export type TokenResult =
  | { ok: true; claims: ChatClaims }
  | { ok: false; code: "invalid_token" }
  | { ok: false; code: "token_expired"; origin: string | undefined };

/**
 * Verifies a handshake token with the algorithm, issuer, audience and type pinned, exp/iat/jti required and at most
 * CLOCK_SKEW_SECONDS of skew: `iat` may not lie in the future, nor be older than the longest lifetime, and `exp - iat`
 * may not exceed it. Anything else (another algorithm or key, an unknown kid, a changed byte) is invalid.
 */
export async function verifyToken(keys: readonly SigningKey[], token: string, now: Date): Promise<TokenResult> {
  if (token.length > MAX_TOKEN_BYTES) return { ok: false, code: "invalid_token" };
  try {
    const { payload } = await jwtVerify(
      token,
      (header) => {
        const key = keys.find((k) => k.kid === header.kid);
        if (!key) throw new errors.JWKSNoMatchingKey();
        return key.secret;
      },
      {
        algorithms: ["HS256"],
        issuer: ISSUER,
        audience: AUDIENCE,
        typ: TOKEN_TYPE,
        requiredClaims: ["exp", "iat", "jti", "sub"],
        clockTolerance: CLOCK_SKEW_SECONDS,
        // Refuses an iat in the future (beyond the skew) as well as one too far in the past.
        maxTokenAge: MAX_TOKEN_TTL_SECONDS,
        currentDate: now,
      },
    );
    const { agt, acc, origin, iat, exp } = payload;
    if ((exp as number) - (iat as number) > MAX_TOKEN_TTL_SECONDS) return { ok: false, code: "invalid_token" };
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
