import { errors } from "jose";
import { type SigningKey, signToken, verifySigned } from "./jwt";

/** A person's access token: its own type and audience, so a handshake token or an assertion is never taken for one. */
export const ACCESS_TYPE = "keygate-access+jwt";
export const ACCESS_AUDIENCE = "keygate:access";
const KIND = { typ: ACCESS_TYPE, audience: ACCESS_AUDIENCE };
export const ACCESS_TTL_SECONDS = 3600;

/** Who (sub), in which account (acc), through which session (sid). */
export type AccessClaims = { sub: string; acc: string; sid: string; jti: string; iat: number; exp: number };

/** An access token issued at `now`; given a `jti`, the same token each time. */
export function signAccessToken(
  keys: readonly SigningKey[],
  { sub, acc, sid }: { sub: string; acc: string; sid: string },
  now: Date,
  jti?: string,
): Promise<string> {
  return signToken(keys, KIND, sub, { acc, sid }, ACCESS_TTL_SECONDS, now, jti);
}

export type AccessResult = { ok: true; claims: AccessClaims } | { ok: false; code: "invalid_token" | "token_expired" };

/**
 * Tokens this isolate verified, under the signing keys they were verified with (the configuration's, kept for the
 * isolate's life): a token's signature and claims never change, so a hot session's token is verified once and only
 * its expiry is judged on each use. Whether its session still stands is the person's object's to say, every time.
 */
const verified = new WeakMap<readonly SigningKey[], Map<string, AccessClaims>>();
const MAX_VERIFIED = 10_000;

/** Verifies an access token (see `verifySigned`); anything else is invalid. */
export async function verifyAccessToken(keys: readonly SigningKey[], token: string, now: Date): Promise<AccessResult> {
  const known = verified.get(keys)?.get(token);
  if (known) return now.getTime() < known.exp * 1000 ? { ok: true, claims: known } : { ok: false, code: "token_expired" };
  try {
    const payload = await verifySigned(keys, token, KIND, ACCESS_TTL_SECONDS, now);
    if (typeof payload.acc !== "string" || typeof payload.sid !== "string") return { ok: false, code: "invalid_token" };
    const claims = payload as AccessClaims;
    let tokens = verified.get(keys);
    if (!tokens) {
      tokens = new Map();
      verified.set(keys, tokens);
    }
    if (tokens.size >= MAX_VERIFIED) tokens.delete(tokens.keys().next().value as string);
    tokens.set(token, claims);
    return { ok: true, claims };
  } catch (err) {
    return { ok: false, code: err instanceof errors.JWTExpired ? "token_expired" : "invalid_token" };
  }
}
