import { errors, jwtVerify, SignJWT } from "jose";
import { CLOCK_SKEW_SECONDS, ISSUER, MAX_TOKEN_BYTES, type SigningKey } from "./handshake";

/** A person's access token: its own type and audience, so a handshake token or an assertion is never taken for one. */
export const ACCESS_TYPE = "keygate-access+jwt";
export const ACCESS_AUDIENCE = "keygate:access";
export const ACCESS_TTL_SECONDS = 3600;

/** Who (sub), in which account (acc), through which session (sid). */
export type AccessClaims = { sub: string; acc: string; sid: string; jti: string; iat: number; exp: number };

export async function signAccessToken(
  keys: readonly SigningKey[],
  claims: { sub: string; acc: string; sid: string },
  now: Date,
): Promise<string> {
  const [key] = keys;
  if (!key) throw new Error("no signing key");
  const iat = Math.floor(now.getTime() / 1000);
  return new SignJWT({ acc: claims.acc, sid: claims.sid })
    .setProtectedHeader({ alg: "HS256", kid: key.kid, typ: ACCESS_TYPE })
    .setIssuer(ISSUER)
    .setAudience(ACCESS_AUDIENCE)
    .setSubject(claims.sub)
    .setJti(crypto.randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + ACCESS_TTL_SECONDS)
    .sign(key.secret);
}

export type AccessResult = { ok: true; claims: AccessClaims } | { ok: false; code: "invalid_token" | "token_expired" };

/** Verifies an access token with algorithm, issuer, audience and type pinned; anything else is invalid. */
export async function verifyAccessToken(keys: readonly SigningKey[], token: string, now: Date): Promise<AccessResult> {
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
        audience: ACCESS_AUDIENCE,
        typ: ACCESS_TYPE,
        requiredClaims: ["exp", "iat", "jti", "sub"],
        clockTolerance: CLOCK_SKEW_SECONDS,
        maxTokenAge: ACCESS_TTL_SECONDS,
        currentDate: now,
      },
    );
    const { acc, sid, iat, exp } = payload;
    if (typeof acc !== "string" || typeof sid !== "string" || (exp as number) - (iat as number) > ACCESS_TTL_SECONDS)
      return { ok: false, code: "invalid_token" };
    return { ok: true, claims: payload as AccessClaims };
  } catch (err) {
    return { ok: false, code: err instanceof errors.JWTExpired ? "token_expired" : "invalid_token" };
  }
}
