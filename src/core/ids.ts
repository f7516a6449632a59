/** Account key prefixes: 2-12 characters, a lowercase letter then lowercase letters or digits. */
export const PREFIX = /^[a-z][a-z0-9]{1,11}$/;
export const DEFAULT_PREFIX = "sk";

const KEY = /^([a-z][a-z0-9]{1,11})_([0-9a-f]{64})$/;
/**
 * Anywhere in a text, in any case: the shape of every random secret this file makes (keys, and `generateSecret`'s
 * refresh, cookie and identity secrets).
 */
export const SECRET_SHAPE = /[a-z][a-z0-9]{1,11}_[0-9a-f]{64}/i;

/** A new key: `<prefix>_` then 32 random bytes as 64 lowercase hex characters (256 bits). */
export function generateKey(prefix: string): string {
  return `${prefix}_${toHex(crypto.getRandomValues(new Uint8Array(32)))}`;
}

/** Splits a credential that has the key shape; anything else is `null` and never reaches D1. */
export function parseKey(credential: string): { prefix: string; start: string } | null {
  const m = KEY.exec(credential);
  if (!m) return null;
  return { prefix: m[1] as string, start: (m[2] as string).slice(0, 8) };
}

/** SHA-256 of the whole key as lowercase hex: the only form of a key that is stored. */
export async function hashKey(key: string): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key))));
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
