import { errors, type JWTPayload, jwtVerify, SignJWT } from "jose";

/** A signing secret from JWT_SIGNING_KEYS: the first one signs, all of them verify. */
export type SigningKey = { kid: string; secret: Uint8Array };

export const ISSUER = "keygate";
export const MAX_TOKEN_BYTES = 8 * 1024;
export const CLOCK_SKEW_SECONDS = 5;

/** What tells one kind of Keygate token from another: its `typ` and audience, both checked on every verify. */
export type Kind = { typ: string; audience: string };

/**
 * An HS256 token of `kind` for `sub`, valid `ttlSeconds` from `now`, signed with the first key. The same arguments
 * (`jti` included) make the same token.
 */
export async function signToken(
  keys: readonly SigningKey[],
  kind: Kind,
  sub: string,
  claims: Record<string, string>,
  ttlSeconds: number,
  now: Date,
  jti: string = crypto.randomUUID(),
): Promise<string> {
  const [key] = keys;
  if (!key) throw new Error("no signing key");
  const iat = Math.floor(now.getTime() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", kid: key.kid, typ: kind.typ })
    .setIssuer(ISSUER)
    .setAudience(kind.audience)
    .setSubject(sub)
    .setJti(jti)
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttlSeconds)
    .sign(key.secret);
}

/**
 * Each signing secret imported once per isolate (the configuration keeps its secrets for the isolate's life), not on
 * every request: a person's access token is checked on every request they make.
 */
const imported = new WeakMap<Uint8Array, Promise<CryptoKey>>();

function verifyingKey(secret: Uint8Array): Promise<CryptoKey> {
  let key = imported.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
    imported.set(secret, key);
  }
  return key;
}

/**
 * The payload of a token of `kind`, with the algorithm, issuer, audience (one string, never an array) and type pinned, exp/iat/jti/sub required and
 * at most CLOCK_SKEW_SECONDS of skew: `iat` may not lie in the future, nor be older than `maxTtlSeconds`, and
 * `exp - iat` may not exceed it. Rejects as jose does (an expired token with `errors.JWTExpired`).
 */
export async function verifySigned(
  keys: readonly SigningKey[],
  token: string,
  kind: Kind,
  maxTtlSeconds: number,
  now: Date,
): Promise<JWTPayload> {
  if (token.length > MAX_TOKEN_BYTES) throw new errors.JWTInvalid("token too large");
  const { payload } = await jwtVerify(
    token,
    (header) => {
      const key = keys.find((k) => k.kid === header.kid);
      if (!key) throw new errors.JWKSNoMatchingKey();
      return verifyingKey(key.secret);
    },
    {
      algorithms: ["HS256"],
      issuer: ISSUER,
      audience: kind.audience,
      typ: kind.typ,
      requiredClaims: ["exp", "iat", "jti", "sub"],
      clockTolerance: CLOCK_SKEW_SECONDS,
      maxTokenAge: maxTtlSeconds,
      currentDate: now,
    },
  );
  // jose takes an `aud` array that merely contains the audience; a Keygate token names exactly one.
  if (typeof payload.aud !== "string") throw new errors.JWTInvalid("aud is not a single audience");
  if ((payload.exp as number) - (payload.iat as number) > maxTtlSeconds) throw new errors.JWTInvalid("lifetime too long");
  return payload;
}
