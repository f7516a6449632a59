import { base64url } from "jose";

/**
 * Passwords: PBKDF2-SHA256 from WebCrypto with a random salt per password, stored as
 * `pbkdf2-sha256$<iterations>$<salt>$<hash>` so the cost can be raised later (a stored hash with fewer iterations than
 * today's still verifies, and `needsRehash` says to replace it at the next login). The Workers runtime refuses more
 * than 100,000 iterations, so that is the cost used.
 */
export const ITERATIONS = 100_000;
const SALT_BYTES = 16;
const HASH_BITS = 256;
const SCHEME = "pbkdf2-sha256";

export const MIN_PASSWORD_LENGTH = 12;
export const MAX_PASSWORD_LENGTH = 256;

/**
 * The most common passwords of 12 characters or more, as found in public breach lists (lowercased): a password equal
 * to one of them, ignoring case, is refused.
 */
const COMMON = new Set([
  "123456789012",
  "1234567890123",
  "12345678901234",
  "123456789123",
  "1q2w3e4r5t6y",
  "1qaz2wsx3edc",
  "qwertyuiop12",
  "qwertyuiopasdfghjkl",
  "qwertyuiop123",
  "qwerty123456",
  "qwerty1234567",
  "password1234",
  "password12345",
  "password123456",
  "passwordpassword",
  "password123!",
  "p@ssw0rd1234",
  "iloveyou1234",
  "abcdefghijkl",
  "abc123456789",
  "aaaaaaaaaaaa",
  "111111111111",
  "000000000000",
  "letmein12345",
  "welcome12345",
  "welcome123456",
  "changeme1234",
  "administrator",
  "administrator1",
  "adminadmin123",
  "football1234",
  "baseball1234",
  "superman1234",
  "sunshine1234",
  "princess1234",
  "trustno1trustno1",
  "correcthorsebatterystaple",
  "monkey123456",
  "dragon123456",
  "starwars1234",
]);

/** Why a new password is refused, or null. `email` is the user's: a password equal to it is refused too. */
export function passwordProblem(password: string, email: string): string | null {
  const length = [...password].length;
  if (length < MIN_PASSWORD_LENGTH) return `must be at least ${MIN_PASSWORD_LENGTH} characters`;
  if (length > MAX_PASSWORD_LENGTH) return `must be at most ${MAX_PASSWORD_LENGTH} characters`;
  const lower = password.toLowerCase();
  if (lower === email.toLowerCase()) return "must not be your email address";
  if (COMMON.has(lower)) return "is one of the most common passwords; choose another";
  return null;
}

export async function hashPassword(password: string, iterations = ITERATIONS): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const hash = await derive(password, salt, iterations);
  return [SCHEME, String(iterations), base64url.encode(salt), base64url.encode(hash)].join("$");
}

/**
 * Whether `password` matches `stored`, compared in constant time. With `stored` null (no such user, or no password
 * yet) it still derives a hash, so an unknown email costs what a wrong password does.
 */
export async function verifyPassword(password: string, stored: string | null): Promise<boolean> {
  const parsed = stored === null ? null : parse(stored);
  const salt = parsed?.salt ?? new Uint8Array(SALT_BYTES);
  const derived = await derive(password, salt, parsed?.iterations ?? ITERATIONS);
  if (!parsed) return false;
  return derived.byteLength === parsed.hash.byteLength && crypto.subtle.timingSafeEqual(derived, parsed.hash);
}

/** Whether a stored hash was made with less than today's cost. */
export function needsRehash(stored: string): boolean {
  return (parse(stored)?.iterations ?? 0) < ITERATIONS;
}

function parse(stored: string): { iterations: number; salt: Uint8Array; hash: Uint8Array } | null {
  const [scheme, iterations, salt, hash] = stored.split("$");
  const n = Number(iterations);
  if (scheme !== SCHEME || !Number.isInteger(n) || n < 1 || n > ITERATIONS || !salt || !hash) return null;
  return { iterations: n, salt: base64url.decode(salt), hash: base64url.decode(hash) };
}

async function derive(password: string, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(password), "PBKDF2", false, ["deriveBits"]);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, key, HASH_BITS));
}
