// npm run lint:key-formats: README's "Key formats" part, what secret scanners are registered with, is what the code does.
//
// The part between the markers below is written by this script from src/core/key-format.ts (`--write` rewrites it):
// the regular expression of each format and test vectors, keys made by the code's own generator from a fixed seed. The
// check fails when README differs from what the code makes now, and then checks the vectors a second way, with Node's
// own CRC-32 (node:zlib) and the JavaScript snippet README publishes for computing the checksum, evaluated as written.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { crc32 } from "node:zlib";
import {
  BASE62,
  BODY_LENGTH,
  CHECKSUM_LENGTH,
  checksum,
  DEFAULT_NAMESPACE,
  type Fill,
  generateKey,
  keyPattern,
  readKey,
} from "../src/core/key-format.ts";

const README = "README.md";
const BEGIN = "<!-- key-formats: begin (written by `npm run lint:key-formats -- --write`, checked by `npm run lint:key-formats`) -->";
const END = "<!-- key-formats: end -->";
const SEED = "keygate test vectors";

/** What a scanner or a customer's code can run to check a key: Node 22.2 and later (zlib.crc32). */
const SNIPPET = `const { crc32 } = require("node:zlib");
const BASE62 = "${BASE62}";
/** Whether \`key\` is a checksummed Keygate key: its last 6 characters are the CRC-32 of the rest, in base62. */
function isChecksummedKey(key) {
  const m = /^([a-z][a-z0-9]{1,11}_[a-z][a-z0-9]{1,11}_[0-9A-Za-z]{${BODY_LENGTH}})([0-9A-Za-z]{${CHECKSUM_LENGTH}})$/.exec(key);
  if (!m) return false;
  let n = crc32(m[1]);
  let sum = "";
  for (let i = 0; i < ${CHECKSUM_LENGTH}; i++, n = Math.floor(n / 62)) sum = BASE62[n % 62] + sum;
  return sum === m[2];
}`;

/** Bytes from SHA-256 of the seed and a counter: the same keys on every machine. */
function seeded(seed: string): Fill {
  let counter = 0;
  let pool: number[] = [];
  return (bytes) => {
    for (let i = 0; i < bytes.length; i++) {
      if (pool.length === 0) pool = [...createHash("sha256").update(`${seed}:${counter++}`).digest()];
      bytes[i] = pool.shift() as number;
    }
    return bytes;
  };
}

const fill = seeded(SEED);
const checksummed = ["sk", "rm", "acme"].map((prefix) => generateKey("checksummed", prefix, DEFAULT_NAMESPACE, fill));
const plain = ["rm", "rpakey", "rbtk"].map((prefix) => generateKey("plain", prefix, DEFAULT_NAMESPACE, fill));
const first = checksummed[0] as string;
// The first vector with one character of its random part changed: what a scanner and Keygate both refuse.
const at = 20;
const mistyped = first.slice(0, at) + BASE62[(BASE62.indexOf(first[at] as string) + 1) % 62] + first.slice(at + 1);

const code = (s: string) => `\`${s}\``;
const crcOf = (text: string) => crc32(text);

function block(): string {
  const lines = [
    BEGIN,
    "",
    "| format | regular expression | example |",
    "|---|---|---|",
    `| checksummed, any account | ${code(keyPattern("checksummed"))} | ${code(first)} |`,
    `| checksummed, the account with prefix \`rm\` | ${code(keyPattern("checksummed", { prefix: "rm" }))} | ${code(checksummed[1] as string)} |`,
    `| plain, any account | ${code(keyPattern("plain"))} | ${code(plain[0] as string)} |`,
    `| plain, the account with prefix \`rpakey\` | ${code(keyPattern("plain", { prefix: "rpakey" }))} | ${code(plain[1] as string)} |`,
    "",
    `The expressions are for the default namespace \`${DEFAULT_NAMESPACE}\`: put your \`KEY_PREFIX_NAMESPACE\` in its place.`,
    "For scanning, surround one with word boundaries (`\\b…\\b`); to check a whole credential, anchor it (`^…$`).",
    "",
    `Test vectors (made by \`generateKey\` in src/core/key-format.ts from the seed "${SEED}"):`,
    "",
    "| key | CRC-32 of everything before the last 6 characters | its last 6 characters |",
    "|---|---|---|",
    ...checksummed.map((key) => {
      const n = crcOf(key.slice(0, -CHECKSUM_LENGTH));
      return `| ${code(key)} | \`0x${n.toString(16).padStart(8, "0")}\` (${n}) | ${code(key.slice(-CHECKSUM_LENGTH))} |`;
    }),
    `| ${code(mistyped)} (the first, its 21st character changed) | \`0x${crcOf(mistyped.slice(0, -CHECKSUM_LENGTH)).toString(16).padStart(8, "0")}\` | ${code(checksum(mistyped.slice(0, -CHECKSUM_LENGTH)))}, not ${code(mistyped.slice(-CHECKSUM_LENGTH))}: refused |`,
    "",
    ...plain
      .slice(2)
      .map((key) => `A plain key, for comparison (prefix \`rbtk\`): ${code(key)}. It has no checksum: any 64 hex characters make one.`),
    "",
    "Checking a checksummed key (Node 22.2 and later; in Python, `zlib.crc32(text.encode())` gives the same CRC-32):",
    "",
    "```js",
    SNIPPET,
    "```",
    "",
    END,
  ];
  return lines.join("\n");
}

const failures: string[] = [];
const fail = (message: string) => failures.push(message);
const whole = (source: string) => new RegExp(`^${source}$`);

// The vectors, checked a second way: Node's CRC-32 and README's snippet, against what the code says of them.
const isChecksummedKey = new Function("require", `${SNIPPET}\nreturn isChecksummedKey;`)(createRequire(import.meta.url)) as (
  key: string,
) => boolean;
for (const key of checksummed) {
  if (!whole(keyPattern("checksummed")).test(key)) fail(`${key} does not match the checksummed expression`);
  if (!isChecksummedKey(key)) fail(`README's snippet refuses ${key}`);
  if (readKey(key, DEFAULT_NAMESPACE) === "mistyped") fail(`the code refuses ${key}`);
  let n = 0;
  for (const c of key.slice(-CHECKSUM_LENGTH)) n = n * 62 + BASE62.indexOf(c);
  if (n !== crcOf(key.slice(0, -CHECKSUM_LENGTH))) fail(`${key}: its last characters are not node:zlib's CRC-32 of the rest`);
}
if (isChecksummedKey(mistyped) || readKey(mistyped, DEFAULT_NAMESPACE) !== "mistyped") fail(`${mistyped} is not refused`);
for (const key of plain)
  if (!whole(keyPattern("plain")).test(key) || readKey(key, DEFAULT_NAMESPACE) === null) fail(`${key} is not a plain key`);
// And keys made with real randomness, as the service makes them.
for (let i = 0; i < 1000; i++) {
  const key = generateKey("checksummed", "sk", DEFAULT_NAMESPACE);
  if (!whole(keyPattern("checksummed", { prefix: "sk" })).test(key) || !isChecksummedKey(key)) fail(`${key} fails its own format`);
}

const readme = readFileSync(README, "utf8");
const start = readme.indexOf(BEGIN);
const end = readme.indexOf(END);
if (start === -1 || end < start) {
  fail(`${README} has no "Key formats" part between its markers`);
} else {
  const written = readme.slice(start, end + END.length);
  const wanted = block();
  if (process.argv.includes("--write")) {
    writeFileSync(README, readme.slice(0, start) + wanted + readme.slice(end + END.length));
    console.log(`key-formats: ${README} rewritten`);
  } else if (written !== wanted) {
    fail(`${README}'s "Key formats" part is not what the code makes: run \`npm run lint:key-formats -- --write\` and review`);
  }
}

if (failures.length > 0) {
  for (const f of failures) console.error(`key-formats: ${f}`);
  process.exit(1);
}
console.log(`key-formats: README's expressions and ${checksummed.length + plain.length + 1} test vectors match the code`);
