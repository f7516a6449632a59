// Signatures of the Standard Webhooks specification (https://www.standardwebhooks.com): every delivery carries
// `webhook-id`, `webhook-timestamp` (seconds) and `webhook-signature`, a space-separated list of `v1,<base64
// HMAC-SHA256 of "id.timestamp.body">` under each secret that signs, and `v1a,<base64 Ed25519 signature>` of the same
// content when the endpoint asks for Keygate's public-key signature. Written against WebCrypto: no library of the
// specification runs in workerd without Node's crypto.

const encoder = new TextEncoder();

/** `whsec_` + base64 of 32 random bytes: a new endpoint secret. */
export function newSecret(): string {
  return `whsec_${toBase64(crypto.getRandomValues(new Uint8Array(32)))}`;
}

export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
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
