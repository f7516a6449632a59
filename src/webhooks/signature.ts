// Signatures of the Standard Webhooks specification (https://www.standardwebhooks.com): every delivery carries
// `webhook-id`, `webhook-timestamp` (seconds) and `webhook-signature`, a space-separated list of `v1,<base64
// HMAC-SHA256 of "id.timestamp.body">` under each secret that signs, and `v1a,<base64 Ed25519 signature>` of the same
// content when the endpoint asks for Keygate's public-key signature. Written against WebCrypto: no library of the
// specification runs in workerd without Node's crypto.

import { fromBase64, toBase64 } from "../core/ids";

const encoder = new TextEncoder();

/** `whsec_` + base64 of 32 random bytes: a new endpoint secret. */
export function newSecret(): string {
  return `whsec_${toBase64(crypto.getRandomValues(new Uint8Array(32)))}`;
}

/** What is signed: `id.timestamp.body`. */
const content = (id: string, timestamp: number, body: string) => encoder.encode(`${id}.${timestamp}.${body}`);

/** `v1,<signature>` of the content under a `whsec_` secret (its base64 part's bytes are the HMAC key). */
export async function hmacSignature(secret: string, id: string, timestamp: number, body: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", fromBase64(secret.slice("whsec_".length)), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return `v1,${toBase64(new Uint8Array(await crypto.subtle.sign("HMAC", key, content(id, timestamp, body))))}`;
}

/** `v1a,<signature>` of the content under Keygate's Ed25519 key (published in /.well-known/jwks.json). */
export async function ed25519Signature(key: CryptoKey, id: string, timestamp: number, body: string): Promise<string> {
  return `v1a,${toBase64(new Uint8Array(await crypto.subtle.sign("Ed25519", key, content(id, timestamp, body))))}`;
}

/** Keygate's Ed25519 key as configured (WEBHOOK_SIGNING_KEY). */
export type SigningJwk = { kid: string; kty: "OKP"; crv: "Ed25519"; x: string; d: string };

const imported = new WeakMap<SigningJwk, Promise<CryptoKey>>();

/** The private key that makes `v1a` signatures, imported once per configuration. */
export function ed25519Key(jwk: SigningJwk): Promise<CryptoKey> {
  let key = imported.get(jwk);
  if (!key) {
    const { kty, crv, x, d } = jwk;
    key = crypto.subtle.importKey("jwk", { kty, crv, x, d }, { name: "Ed25519" }, false, ["sign"]) as Promise<CryptoKey>;
    imported.set(jwk, key);
  }
  return key;
}

/** The public half, as /.well-known/jwks.json publishes it beside the assertion keys. */
export function ed25519PublicJwk({ kid, x }: SigningJwk) {
  return { kid, kty: "OKP" as const, crv: "Ed25519" as const, x, alg: "EdDSA" as const, use: "sig" as const };
}

/** The headers of one delivery: one `v1` signature per secret that signs (two while a rotated secret still does). */
export async function signedHeaders(
  { id, timestamp, body }: { id: string; timestamp: number; body: string },
  secrets: readonly string[],
  ed25519?: CryptoKey,
): Promise<Record<string, string>> {
  const signatures = await Promise.all(secrets.map((s) => hmacSignature(s, id, timestamp, body)));
  if (ed25519) signatures.push(await ed25519Signature(ed25519, id, timestamp, body));
  return {
    "Content-Type": "application/json",
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": signatures.join(" "),
  };
}
