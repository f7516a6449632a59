import { BODY_LENGTH, CHECKSUM_LENGTH, NAME } from "./key-format";

/** Account key prefixes: 2-12 characters, a lowercase letter then lowercase letters or digits. */
export const PREFIX = NAME;
export const DEFAULT_PREFIX = "sk";

/**
 * Anywhere in a text, in any case: the shape of every random secret this file and core/key-format.ts make (keys of
 * both formats, and `generateSecret`'s refresh, cookie and identity secrets).
 */
export const SECRET_SHAPE = new RegExp(
  `[a-z][a-z0-9]{1,11}_(?:[0-9a-f]{64}|[a-z][a-z0-9]{1,11}_[0-9a-z]{${BODY_LENGTH + CHECKSUM_LENGTH}})`,
  "i",
);

/** SHA-256 of the whole key as lowercase hex: the only form of a key that is stored. */
export async function hashKey(key: string): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key))));
}

/**
 * A key's id, worked out from its hash: `key_` then the first 12 bytes of SHA-256 over a label and the hash. Whoever
 * holds a key can name its object (`key:<id>`) with no lookup, and an id tells nothing of the hash (let alone the key).
 * Keys issued before ids were worked out keep the random ids they were given (their object says where they are).
 */
export async function keyIdOf(hash: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`keygate key id\n${hash}`));
  return `key_${toHex(new Uint8Array(digest).subarray(0, 12))}`;
}

/** A secret other than a key, e.g. an agent's identity secret: `<kind>_` then 32 random bytes as hex. */
export function generateSecret(kind: string): string {
  return `${kind}_${toHex(crypto.getRandomValues(new Uint8Array(32)))}`;
}

/** A random identifier such as `key_5f0c9a1e2b7d43a8c6e1f0b2`. */
export function newId(kind: string): string {
  return `${kind}_${toHex(crypto.getRandomValues(new Uint8Array(12)))}`;
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

/** Bytes as standard base64 (with padding), as webhook signatures and secrets write them. */
export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Standard base64 as bytes; throws on text that is not base64. */
export function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}
