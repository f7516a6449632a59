// The two formats of API keys, how each is made and how a credential is told to be one of them. Imports nothing, so
// the README check (scripts/key-formats.ts) runs this same file under Node.

/**
 * `checksummed`: `<namespace>_<prefix>_<43 base62><6 base62 CRC32>`, recognisable by a scanner and checkable offline;
 * `plain`: `<prefix>_<64 lowercase hex>`, the seeds' format.
 */
export type KeyFormat = "checksummed" | "plain";
export const KEY_FORMATS = ["checksummed", "plain"] as const satisfies readonly KeyFormat[];

/** An account's key prefix and a deployment's namespace alike: 2-12 characters, a lowercase letter, then lowercase letters or digits. */
export const NAME = /^[a-z][a-z0-9]{1,11}$/;
/** The namespace every checksummed key starts with when KEY_PREFIX_NAMESPACE is not set. */
export const DEFAULT_NAMESPACE = "kg";

/** Digits, then upper case, then lower case: a base62 digit's value is its index here. */
export const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/** Random characters of a checksummed key: 43 × log2(62) = 256.03 bits, each character drawn uniformly. */
export const BODY_LENGTH = 43;
/** A CRC32 in base62: 62^6 > 2^32, so six digits hold any of them. */
export const CHECKSUM_LENGTH = 6;

const NAME_PART = "[a-z][a-z0-9]{1,11}";

/**
 * What a scanner searches for (no anchors; wrap it in `\b…\b` or anchor it): a checksummed key of the deployment's
 * `namespace`, or a plain key, of any account prefix or of the one given.
 */
export function keyPattern(format: KeyFormat, { namespace = DEFAULT_NAMESPACE, prefix }: { namespace?: string; prefix?: string } = {}) {
  const account = prefix ?? NAME_PART;
  return format === "checksummed" ? `${namespace}_${account}_[0-9A-Za-z]{${BODY_LENGTH + CHECKSUM_LENGTH}}` : `${account}_[0-9a-f]{64}`;
}

const PLAIN = new RegExp(`^(${NAME_PART})_([0-9a-f]{64})$`);
/** Of any namespace: a key keeps working after the deployment moves to another one (its checksum is its own). */
const CHECKSUMMED = new RegExp(`^(${NAME_PART}_${NAME_PART})_([0-9A-Za-z]{${BODY_LENGTH}})([0-9A-Za-z]{${CHECKSUM_LENGTH}})$`);

/** Fills a byte array with random bytes (crypto.getRandomValues; a test passes a seeded one). */
export type Fill = (bytes: Uint8Array<ArrayBuffer>) => Uint8Array;
const secure: Fill = (bytes) => {
  crypto.getRandomValues(bytes);
  return bytes;
};

/** A new key of `format` for an account's `prefix`, 256 random bits; `namespace` starts a checksummed one. */
export function generateKey(format: KeyFormat, prefix: string, namespace: string, fill: Fill = secure): string {
  if (format === "plain") return `${prefix}_${hex(fill(new Uint8Array(32)))}`;
  const head = `${namespace}_${prefix}_${randomBase62(BODY_LENGTH, fill)}`;
  return head + checksum(head);
}

/**
 * A key's shape: its format, the `prefix` it shows (everything before its random part) and `start`, the first 8
 * characters of that part.
 */
export type KeyShape = { format: KeyFormat; prefix: string; start: string };

/**
 * What a credential is by its text alone, read before anything is looked up: a key of either format; `mistyped` when it
 * claims to be a checksummed key (it has the shape of one, or starts with `<namespace>_`) but its checksum is not
 * what the rest of it makes; null when it is no key at all.
 */
export function readKey(credential: string, namespace: string): KeyShape | "mistyped" | null {
  const plain = PLAIN.exec(credential);
  if (plain) return { format: "plain", prefix: plain[1] as string, start: (plain[2] as string).slice(0, 8) };
  const m = CHECKSUMMED.exec(credential);
  if (m) {
    if (checksum(credential.slice(0, -CHECKSUM_LENGTH)) !== m[3]) return "mistyped";
    return { format: "checksummed", prefix: m[1] as string, start: (m[2] as string).slice(0, 8) };
  }
  return credential.startsWith(`${namespace}_`) ? "mistyped" : null;
}

/** The last six characters of a checksummed key: the CRC32 of everything before them, in base62, zero-padded. */
export function checksum(text: string): string {
  let n = crc32(new TextEncoder().encode(text));
  let out = "";
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = BASE62[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, i) => {
  let c = i;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});

/** CRC-32 as zlib, PNG and GitHub's tokens compute it (IEEE 802.3, reflected, polynomial 0xEDB88320), unsigned. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = (CRC_TABLE[(c ^ b) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** `length` base62 characters, each uniform: bytes of 248 and above (62 × 4) are drawn again rather than skewing the rest. */
function randomBase62(length: number, fill: Fill): string {
  let out = "";
  while (out.length < length) {
    for (const b of fill(new Uint8Array(length))) {
      if (b < 248 && out.length < length) out += BASE62[b % 62];
    }
  }
  return out;
}

function hex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}
