import { type CryptoKey, importJWK, SignJWT } from "jose";
import type { External } from "../core/principal";
import { parseMeta } from "../core/schemas";
import { type Config, misconfigured } from "../platform/config";

export const ASSERTION_TYP = "keygate-assertion+jwt";
/** How long an assertion is valid: it is meant for the one request it travels with. */
export const ASSERTION_TTL_SECONDS = 60;

/** Who the gateway vouches for, as the upstream receives it in headers and in the assertion. */
export type Identity = {
  accountId: string;
  /** The key's owner, or for a handshake token the agent's end user. */
  userId: string;
  method: "key" | "token" | "session";
  keyId?: string;
  role?: "admin" | "member";
  scopes?: string[];
  agentId?: string;
  /** A key's: the provider's own id and `meta` of the account and of the key. */
  external?: { account: External; key: External };
};

/** The public half of an assertion key, as /.well-known/jwks.json publishes it. */
export type PublicJwk = { kid: string; kty: "EC"; crv: "P-256"; x: string; y: string; alg: "ES256"; use: "sig" };
type Keys = { signing: { kid: string; key: CryptoKey } | null; published: PublicJwk[] };
const imported = new WeakMap<Config["assertionKeys"], Promise<Keys>>();

/** The signing key (the first) and the public halves of all of them, imported once per configuration. */
function keys(list: Config["assertionKeys"]): Promise<Keys> {
  let found = imported.get(list);
  if (!found) {
    found = (async () => {
      const first = list[0];
      const signing = first ? { kid: first.kid, key: await importSigningKey(first) } : null;
      const published = list.map(({ kid, kty, crv, x, y }): PublicJwk => ({ kid, kty, crv, x, y, alg: "ES256", use: "sig" }));
      return { signing, published };
    })();
    imported.set(list, found);
  }
  return found;
}

/** A key that passed the variable's schema but is not a point on the curve is a configuration error, not a 500. */
async function importSigningKey(jwk: Config["assertionKeys"][number]): Promise<CryptoKey> {
  try {
    return (await importJWK({ ...jwk, alg: "ES256" }, "ES256")) as CryptoKey;
  } catch {
    misconfigured("ASSERTION_SIGNING_KEYS", "holds a key that is not a valid P-256 private key");
  }
}

/** The public keys upstreams verify assertions with (GET /.well-known/jwks.json). */
export async function publicKeys(list: Config["assertionKeys"]): Promise<{ keys: PublicJwk[] }> {
  return { keys: (await keys(list)).published };
}

/**
 * A JWT proving that Keygate authenticated this one request (`htm` and `htu`, the URL the upstream receives without its
 * query) for this identity, valid for 60 s. Null when no signing key is configured.
 */
export async function signAssertion(
  list: Config["assertionKeys"],
  identity: Identity,
  request: { issuer: string; audience: string; method: string; url: URL; id: string },
): Promise<string | null> {
  const { signing } = await keys(list);
  if (!signing) return null;
  const htu = new URL(request.url.pathname, request.url.origin).href;
  return new SignJWT({
    acc: identity.accountId,
    amr: identity.method,
    ...(identity.keyId === undefined ? {} : { key: identity.keyId }),
    ...(identity.role === undefined ? {} : { role: identity.role }),
    ...(identity.scopes === undefined ? {} : { scopes: identity.scopes }),
    ...(identity.agentId === undefined ? {} : { agt: identity.agentId }),
    ...(identity.external === undefined
      ? {}
      : { ext: { account: claimed(identity.external.account), key: claimed(identity.external.key) } }),
    htm: request.method,
    htu,
  })
    .setProtectedHeader({ alg: "ES256", kid: signing.kid, typ: ASSERTION_TYP })
    .setIssuer(request.issuer)
    .setAudience(request.audience)
    .setSubject(identity.userId)
    .setJti(request.id)
    .setIssuedAt()
    .setExpirationTime(`${ASSERTION_TTL_SECONDS}s`)
    .sign(signing.key);
}

/** An `External` as the assertion's `ext` claim names it: `{id, meta}`, each null when unset. */
function claimed({ externalId, meta }: External) {
  return { id: externalId, meta: parseMeta(meta) };
}
