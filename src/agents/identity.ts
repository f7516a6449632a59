import { generateSecret } from "../core/ids";

const enc = new TextEncoder();

/** A new identity secret for an agent: shown to its admin once, used by their backend to sign end-user ids. */
export function newIdentitySecret(): string {
  return generateSecret("idsec");
}

/**
 * Whether `userHash` (64 hex characters) is the proof for `userId`. `crypto.subtle.verify` compares in constant time,
 * so the answer's timing says nothing about how much of a guess was right.
 */
export async function verifyIdentity(secret: string | null, userId: string, userHash: string): Promise<boolean> {
  if (secret === null) return false;
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  const mac = Uint8Array.from(userHash.match(/../g) ?? [], (h) => Number.parseInt(h, 16));
  return crypto.subtle.verify("HMAC", key, mac, enc.encode(userId));
}
