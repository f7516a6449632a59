// npm run fuzz: a bounded, reproducible HTTP fuzzer for Keygate.
//
// It builds the worker and serves it with Miniflare on 127.0.0.1 (scripts/keygate-server.mjs), seeds a realistic world
// through the public API (two accounts, admin, member, scoped, revoked, expiring and low-limit keys, agents, handshake
// tokens), then sends FUZZ_REQUESTS requests (default 3000) in small parallel batches across every operation of the
// served /openapi.json (Keygate's inventory; the fuzzer knows how to fill most of them well), unknown paths, wrong methods
// and CORS preflights, with every kind of credential, path id, body, query, Origin and client address. What is sent is chosen by a PRNG seeded with FUZZ_SEED (default 1), so a run can be
// repeated: the same seed sends the same sequence of requests (the ids and keys in them are minted anew each run).
//
// Every answer is checked: no 5xx of any kind, every error an RFC 9457 problem (application/problem+json with code,
// status, type, title, detail, requestId), no stack trace, and no secret (a raw key, a key's SHA-256, an identity
// secret, the operator token or the signing secret) anywhere, except a new key or secret in the very answer that
// creates it; and a success only for a credential the operation takes, as the fuzzer's own rules (RIGHTS) say, never as
// the document says.
//
// Then the gateway (scripts/fuzz-gateway.ts): a second Keygate with UPSTREAM_URL pointing at a local echo upstream and
// a route table like wrangler.toml's, and FUZZ_GATEWAY_REQUESTS (default 1500) seeded requests with odd paths, odd
// headers and every kind of credential, checked both in Keygate's answers and in what the upstream received. Exits 1
// listing each distinct failure, or 0 with a one-line summary per half.
import { createHash, createHmac } from "node:crypto";
import http, { type IncomingHttpHeaders } from "node:http";
import { fuzzGateway } from "./fuzz-gateway.ts";
import { startKeygate } from "./keygate-server.mjs";

const REQUESTS = Number.parseInt(process.env.FUZZ_REQUESTS ?? "3000", 10);
/** Requests of the gateway half; 0 skips it. */
const GATEWAY_REQUESTS = Number.parseInt(process.env.FUZZ_GATEWAY_REQUESTS ?? "1500", 10);
const SEED = Number.parseInt(process.env.FUZZ_SEED ?? "1", 10);
/** FUZZ_VERBOSE=1 also prints each route's status histogram, to see what the run reached. */
const VERBOSE = process.env.FUZZ_VERBOSE === "1";
/** Requests in flight at once: enough to interleave state changes with reads, few enough for a 2-core machine. */
const PARALLEL = 8;
/** A request that gets no complete answer in this time counts as a failure (Keygate promises never to hang). */
const REQUEST_TIMEOUT_MS = 15_000;
/** The API half's Keygate: on a port the system picks, so runs side by side on one machine never collide. */
let apiPort = 0;
const OPERATOR_TOKEN = "fuzz-operator-token-0123456789abcdef0123";
const VERIFY_TOKEN = "fuzz-verify-token-0123456789abcdefghijkl";
const SIGNING_SECRET = "fuzz-signing-secret-0123456789abcdefghij";
const WIDGET = "https://widget.example";
const LOCAL_WIDGET = "http://localhost:8080";
/** High enough that fuzzing never exhausts a seeded key, so requests reach the handlers behind the limiter. */
const WIDE = { limit: 1_000_000, windowSeconds: 60 };
/** How many failing answers are printed in full; the rest are counted per kind. */
const MAX_EXAMPLES = 20;

if (!Number.isInteger(REQUESTS) || REQUESTS < 1 || !Number.isInteger(SEED) || !Number.isInteger(GATEWAY_REQUESTS) || GATEWAY_REQUESTS < 0) {
  console.error("fuzz: FUZZ_REQUESTS must be a positive integer, FUZZ_GATEWAY_REQUESTS a whole number and FUZZ_SEED an integer");
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------------------------------
// Randomness: mulberry32, small and the same sequence for the same seed on every machine.

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = mulberry32(SEED);
const int = (n: number) => Math.floor(random() * n);
const pick = <T>(list: readonly T[]): T => list[int(list.length)] as T;
const chance = (p: number) => random() < p;
const hex = (n: number) => Array.from({ length: n }, () => "0123456789abcdef"[int(16)]).join("");

// ---------------------------------------------------------------------------------------------------------------------
// Small helpers.

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
export const base64url = (value: unknown) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
/** Header values travel as bytes; this sends the UTF-8 bytes of any text (node:http only takes Latin-1 strings). */
export const utf8Bytes = (text: string) => Buffer.from(text, "utf8").toString("latin1");
/** A raw key as Keygate writes them: `<prefix>_` and 64 lowercase hex characters, or `<namespace>_<prefix>_` and 49 base62. */
const KEY_SHAPE = /[a-z][a-z0-9]{1,11}_(?:[0-9a-f]{64}|[a-z][a-z0-9]{1,11}_[0-9A-Za-z]{49})/;
const HASH_SHAPE = /(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])/;
/** A line of a JavaScript stack: `at fn (file.js:12:3)` or `at file.ts:12`. */
const STACK_LINE = /\bat [^\n]{0,200}?\.(?:[cm]?js|ts):\d+/;

/** An HS256 JWT signed with `secret`, so tokens with odd claims reach Keygate's checks past the signature. */
export function jwt(header: object, payload: object, secret = SIGNING_SECRET): string {
  const unsigned = `${base64url(header)}.${base64url(payload)}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

/** Changes one character of `text` (at `index`, default random) to another of the same alphabet. */
function flip(text: string, index = int(text.length)): string {
  const c = text[index] as string;
  const alphabet = /[0-9a-f]/.test(c) ? "0123456789abcdef" : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const other = alphabet[(alphabet.indexOf(c) + 1 + int(alphabet.length - 1)) % alphabet.length];
  return text.slice(0, index) + other + text.slice(index + 1);
}

// ---------------------------------------------------------------------------------------------------------------------
// HTTP: node:http rather than fetch, so paths go out byte for byte (fetch would normalise `..` and `%2e%2e` away),
// headers may carry any byte, and a body can be sent chunked without a Content-Length.

// One connection per request: the local runtime leaves the body of a request it answered without reading (an OPTIONS
// with a body, say) on a kept-alive connection and parses it as the next request, which would pin its answer (501
// "Unrecognized request method") on an innocent neighbour.
const agent = new http.Agent({ keepAlive: false, maxSockets: PARALLEL });

/** Headers as sent: each a string of bytes (`utf8Bytes` for any text). */
export type Headers = Record<string, string | string[]>;
export type Outgoing = { method: string; path: string; headers?: Headers; body?: string | Buffer; chunked?: boolean; port?: number };
/** What came back: an answer, or why none did. */
export type Answer =
  | { error?: undefined; status: number; headers: IncomingHttpHeaders; text: string }
  | { error: string; status?: undefined; headers?: undefined; text?: undefined };

/** Sends one request (to Keygate on `port`); resolves with {status, headers, text} or {error} (never rejects). */
export function send({ method, path, headers = {}, body, chunked = false, port = apiPort }: Outgoing): Promise<Answer> {
  return new Promise((resolve) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const done = (result: Answer) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(result);
      }
    };
    let req: http.ClientRequest;
    try {
      req = http.request({ host: "127.0.0.1", port, method, path, headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => done({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", (err) => done({ error: String(err) }));
      });
    } catch (err) {
      // node:http refuses some header values itself; that is a bug in this script, not an answer of Keygate.
      done({ error: `not sent: ${(err as Error).message}` });
      return;
    }
    // A deadline for the whole exchange, not an idle timeout: a stream that trickles forever must fail too.
    timer = setTimeout(() => req.destroy(new Error(`no complete answer within ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS);
    req.on("error", (err) => done({ error: String(err.message ?? err) }));
    if (body === undefined) req.end();
    else if (chunked) {
      // Two writes and no Content-Length: node sends Transfer-Encoding: chunked, so a size limit cannot trust a header.
      const data = Buffer.from(body);
      req.write(data.subarray(0, data.length >> 1));
      req.end(data.subarray(data.length >> 1));
    } else req.end(body);
  });
}

export type CallOptions = { key?: string; body?: unknown; origin?: string; expect?: number[]; port?: number };
/**
 * What a seeding call answered, read as README documents it.
 */
// biome-ignore lint/suspicious/noExplicitAny: each seeding call reads the fields README documents for its answer
export type Seeded = any;

/** A seeding call that must succeed: through the public API, with the status it must answer. */
export async function call(
  method: string,
  path: string,
  { key, body, origin, expect = [200, 201], port = apiPort }: CallOptions = {},
): Promise<Seeded> {
  const headers: Headers = { "CF-Connecting-IP": "192.0.2.1" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (origin) headers.Origin = origin;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await send({ method, path, headers, body: body === undefined ? undefined : JSON.stringify(body), port });
  if (res.error !== undefined || !expect.includes(res.status)) {
    throw new Error(`seeding ${method} ${path}: ${res.error ?? `${res.status} ${res.text.slice(0, 300)}`}`);
  }
  return JSON.parse(res.text);
}

// ---------------------------------------------------------------------------------------------------------------------
// The world: made through the public API, as a customer would.

/** Two accounts with keys of every kind, users, agents and handshake tokens. */
async function seed() {
  const provision = (body: object) => call("POST", "/v1/accounts", { key: OPERATOR_TOKEN, body });
  const a = await provision({
    name: "Acme",
    keyPrefix: "acme",
    membersCanCreateKeys: true,
    rateLimit: WIDE,
    admin: { email: "ops@acme.example" },
  });
  // One account of each key format: Acme's keys are checksummed (the default), Globex's plain.
  const b = await provision({ name: "Globex", keyFormat: "plain", rateLimit: WIDE, admin: { email: "ops@globex.example" } });
  const rootA = a.key.key;
  const rootB = b.key.key;
  const newKey = (root: string, body: object) => call("POST", "/v1/api-keys", { key: root, body });

  // The keys most requests use carry their own limit: a fuzzed PATCH /v1/account can lower the account's default, and
  // the run should keep reaching the handlers rather than stall on 429s.
  const admin = await newKey(rootA, { name: "fuzz admin", rateLimit: WIDE });
  const member = await call("POST", "/v1/users", { key: rootA, body: { email: "member@acme.example", role: "member" } });
  const spareUser = await call("POST", "/v1/users", { key: rootA, body: { email: "spare@acme.example", role: "member" } });
  const memberKey = await newKey(rootA, { name: "member", ownerId: member.id, rateLimit: WIDE });
  // The spare user is the one the fuzzer disables, demotes and promotes; its key shows what that does to a key.
  const spareUserKey = await newKey(rootA, { name: "spare", ownerId: spareUser.id, rateLimit: WIDE });
  const scoped = await newKey(rootA, { name: "agent-inbox", mailboxIds: ["mbx_123"], rateLimit: WIDE });
  const revoked = await newKey(rootA, { name: "revoked", rateLimit: WIDE });
  await call("DELETE", `/v1/api-keys/${revoked.id}`, { key: rootA });
  // Expires a few seconds into the run, so it is seen both working and expired.
  const expiring = await newKey(rootA, { name: "expiring", expiresAt: new Date(Date.now() + 5_000).toISOString(), rateLimit: WIDE });
  // The one key meant to run out: 429 rate_limited with Retry-After.
  const low = await newKey(rootA, { name: "low", rateLimit: { limit: 5, windowSeconds: 3600 } });
  const disposable = [
    await newKey(rootA, { name: "disposable 1", rateLimit: WIDE }),
    await newKey(rootA, { name: "disposable 2", rateLimit: WIDE, expiresAt: "2099-01-01T00:00:00Z" }),
    await newKey(rootA, { name: "disposable 3", ownerId: member.id, rateLimit: WIDE }),
  ];
  const adminB = await newKey(rootB, { name: "fuzz admin", rateLimit: WIDE });
  const disposableB = await newKey(rootB, { name: "disposable", rateLimit: WIDE });

  const agentA = await call("POST", "/v1/agents", { key: rootA, body: { name: "Support", allowedOrigins: [WIDGET, LOCAL_WIDGET] } });
  const spareAgent = await call("POST", "/v1/agents", { key: rootA, body: { name: "Spare", allowedOrigins: [WIDGET] } });
  const agentB = await call("POST", "/v1/agents", { key: rootB, body: { name: "Globex", allowedOrigins: ["https://globex.example"] } });
  // Endpoints no event of the run reaches but tests (a loopback address that is not Keygate's own host, a port nothing
  // listens on): the fuzzer sends nothing out of this machine.
  const hook = { url: "https://127.0.0.2:9/keygate", events: ["webhook.test"] };
  const webhookA = await call("POST", "/v1/webhooks", { key: rootA, body: hook });
  const webhookB = await call("POST", "/v1/webhooks", { key: rootB, body: hook });
  const userHash = createHmac("sha256", agentA.identitySecret).update("user-42").digest("hex");
  const handshake = (body: object, extra: CallOptions): Promise<string> =>
    call("POST", "/v1/handshake", { body, ...extra }).then((r) => r.token);
  const tokens = {
    browser: await handshake({ agentId: agentA.id }, { origin: WIDGET }),
    identified: await handshake({ agentId: agentA.id, userId: "user-42", userHash }, { origin: LOCAL_WIDGET }),
    server: await handshake({ agentId: agentA.id, userId: "user-7" }, { key: admin.key }),
  };

  const keys = {
    admin,
    root: a.key,
    member: memberKey,
    scoped,
    revoked,
    expiring,
    low,
    disposable: disposable[0],
    spareUser: spareUserKey,
    otherAccount: adminB,
  };
  return {
    keys,
    tokens,
    agentA,
    otherAgentId: agentB.id,
    userHash,
    accounts: { a: a.account.id, b: b.account.id },
    users: { admin: a.admin.id, member: member.id, spare: spareUser.id, otherAccount: b.admin.id },
    // Ids the fuzzer reads; the keys, users and agents most requests rely on stay out of the lists it revokes,
    // rotates, disables or demotes, so that the run keeps exercising handlers instead of 401s.
    keyIds: [admin.id, a.key.id, memberKey.id, spareUserKey.id, scoped.id, revoked.id, expiring.id, low.id, ...disposable.map((k) => k.id)],
    changeableKeyIds: [revoked.id, expiring.id, ...disposable.map((k) => k.id)],
    changeableUserIds: [spareUser.id],
    agentIds: [agentA.id, spareAgent.id],
    webhookIds: [webhookA.id],
    changeableAgentIds: [spareAgent.id],
    otherAccountIds: [b.account.id, b.key.id, adminB.id, disposableB.id, b.admin.id, agentB.id, webhookB.id],
    secrets: [
      rootB,
      ...Object.values(keys).map((k) => k.key),
      ...disposable.slice(1).map((k) => k.key),
      disposableB.key,
      agentA.identitySecret,
      spareAgent.identitySecret,
      agentB.identitySecret,
    ],
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Credentials: every way a request can present one, or fail to.

/** How a request presents a credential: headers, and a query string. */
type Presented = { headers?: Headers; query?: string };
type Kinds = Record<string, () => Presented>;

/** name -> () => {headers, query}; the functions draw fresh randomness for the kinds that vary per request. */
function credentialKinds(w: World): Kinds {
  const bearer = (value: string): Presented => ({ headers: { Authorization: value } });
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: "keygate",
    aud: "keygate:chat",
    sub: "user-9",
    agt: w.agentA.id,
    acc: w.accounts.a,
    jti: "j1",
    iat: now,
    exp: now + 600,
  };
  const header = { alg: "HS256", kid: "fuzz", typ: "keygate-chat+jwt" };
  // Tokens signed with the real secret whose claims Keygate must refuse (expired, issued in the future, living too long,
  // no jti, wrong typ or kid, another account's agent, claims of the wrong type, over 8 KB), then forged and broken ones.
  const crafted = [
    jwt(header, { ...claims, iat: now - 7200, exp: now - 3600, origin: WIDGET }),
    jwt(header, { ...claims, iat: now + 3600, exp: now + 4000 }),
    jwt(header, { ...claims, exp: now + 200_000 }),
    jwt(header, { ...claims, jti: undefined }),
    jwt({ ...header, typ: "JWT" }, claims),
    jwt({ ...header, kid: "unknown" }, claims),
    jwt({ ...header, kid: { nested: 1 } }, claims),
    jwt(header, { ...claims, agt: w.otherAgentId }),
    jwt(header, { ...claims, agt: 42, acc: null }),
    jwt(header, { ...claims, origin: ["https://evil.example"] }),
    jwt(header, { ...claims, sub: "s".repeat(9000) }),
    jwt(header, claims, "not-the-signing-secret-0123456789abcdef"),
    `${base64url({ alg: "none", typ: "keygate-chat+jwt" })}.${base64url(claims)}.`,
    `${base64url(header)}.${base64url("not json")}.${base64url("sig")}`,
    `${base64url("[]")}.${base64url(claims)}.x`,
    "eyJ",
    "a.b",
    "a.b.c.d",
    "....",
  ];
  const goodKey = w.keys.admin.key;
  const garbage = [
    "",
    "Bearer",
    "Bearer ",
    "Basic Zm9vOmJhcg==",
    "Bearer a b",
    `Bearer ${"x".repeat(5000)}`,
    `Bearer ${utf8Bytes("é😀\u202e")}`,
    `Token ${goodKey}`,
    `bearer ${goodKey}`,
    `Bearer\t${goodKey}`,
    `Bearer   ${goodKey}   `,
    "Bearer null",
    "Bearer sk_",
    `Bearer acme_${"g".repeat(64)}`,
    `Bearer acme_${"0".repeat(63)}`,
    `Bearer acme_${"0".repeat(65)}`,
    `Bearer ${goodKey.toUpperCase()}`,
    `Bearer ${"a".repeat(13)}_${"0".repeat(64)}`,
    `Bearer ${goodKey},${goodKey}`,
  ];
  const kinds: Kinds = {
    none: () => ({}),
    garbageAuthorization: () => bearer(pick(garbage)),
    garbageApiKey: () => ({ headers: { "X-API-Key": pick([" ", "null", "x".repeat(5000), utf8Bytes("😀"), `${goodKey}x`, "acme_"]) } }),
    garbageQuery: () => ({
      query: `userApiToken=${pick(["", "%ZZ", "%00", encodeURIComponent("😀"), "x".repeat(3000), `${goodKey}%20`])}`,
    }),
    unknownKey: () => ({ headers: { "X-API-Key": `${pick(["acme", "sk", "zz9"])}_${hex(64)}` } }),
    flippedKey: () => bearer(`Bearer ${flip(goodKey, 5 + int(goodKey.length - 5))}`),
    operator: () => bearer(`Bearer ${OPERATOR_TOKEN}`),
    operatorFlipped: () => bearer(`Bearer ${flip(OPERATOR_TOKEN)}`),
    verify: () => bearer(`Bearer ${VERIFY_TOKEN}`),
    browserToken: () => ({ headers: { Authorization: `Bearer ${w.tokens.browser}`, Origin: WIDGET } }),
    identifiedToken: () => ({ headers: { Authorization: `Bearer ${w.tokens.identified}`, Origin: LOCAL_WIDGET } }),
    serverToken: () => bearer(`Bearer ${w.tokens.server}`),
    flippedToken: () => {
      const token = pick([w.tokens.browser, w.tokens.server]);
      return { headers: { Authorization: `Bearer ${flip(token, 10 + int(token.length - 10))}`, Origin: WIDGET } };
    },
    truncatedToken: () => bearer(`Bearer ${w.tokens.server.slice(0, -1 - int(20))}`),
    craftedToken: () => ({ headers: { Authorization: `Bearer ${pick(crafted)}`, Origin: pick([WIDGET, "https://evil.example"]) } }),
    bothHeadersDifferent: () => ({ headers: { Authorization: `Bearer ${goodKey}`, "X-API-Key": w.keys.member.key } }),
    bothHeadersSame: () => ({ headers: { Authorization: `Bearer ${goodKey}`, "X-API-Key": goodKey } }),
    tokenAndKey: () => ({ headers: { Authorization: `Bearer ${w.tokens.server}`, "X-API-Key": goodKey } }),
    headerAndQuery: () => ({ headers: { "X-API-Key": w.keys.member.key }, query: `userApiToken=${goodKey}` }),
  };
  for (const [name, { key }] of Object.entries(w.keys)) {
    kinds[`${name}Key/bearer`] = () => bearer(`Bearer ${key}`);
    kinds[`${name}Key/x-api-key`] = () => ({ headers: { "X-API-Key": key } });
    kinds[`${name}Key/query`] = () => ({ query: `userApiToken=${key}` });
  }
  return kinds;
}

// ---------------------------------------------------------------------------------------------------------------------
// Path ids and query strings.

/**
 * Ids no account has, of a plausible shape or of no shape at all. Non-ASCII goes percent-encoded: raw bytes above 0x7f
 * in a path are refused by the local runtime's HTTP parser (400 text/plain "invalid URI") before the worker sees them.
 */
const ABSURD_IDS = [
  "a".repeat(3000),
  "key_%F0%9F%98%80",
  "%E2%80%AE%F0%9F%98%80",
  "%C3%BC%C3%BF",
  "%FC%FF",
  "%2e%2e",
  "..",
  ".",
  "%2F",
  "a%2Fb",
  "%00",
  "%ZZ",
  "%C0%AF",
  "%25",
  "%EF%BB%BF",
  "'%20OR%20'1'='1",
  "__proto__",
  "constructor",
  "null",
  "*",
  "-1",
  "1e309",
  "key_",
];

/** A path id: real ids of the kind (`pool`) most of the time, else other kinds, the other account's, random or absurd. */
function pathId(w: World, pool: readonly string[]): string {
  const roll = random();
  if (roll < 0.55) return pick(pool);
  if (roll < 0.65) return pick([...w.keyIds, ...w.agentIds, w.users.member, w.users.admin, w.accounts.a]);
  if (roll < 0.78) return pick(w.otherAccountIds);
  if (roll < 0.88) return `${pick(["key", "usr", "agt", "acc"])}_${hex(24)}`;
  return pick(ABSURD_IDS);
}

/** `?limit=&cursor=` as clients send them, and as they should not. */
function pageQuery() {
  const cursors = [
    "",
    "%%%",
    "%ZZ",
    "W10",
    base64url(["2026-01-01T00:00:00.000Z", "key_000000000000000000000000"]),
    base64url(["' OR 1=1 --", "x"]),
    base64url([1, 2]),
    base64url(null),
    base64url({ createdAt: "x", id: "y" }),
    base64url("garbage"),
    `${base64url(["9999-12-31T23:59:59.999Z", "zzz"])}==`,
    "x".repeat(3000),
    encodeURIComponent("😀"),
  ];
  const limits = ["0", "1", "2", "100", "101", "-1", "1.5", "abc", "", "1e2", "0x10", "%205", "999999999999999999999", "NaN", "Infinity"];
  const parts = [];
  if (chance(0.7)) parts.push(`limit=${pick(limits)}`);
  if (chance(0.5)) parts.push(`cursor=${pick(cursors)}`);
  if (chance(0.1)) parts.push(pick(["limit=1&limit=2", "cursor=a&cursor=b", "limit[]=1"]));
  return parts.join("&");
}

const JUNK_QUERIES = ["a=1", "%ZZ=1", "x=%00", `q=${"y".repeat(2000)}`, "__proto__[admin]=1", "limit=5", "&&&", "=", "userApiToken"];

// ---------------------------------------------------------------------------------------------------------------------
// Bodies: a valid body per route, then one field bent, or something that is not a valid body at all.

/** Values that break assumptions: wrong types, edges of ranges, odd strings and impossible or extreme dates. */
const ODD_VALUES = [
  null,
  "",
  " ",
  "\t\n",
  0,
  -1,
  -0.5,
  1.5,
  1e308,
  -1e308,
  2 ** 53 + 1,
  1e21,
  1_000_001,
  86_401,
  604_801,
  true,
  false,
  [],
  [null],
  [1, 2, 3],
  ["*", "*"],
  Array.from({ length: 101 }, (_, i) => `mbx_${i}`),
  {},
  { nested: { deeper: [1, { x: null }] } },
  "x".repeat(5000),
  "é✓😀\u0000\u202e",
  "\ud800",
  "﷽".repeat(300),
  "<script>alert(1)</script>",
  "' OR 1=1 --",
  "../../etc/passwd",
  "2027-02-30T00:00:00Z",
  "9999-12-31T23:59:59-05:00",
  "9999-12-31T23:59:59Z",
  "2027-01-01T24:00:00Z",
  "2027-01-01T00:00:60Z",
  "2027-01-01T00:00:00+24:00",
  "2027-01-01T00:00:00-23:59",
  "+275760-09-13T00:00:00Z",
  "0000-01-01T00:00:00+00:00",
  "2027-01-01T00:00:00.123456789Z",
  "2027-01-01",
  "1970-01-01T00:00:00Z",
  "*",
  "mailbox:mbx_1",
  "admin",
  WIDGET,
  "https://*.example",
  "http://evil.example",
  "agt_000000000000000000000000",
  "anon_x",
];

/** Field names a body should not have, or that mean something only elsewhere. */
const ODD_FIELDS = [
  "unknown",
  "mailboxId",
  "processIds",
  "fooIds",
  "Ids",
  "constructor",
  "toString",
  "role",
  "admin",
  "disabled",
  "key",
  "id",
];

const future = () => pick(["2099-01-01T00:00:00Z", "2030-06-01T12:00:00+02:00", "9999-12-31T23:59:59Z", "2031-02-28T23:59:59.5-08:00"]);
const someOf = (fields: Record<string, unknown>) => Object.fromEntries(Object.entries(fields).filter(() => chance(0.5)));
/** `externalId` and `meta` of an account or key: new, clashing with an earlier one, or cleared. */
const external = (prefix: string) => ({
  externalId: pick([`${prefix}_${int(1e9)}`, `${prefix}_1`, null]),
  meta: pick([{ plan: "pro", seats: int(100) }, { ключ: [1, null, true] }, null]),
});

/** Credits a key, an account or a plan may be given (never few enough to run out). */
const credits = () =>
  pick([
    null,
    { remaining: 1_000_000 },
    { remaining: 5000, refill: { amount: 5000, interval: "month", mode: "set", dayOfMonth: 28 } },
    { remaining: 100_000, refill: { amount: 10, interval: "hour", mode: "add" } },
  ]);

/**
 * Allowed addresses of a key or an account: lists that hold the fuzzer's own client addresses (10/8, 203.0.113.7,
 * 2001:db8::1), so later requests still reach the handlers, edge forms (bare addresses, /0, uppercase IPv6), blocks
 * that are refused (host bits set, IPv4-mapped, not an address, an empty list), or cleared.
 */
const allowedIps = () =>
  pick([
    null,
    null,
    ["10.0.0.0/8", "203.0.113.7", "2001:db8::/32"],
    ["0.0.0.0/0", "::/0"],
    ["10.0.0.0/8", "203.0.113.0/24", "2001:DB8:0:0::1", "2001:db8::1/128"],
    ["10.1.2.3/8"],
    ["::ffff:10.0.0.0/104"],
    ["10.0.0.0/33", "not-an-ip"],
    [],
  ]);

/** Every path to a value in a body: [["name"], ["rateLimit"], ["rateLimit", "limit"], ...]. */
function fieldPaths(value: unknown, prefix: string[] = []): string[][] {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return [];
  return Object.entries(value).flatMap(([k, v]) => [[...prefix, k], ...fieldPaths(v, [...prefix, k])]);
}

type Body = Record<string, unknown>;
/** The object at `path` inside `body`. */
const at = (body: Body, path: readonly string[]): Body => path.reduce((o: Body, k) => o[k] as Body, body);

/** The body with one thing wrong: a field of the wrong type or range, gone, wrapped, or an unknown field added. */
function mutate(body: Body): Body {
  const paths = fieldPaths(body);
  const roll = random();
  if (paths.length === 0 || roll < 0.25) {
    // An unknown field, at the top or inside a nested object; `__proto__` as a real own property, as JSON.parse makes it.
    const isObject = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v);
    const objects = [[], ...paths.filter((p) => isObject(at(body, p)))];
    const target = at(body, pick(objects));
    if (chance(0.15)) Object.defineProperty(target, "__proto__", { value: pick(ODD_VALUES), enumerable: true, writable: true });
    else target[pick(ODD_FIELDS)] = pick(ODD_VALUES);
    return body;
  }
  const path = pick(paths);
  const parent = at(body, path.slice(0, -1));
  const last = path[path.length - 1] as string;
  if (roll < 0.75) parent[last] = pick(ODD_VALUES);
  else if (roll < 0.9) delete parent[last];
  else parent[last] = chance(0.5) ? [parent[last]] : { value: parent[last] };
  return body;
}

const OVER_LIMIT = 16 * 1024 + 1;
/** Bodies that are not a JSON object, or not JSON, or too large: [summary, bytes]. */
const JUNK_BODIES: [string, string | Buffer][] = [
  ["truncated JSON", "{"],
  ["bad JSON", '{"name":}'],
  ["single quotes", "{'name':'x'}"],
  ["trailing comma", '{"name":"x",}'],
  ["array", "[1,2]"],
  ["string", '"text"'],
  ["null", "null"],
  ["number", "42"],
  ["empty", ""],
  ["whitespace", " \n\t "],
  ["BOM + {}", "\ufeff{}"],
  ["NUL byte", "\u0000"],
  ["invalid UTF-8", Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d])],
  ["duplicate keys", '{"name":"a","name":"b"}'],
  ["1e400", '{"name":"x","rateLimit":{"limit":1e400,"windowSeconds":60},"gracePeriodSeconds":1e400}'],
  ["-0", '{"limit":-0,"gracePeriodSeconds":-0,"tokenTtlSeconds":-0}'],
  ["__proto__ object", '{"__proto__":{"admin":true},"name":"x"}'],
  ["deep arrays", `${"[".repeat(8000)}${"]".repeat(8000)}`],
  ["deep objects", `${'{"a":'.repeat(2700)}1${"}".repeat(2700)}`],
  ["exactly 16 KiB", `{"name":"${"x".repeat(16 * 1024 - 11)}"}`],
  ["16 KiB + 1", `{"name":"${"x".repeat(OVER_LIMIT - 11)}"}`],
  ["16 KiB + 1 of unicode", `{"name":"${"é".repeat((OVER_LIMIT - 11) / 2 + 1)}"}`],
  ["64 KiB", `{"name":"${"x".repeat(64 * 1024)}"}`],
];
const CONTENT_TYPES = [
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/json; charset=utf-16",
  "application/jsonx",
  "APPLICATION/JSON",
  "application/json;",
  "application/json ; charset=utf-8",
  "application/json;charset",
  "application/json; charset=utf-8;",
  "application/problem+json",
  null,
];

/**
 * Who may have a 2xx answer of an operation, by the fuzzer's own reading of README (never by what the served document
 * says of its security): `none` anyone; `key` any valid API key or access token; `chat` those and handshake tokens;
 * `full` full-access keys; `admin` full-access keys of admins; `person` a person's access token only; `cookie` the
 * dashboard's session cookie only; `operator` and `verify` the deployment's tokens. The served document lists the
 * operations; an operation it lists that has no rule here, or a rule for one it no longer lists, fails the run.
 */
type Needs = "none" | "key" | "chat" | "full" | "admin" | "person" | "cookie" | "operator" | "verify";
const RIGHTS: Record<string, Needs> = {
  "GET /health": "none",
  "GET /openapi.json": "none",
  "GET /docs": "none",
  "GET /docs/redoc.standalone.js": "none",
  "GET /.well-known/jwks.json": "none",
  "GET /demo/widget": "none",
  "GET /demo/{file}": "none",
  "POST /v1/accounts": "operator",
  "PATCH /v1/accounts/{id}": "operator",
  "POST /v1/accounts/{id}/recovery-key": "operator",
  "GET /v1/accounts/{id}/credits/ledger": "operator",
  "POST /v1/accounts/{id}/credits": "operator",
  "PUT /v1/plans/{id}": "operator",
  "GET /v1/plans": "operator",
  "GET /v1/plans/{id}": "operator",
  "GET /v1/whoami": "key",
  "GET /v1/account": "full",
  "PATCH /v1/account": "admin",
  "GET /v1/account/usage": "full",
  "GET /v1/account/key-hygiene": "full",
  "GET /v1/account/credits/ledger": "admin",
  "POST /v1/account/credits": "admin",
  "POST /v1/api-keys": "full",
  "GET /v1/api-keys": "full",
  "GET /v1/api-keys/{id}": "full",
  "PATCH /v1/api-keys/{id}": "full",
  "DELETE /v1/api-keys/{id}": "full",
  "POST /v1/api-keys/{id}/rotate": "full",
  "GET /v1/api-keys/{id}/usage": "full",
  "GET /v1/api-keys/{id}/credits/ledger": "full",
  "POST /v1/api-keys/{id}/credits": "admin",
  "POST /v1/users": "admin",
  "GET /v1/users": "admin",
  "GET /v1/users/{id}": "admin",
  "PATCH /v1/users/{id}": "admin",
  "POST /v1/users/{id}/invitation": "admin",
  "GET /v1/users/{id}/credits": "full",
  "POST /v1/users/{id}/credits": "admin",
  "GET /v1/users/{id}/credits/ledger": "full",
  "POST /v1/agents": "admin",
  "GET /v1/agents": "admin",
  "GET /v1/agents/{id}": "admin",
  "PATCH /v1/agents/{id}": "admin",
  "POST /v1/agents/{id}/identity-secret": "admin",
  "POST /v1/leaks": "none",
  // GitHub's signature is the credential; without SECRET_SCANNING_KEYS the endpoint is 404.
  "POST /v1/leaks/github": "none",
  "POST /v1/webhooks": "admin",
  "GET /v1/webhooks": "admin",
  "GET /v1/webhooks/{id}": "admin",
  "PATCH /v1/webhooks/{id}": "admin",
  "DELETE /v1/webhooks/{id}": "admin",
  "POST /v1/webhooks/{id}/secret": "admin",
  "POST /v1/webhooks/{id}/test": "admin",
  "GET /v1/webhooks/{id}/deliveries": "admin",
  "POST /v1/webhooks/{id}/deliveries/{deliveryId}/retry": "admin",
  "POST /v1/handshake": "none",
  "POST /v1/chat/messages": "chat",
  "POST /v1/keys/verify": "verify",
  "POST /v1/credits/settle": "verify",
  "PUT /v1/resource-owners/{type}/{id}": "verify",
  "GET /v1/resource-owners/{type}/{id}": "verify",
  "DELETE /v1/resource-owners/{type}/{id}": "verify",
  // A password, a refresh token or an invitation in the body is the credential.
  "POST /v1/auth/login": "none",
  "POST /v1/auth/refresh": "none",
  "POST /v1/auth/accept-invitation": "none",
  "POST /v1/auth/logout": "person",
  "POST /v1/auth/password": "person",
  "GET /v1/auth/sessions": "full",
  "DELETE /v1/auth/sessions/{id}": "full",
  // The dashboard: its entry (a redirect), files, login and invitation forms, and logout are open; the rest needs its cookie.
  "GET /dashboard": "none",
  "GET /dashboard/dashboard.css": "none",
  "GET /dashboard/dashboard.js": "none",
  "GET /dashboard/login": "none",
  "POST /dashboard/login": "none",
  "POST /dashboard/logout": "none",
  "GET /dashboard/accept-invitation": "none",
  "POST /dashboard/accept-invitation": "none",
  "GET /dashboard/keys": "cookie",
  "POST /dashboard/keys": "cookie",
  "GET /dashboard/keys/{id}/revoke": "cookie",
  "POST /dashboard/keys/{id}/revoke": "cookie",
  "GET /dashboard/keys/{id}/rotate": "cookie",
  "POST /dashboard/keys/{id}/rotate": "cookie",
  "POST /dashboard/keys/{id}/credits": "cookie",
  "GET /dashboard/keys/{id}/ledger": "cookie",
  "GET /dashboard/usage": "cookie",
  "GET /dashboard/usage/ledger": "cookie",
  "GET /dashboard/users": "cookie",
  "POST /dashboard/users": "cookie",
  "GET /dashboard/users/{id}": "cookie",
  "POST /dashboard/users/{id}": "cookie",
  "POST /dashboard/users/{id}/disable": "cookie",
  "POST /dashboard/users/{id}/enable": "cookie",
  "POST /dashboard/users/{id}/invitation": "cookie",
  "GET /dashboard/agents": "cookie",
  "POST /dashboard/agents": "cookie",
  "GET /dashboard/agents/{id}": "cookie",
  "POST /dashboard/agents/{id}": "cookie",
  "POST /dashboard/agents/{id}/disable": "cookie",
  "POST /dashboard/agents/{id}/enable": "cookie",
  "GET /dashboard/webhooks": "cookie",
  "POST /dashboard/webhooks": "cookie",
  "GET /dashboard/webhooks/{id}": "cookie",
  "POST /dashboard/webhooks/{id}/test": "cookie",
  "POST /dashboard/webhooks/{id}/secret": "cookie",
  "POST /dashboard/webhooks/{id}/disable": "cookie",
  "POST /dashboard/webhooks/{id}/enable": "cookie",
  "GET /dashboard/webhooks/{id}/delete": "cookie",
  "POST /dashboard/webhooks/{id}/delete": "cookie",
  "POST /dashboard/webhooks/{id}/deliveries/{deliveryId}/retry": "cookie",
  "GET /dashboard/activity": "cookie",
};

/** What a credential kind is at most, by the fuzzer's own knowledge of what it seeded (a user it may promote counts as an admin). */
type Holder = "nobody" | "operator" | "verify" | "token" | "scoped" | "member" | "admin";
const HOLDERS: Record<string, Holder> = {
  operator: "operator",
  verify: "verify",
  browserToken: "token",
  identifiedToken: "token",
  serverToken: "token",
  // Some of these spell the admin's key in ways Keygate may read (`bearer <key>`, blanks around it): judged as that key.
  garbageAuthorization: "admin",
  garbageApiKey: "admin",
  garbageQuery: "admin",
  // Two credentials at once: judged as the stronger.
  bothHeadersDifferent: "admin",
  bothHeadersSame: "admin",
  tokenAndKey: "admin",
  headerAndQuery: "admin",
};
const KEY_HOLDERS: Record<string, Holder> = {
  admin: "admin",
  root: "admin",
  member: "member",
  scoped: "scoped",
  revoked: "nobody",
  expiring: "admin",
  low: "admin",
  disposable: "admin",
  spareUser: "admin",
  otherAccount: "admin",
};
function holderOf(credential: string): Holder {
  const key = /^(\w+)Key\//.exec(credential)?.[1];
  return (key === undefined ? HOLDERS[credential] : KEY_HOLDERS[key]) ?? "nobody";
}
const MAY: Record<Needs, readonly Holder[]> = {
  none: ["nobody", "operator", "verify", "token", "scoped", "member", "admin"],
  key: ["scoped", "member", "admin"],
  chat: ["token", "scoped", "member", "admin"],
  full: ["member", "admin"],
  admin: ["admin"],
  person: [],
  cookie: [],
  operator: ["operator"],
  verify: ["verify"],
};

type World = Awaited<ReturnType<typeof seed>>;
/** A route the fuzzer sends to: its operation in the served document (none for paths outside it) and how to fill it. */
type Route = {
  name: string;
  operation?: string;
  method: string;
  path: (w: World) => string;
  /** The credential kinds that usually reach it (most requests use one of these). */
  auth?: string[];
  query?: () => string;
  body?: (w: World) => Body;
  origin?: string[];
  preflight?: boolean;
};

/**
 * The operations of README's endpoint table, plus the OpenAPI document and its reference page: method, path (ids drawn by
 * pathId), the credentials that usually reach them, page queries, and a generator of valid bodies for those that take one.
 * Every other operation of the served document is sent too, with ids from every pool and no body of its own.
 */
const ROUTES: Route[] = [
  { name: "health", operation: "GET /health", method: "GET", path: () => "/health", auth: ["none"] },
  { name: "docs", operation: "GET /openapi.json", method: "GET", path: () => "/openapi.json", auth: ["none"] },
  { name: "docs", operation: "GET /docs", method: "GET", path: () => "/docs", auth: ["none"] },
  {
    name: "provision",
    operation: "POST /v1/accounts",
    method: "POST",
    path: () => "/v1/accounts",
    auth: ["operator"],
    body: () => ({
      name: pick(["Initech", "Umbrella GmbH", "Ünïcode Ltd"]),
      ...someOf({
        keyPrefix: pick(["fz", "fuzz9", "abcdefghijkl"]),
        keyFormat: pick(["checksummed", "plain", "hex", null]),
        membersCanCreateKeys: chance(0.5),
        rateLimit: { limit: 100, windowSeconds: 60 },
        maxRateLimit: pick([null, { limit: 10, windowSeconds: 60 }]),
        credits: credits(),
        ...external("cus"),
      }),
      admin: { email: `ops${int(1e9)}@fuzz.example` },
    }),
  },
  {
    name: "account-external",
    operation: "PATCH /v1/accounts/{id}",
    method: "PATCH",
    path: (w) => `/v1/accounts/${pathId(w, [w.accounts.a])}`,
    auth: ["operator"],
    body: () => someOf({ ...external("cus"), plan: pick([null, "fuzz-plan", "no-such-plan"]), credits: credits(), userCredits: credits() }),
  },
  {
    name: "plan-put",
    operation: "PUT /v1/plans/{id}",
    method: "PUT",
    path: () => `/v1/plans/${pick(["fuzz-plan", "free", "Bad%20Id"])}`,
    auth: ["operator"],
    body: () => ({
      name: pick(["Free", "Pro"]),
      rateLimits: pick([
        [{ name: "minute", limit: 10, windowSeconds: 60 }],
        [
          { name: "minute", limit: 100, windowSeconds: 60 },
          { name: "day", limit: 1000, windowSeconds: 86_400, shared: "account" },
        ],
      ]),
      ...someOf({ credits: credits(), userCredits: credits() }),
    }),
  },
  { name: "plan-list", operation: "GET /v1/plans", method: "GET", path: () => "/v1/plans", auth: ["operator"] },
  {
    name: "plan-get",
    operation: "GET /v1/plans/{id}",
    method: "GET",
    path: () => `/v1/plans/${pick(["fuzz-plan", "free", "none-such"])}`,
    auth: ["operator"],
  },
  {
    name: "recovery",
    operation: "POST /v1/accounts/{id}/recovery-key",
    method: "POST",
    path: (w) => `/v1/accounts/${pathId(w, [w.accounts.a])}/recovery-key`,
    auth: ["operator"],
    body: (w) => pick([{}, { userId: w.users.admin }, { userId: w.users.member }, { userId: w.users.otherAccount }]),
  },
  {
    name: "whoami",
    operation: "GET /v1/whoami",
    method: "GET",
    path: () => "/v1/whoami",
    auth: ["adminKey/bearer", "memberKey/x-api-key", "scopedKey/bearer"],
  },
  {
    name: "account",
    operation: "GET /v1/account",
    method: "GET",
    path: () => "/v1/account",
    auth: ["adminKey/bearer", "memberKey/bearer", "scopedKey/x-api-key"],
  },
  {
    name: "key-hygiene",
    operation: "GET /v1/account/key-hygiene",
    method: "GET",
    path: () => "/v1/account/key-hygiene",
    auth: ["adminKey/bearer", "memberKey/bearer", "scopedKey/x-api-key"],
  },
  {
    name: "account-change",
    operation: "PATCH /v1/account",
    method: "PATCH",
    path: () => "/v1/account",
    auth: ["adminKey/bearer", "memberKey/bearer"],
    body: () =>
      someOf({
        rateLimit: pick([WIDE, { limit: 60, windowSeconds: 60 }]),
        maxRateLimit: pick([null, { limit: 1000, windowSeconds: 60 }]),
        membersCanCreateKeys: chance(0.8),
        // Rarely: a list applies to every key of the account without one, and refuses requests from no address.
        ...(chance(0.3) ? { allowedIps: allowedIps() } : {}),
        keyFormat: pick(["checksummed", "plain", "Plain"]),
      }),
  },
  {
    name: "key-create",
    operation: "POST /v1/api-keys",
    method: "POST",
    path: () => "/v1/api-keys",
    auth: ["adminKey/bearer", "adminKey/x-api-key", "memberKey/bearer", "scopedKey/bearer"],
    body: (w) => ({
      name: pick(["ci", "agent-inbox", "ключ", "k".repeat(100)]),
      ...(chance(0.5)
        ? someOf({ scopes: pick([["*"], ["mailbox:mbx_1"], ["process:4de713a3", "project:p1"]]) })
        : someOf({ mailboxIds: ["mbx_2", "mbx_3"], processIds: ["4de713a3"] })),
      ...someOf({
        expiresAt: future(),
        ownerId: pick([w.users.member, w.users.admin]),
        rateLimit: { limit: 100, windowSeconds: 60 },
        credits: credits(),
        allowedIps: allowedIps(),
        ...external("si"),
      }),
    }),
  },
  {
    name: "key-change",
    operation: "PATCH /v1/api-keys/{id}",
    method: "PATCH",
    path: (w) => `/v1/api-keys/${pathId(w, w.keyIds)}`,
    auth: ["adminKey/bearer", "memberKey/bearer", "scopedKey/bearer"],
    body: () => someOf({ ...external("si"), allowedIps: allowedIps() }),
  },
  {
    name: "key-list",
    operation: "GET /v1/api-keys",
    method: "GET",
    path: () => "/v1/api-keys",
    query: pageQuery,
    auth: ["adminKey/bearer", "memberKey/x-api-key"],
  },
  {
    name: "key-read",
    operation: "GET /v1/api-keys/{id}",
    method: "GET",
    path: (w) => `/v1/api-keys/${pathId(w, w.keyIds)}`,
    auth: ["adminKey/bearer", "memberKey/bearer"],
  },
  {
    name: "key-ledger",
    operation: "GET /v1/api-keys/{id}/credits/ledger",
    method: "GET",
    path: (w) => `/v1/api-keys/${pathId(w, w.keyIds)}/credits/ledger`,
    query: pageQuery,
    auth: ["adminKey/bearer", "memberKey/bearer"],
  },
  {
    name: "account-ledger",
    operation: "GET /v1/account/credits/ledger",
    method: "GET",
    path: () => "/v1/account/credits/ledger",
    query: pageQuery,
    auth: ["adminKey/bearer", "memberKey/bearer"],
  },
  {
    name: "key-credits-adjust",
    operation: "POST /v1/api-keys/{id}/credits",
    method: "POST",
    path: (w) => `/v1/api-keys/${pathId(w, w.keyIds)}/credits`,
    auth: ["adminKey/bearer", "memberKey/bearer", "scopedKey/bearer"],
    body: () => ({
      operation: pick(["add", "subtract", "set", "double"]),
      amount: pick([0, 1, 500, -1, 1.5, 10 ** 13]),
      ...someOf({ reason: "fuzz" }),
    }),
  },
  {
    name: "pool-credits-adjust",
    operation: "POST /v1/accounts/{id}/credits",
    method: "POST",
    path: (w) => `/v1/accounts/${pathId(w, [w.accounts.a, w.accounts.b])}/credits`,
    auth: ["operator"],
    body: () => ({ operation: pick(["add", "subtract", "set"]), amount: pick([0, 1, 500, -1]), ...someOf({ reason: "fuzz" }) }),
  },
  {
    name: "own-pool-credits-adjust",
    operation: "POST /v1/account/credits",
    method: "POST",
    path: () => "/v1/account/credits",
    auth: ["adminKey/bearer", "memberKey/bearer"],
    body: () => ({ operation: pick(["add", "subtract", "set"]), amount: pick([0, 1, 500, -1]), ...someOf({ reason: "fuzz" }) }),
  },
  {
    name: "key-verify",
    operation: "POST /v1/keys/verify",
    method: "POST",
    path: () => "/v1/keys/verify",
    auth: ["verify"],
    body: (w) => ({
      key: pick([w.keys.admin.key, w.keys.member.key, w.keys.scoped.key, w.keys.revoked.key, "acme_nope"]),
      ...someOf({
        resource: pick(["mailbox:mbx_123", "mailbox:mbx_9"]),
        clientIp: pick(["203.0.113.7", "10.9.8.7", "2001:db8::1", "::ffff:10.0.0.1", "10.0.0.1/8", "fe80::1%eth0", "", "not-an-ip"]),
      }),
    }),
  },
  {
    name: "credits-settle",
    operation: "POST /v1/credits/settle",
    method: "POST",
    path: () => "/v1/credits/settle",
    auth: ["verify"],
    body: (w) =>
      someOf({
        requestId: pick(["req_nothing", ""]),
        used: pick([0, 37, -1]),
        accountId: w.accounts.a,
        keyId: pick(w.keyIds),
        userId: pick([w.users.member, w.users.admin]),
      }),
  },
  {
    name: "user-credits",
    operation: "GET /v1/users/{id}/credits",
    method: "GET",
    path: (w) => `/v1/users/${pathId(w, [w.users.member, w.users.admin])}/credits`,
    auth: ["adminKey/bearer", "memberKey/bearer", "scopedKey/bearer"],
  },
  {
    name: "user-credits-adjust",
    operation: "POST /v1/users/{id}/credits",
    method: "POST",
    path: (w) => `/v1/users/${pathId(w, [w.users.member, w.users.admin])}/credits`,
    auth: ["adminKey/bearer", "memberKey/bearer"],
    body: () => ({ operation: pick(["add", "subtract", "set"]), amount: pick([0, 1, 500, -1]), ...someOf({ reason: "fuzz" }) }),
  },
  {
    name: "user-ledger",
    operation: "GET /v1/users/{id}/credits/ledger",
    method: "GET",
    path: (w) => `/v1/users/${pathId(w, [w.users.member, w.users.admin])}/credits/ledger`,
    query: pageQuery,
    auth: ["adminKey/bearer", "memberKey/bearer"],
  },
  {
    name: "operator-ledger",
    operation: "GET /v1/accounts/{id}/credits/ledger",
    method: "GET",
    path: (w) => `/v1/accounts/${pathId(w, [w.accounts.a, w.accounts.b])}/credits/ledger`,
    query: pageQuery,
    auth: ["operator"],
  },
  {
    name: "key-revoke",
    operation: "DELETE /v1/api-keys/{id}",
    method: "DELETE",
    path: (w) => `/v1/api-keys/${pathId(w, w.changeableKeyIds)}`,
    auth: ["adminKey/bearer", "memberKey/bearer"],
  },
  {
    name: "key-rotate",
    operation: "POST /v1/api-keys/{id}/rotate",
    method: "POST",
    path: (w) => `/v1/api-keys/${pathId(w, w.changeableKeyIds)}/rotate`,
    auth: ["adminKey/bearer", "memberKey/bearer"],
    body: () =>
      someOf({
        gracePeriodSeconds: pick([0, 60, 604_800]),
        rateLimit: { limit: 50, windowSeconds: 60 },
        credits: credits(),
        allowedIps: allowedIps(),
      }),
  },
  {
    name: "leak-report",
    operation: "POST /v1/leaks",
    method: "POST",
    path: () => "/v1/leaks",
    auth: ["none"],
    body: () => someOf({ key: pick(["rm_0123", "", "x".repeat(2000)]), url: pick(["https://gist.example/x", "javascript:alert(1)"]) }),
  },
  {
    name: "webhook-create",
    operation: "POST /v1/webhooks",
    method: "POST",
    path: () => "/v1/webhooks",
    auth: ["adminKey/bearer", "memberKey/bearer"],
    body: () => ({
      url: pick(["https://127.0.0.2:9/a", "http://127.0.0.2:9/b", "https://u:p@127.0.0.2:9/c", "notaurl"]),
      events: pick([["webhook.test"], ["*"], ["api_key.eaten"], []]),
      ...someOf({ description: "fuzz", ed25519: chance(0.5) }),
    }),
  },
  {
    name: "webhook-list",
    operation: "GET /v1/webhooks",
    method: "GET",
    path: () => "/v1/webhooks",
    query: pageQuery,
    auth: ["adminKey/bearer"],
  },
  {
    name: "webhook-read",
    operation: "GET /v1/webhooks/{id}",
    method: "GET",
    path: (w) => `/v1/webhooks/${pathId(w, w.webhookIds)}`,
    auth: ["adminKey/bearer", "memberKey/bearer"],
  },
  {
    name: "webhook-change",
    operation: "PATCH /v1/webhooks/{id}",
    method: "PATCH",
    path: (w) => `/v1/webhooks/${pathId(w, w.webhookIds)}`,
    auth: ["adminKey/bearer"],
    body: () => someOf({ events: pick([["webhook.test"], ["nope"]]), description: pick([null, "x"]), disabled: chance(0.5) }),
  },
  {
    name: "webhook-delete",
    operation: "DELETE /v1/webhooks/{id}",
    method: "DELETE",
    path: (w) => `/v1/webhooks/${pathId(w, w.otherAccountIds)}`,
    auth: ["adminKey/bearer"],
  },
  {
    name: "webhook-secret",
    operation: "POST /v1/webhooks/{id}/secret",
    method: "POST",
    path: (w) => `/v1/webhooks/${pathId(w, w.webhookIds)}/secret`,
    auth: ["adminKey/bearer", "memberKey/bearer"],
  },
  {
    name: "webhook-test",
    operation: "POST /v1/webhooks/{id}/test",
    method: "POST",
    path: (w) => `/v1/webhooks/${pathId(w, w.webhookIds)}/test`,
    auth: ["adminKey/bearer"],
  },
  {
    name: "webhook-deliveries",
    operation: "GET /v1/webhooks/{id}/deliveries",
    method: "GET",
    path: (w) => `/v1/webhooks/${pathId(w, w.webhookIds)}/deliveries`,
    query: pageQuery,
    auth: ["adminKey/bearer"],
  },
  {
    name: "webhook-retry",
    operation: "POST /v1/webhooks/{id}/deliveries/{deliveryId}/retry",
    method: "POST",
    path: (w) => `/v1/webhooks/${pathId(w, w.webhookIds)}/deliveries/${pick(["dlv_none", "x"])}/retry`,
    auth: ["adminKey/bearer"],
  },
  {
    name: "agent-create",
    operation: "POST /v1/agents",
    method: "POST",
    path: () => "/v1/agents",
    auth: ["adminKey/bearer", "memberKey/bearer"],
    body: () => ({
      name: pick(["Support", "Verkauf ☎"]),
      allowedOrigins: pick([[WIDGET], [LOCAL_WIDGET, "https://shop.example:8443"], ["http://127.0.0.1:3000"]]),
      ...someOf({ tokenTtlSeconds: pick([60, 3600, 86_400]) }),
    }),
  },
  { name: "agent-list", operation: "GET /v1/agents", method: "GET", path: () => "/v1/agents", query: pageQuery, auth: ["adminKey/bearer"] },
  {
    name: "agent-read",
    operation: "GET /v1/agents/{id}",
    method: "GET",
    path: (w) => `/v1/agents/${pathId(w, w.agentIds)}`,
    auth: ["adminKey/bearer", "memberKey/bearer"],
  },
  {
    name: "agent-change",
    operation: "PATCH /v1/agents/{id}",
    method: "PATCH",
    path: (w) => `/v1/agents/${pathId(w, w.changeableAgentIds)}`,
    auth: ["adminKey/bearer"],
    body: () =>
      someOf({
        name: "Spare 2",
        allowedOrigins: pick([[WIDGET], [WIDGET, LOCAL_WIDGET]]),
        tokenTtlSeconds: pick([60, 600]),
        disabled: chance(0.5),
      }),
  },
  {
    name: "agent-identity-secret",
    operation: "POST /v1/agents/{id}/identity-secret",
    method: "POST",
    path: (w) => `/v1/agents/${pathId(w, w.agentIds)}/identity-secret`,
    auth: ["adminKey/bearer"],
  },
  {
    name: "handshake",
    operation: "POST /v1/handshake",
    method: "POST",
    path: () => "/v1/handshake",
    auth: ["none", "none", "adminKey/bearer", "memberKey/bearer"],
    origin: [WIDGET, LOCAL_WIDGET],
    body: (w) =>
      pick([
        { agentId: w.agentA.id },
        { agentId: w.agentA.id, userId: "user-42", userHash: w.userHash },
        { agentId: w.agentA.id, userId: "user-7" },
        { agentId: pick(w.agentIds) },
      ]),
  },
  {
    name: "chat",
    operation: "POST /v1/chat/messages",
    method: "POST",
    path: () => "/v1/chat/messages",
    auth: ["browserToken", "identifiedToken", "serverToken", "adminKey/bearer", "scopedKey/x-api-key"],
    body: () => ({ message: pick(["hello", "héllo wörld 😀", "where is my parcel?"]) }),
  },
  {
    name: "preflight",
    method: "OPTIONS",
    path: () => pick(["/v1/handshake", "/v1/chat/messages"]),
    auth: ["none"],
    origin: [WIDGET, LOCAL_WIDGET],
    preflight: true,
  },
  {
    name: "demo",
    operation: "GET /demo/widget",
    method: "GET",
    path: (w) => {
      const agentId = pick([w.agentA.id, "agt_x", "%3Cb%3E", "", "%22%3E%3Cscript%3E"]);
      return `/demo/widget?agent=${agentId}&api=${pick(["https://evil.example", "javascript:alert(1)", ""])}`;
    },
    auth: ["none"],
  },
  {
    name: "user-create",
    operation: "POST /v1/users",
    method: "POST",
    path: () => "/v1/users",
    auth: ["adminKey/bearer", "memberKey/bearer"],
    body: () => ({
      email: pick([`user${int(1e9)}@acme.example`, "member@acme.example", "MEMBER@ACME.EXAMPLE"]),
      role: pick(["member", "admin"]),
    }),
  },
  { name: "user-list", operation: "GET /v1/users", method: "GET", path: () => "/v1/users", query: pageQuery, auth: ["adminKey/bearer"] },
  {
    name: "user-read",
    operation: "GET /v1/users/{id}",
    method: "GET",
    path: (w) => `/v1/users/${pathId(w, Object.values(w.users))}`,
    auth: ["adminKey/bearer", "memberKey/bearer"],
  },
  {
    name: "user-change",
    operation: "PATCH /v1/users/{id}",
    method: "PATCH",
    path: (w) => `/v1/users/${pathId(w, w.changeableUserIds)}`,
    auth: ["adminKey/bearer", "memberKey/bearer"],
    body: () => someOf({ role: pick(["member", "admin"]), disabled: chance(0.3) }),
  },
  {
    name: "unknown-path",
    method: "GET",
    path: () =>
      pick([
        "/",
        "/v2/keys",
        "/v1",
        "/v1/",
        "/health/",
        "/HEALTH",
        "/v1/API-KEYS",
        "//v1//whoami",
        "/v1/chat",
        "/v1/chat/messages/x",
        "/v1/handshake/x",
        "/v1/api-keys/x/y/z",
        "/v1/accounts/x/recovery-key/x",
        "/demo",
        "/favicon.ico",
        "/.env",
        "/v1/../health",
        "/v1/api-keys/../../health",
        "/v1/%2e%2e/health",
        `/${"a".repeat(6000)}`,
        "/v1/%F0%9F%98%80",
        "/v1/%ZZ",
      ]),
  },
];

/** Methods the runtime passes to the worker; `HEAD` answers have no body, so only their headers are checked. */
const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"];
const ORIGINS = [WIDGET, LOCAL_WIDGET, "https://evil.example", "null", "https://widget.example.evil.com", "https://widget.example.", ""];
/** Client addresses: most unique (so few hit the per-address failure budget), one noisy one that does, and odd values. */
function clientAddress() {
  const roll = random();
  if (roll < 0.6) return `10.${int(256)}.${int(256)}.${int(256)}`;
  if (roll < 0.75) return "203.0.113.7";
  if (roll < 0.8) return pick(["2001:db8::1", "not-an-ip", "1.1.1.1, 2.2.2.2", "x".repeat(1000), utf8Bytes("💥")]);
  return undefined;
}

/** One request as sent, and what the checks need to know of it. */
export type Sent = Outgoing & {
  headers: Headers;
  route: string;
  /** The operation's rule in RIGHTS, when the request is one (its route's method). */
  needs?: Needs;
  credential: string;
  bodySummary: string;
};

/** One request, drawn from the PRNG: a route, a credential, maybe another method, an origin, an address and a body. */
function nextRequest(w: World, kinds: Kinds, routes: readonly Route[]): Sent {
  const route = pick(routes);
  const credential = route.auth && chance(0.6) ? pick(route.auth) : pick(Object.keys(kinds));
  const { headers: credentialHeaders = {}, query: credentialQuery } = (kinds[credential] as () => Presented)();
  const headers: Headers = { ...credentialHeaders };
  const method = chance(0.07) ? pick(METHODS) : route.method;

  const query: string[] = [];
  if (route.query && chance(0.6)) query.push(route.query());
  if (chance(0.08)) query.push(pick(JUNK_QUERIES));
  if (credentialQuery) query.push(credentialQuery);
  let path = route.path(w);
  const extra = query.filter(Boolean).join("&");
  if (extra) path += (path.includes("?") ? "&" : "?") + extra;

  // The credential's own origin (a browser token's) mostly stays; otherwise the route's usual origins, or anything.
  if (headers.Origin === undefined || chance(0.2)) {
    if (route.origin && chance(0.7)) headers.Origin = pick(route.origin);
    else if (chance(0.4)) headers.Origin = pick(ORIGINS);
    else delete headers.Origin;
  }
  if (route.preflight && method === "OPTIONS") {
    headers["Access-Control-Request-Method"] = pick(["POST", "GET", "DELETE"]);
    if (chance(0.7)) headers["Access-Control-Request-Headers"] = pick(["content-type", "authorization, content-type", "x-api-key"]);
  }
  const address = clientAddress();
  if (address !== undefined) headers["CF-Connecting-IP"] = address;

  let body: string | Buffer | undefined;
  let bodySummary = "";
  let chunked = false;
  const canHaveBody = method !== "GET" && method !== "HEAD";
  if (canHaveBody && (route.body || chance(0.1))) {
    const roll = random();
    if (route.body && roll < 0.45) {
      body = JSON.stringify(route.body(w));
      bodySummary = body;
    } else if (route.body && roll < 0.75) {
      body = JSON.stringify(mutate(route.body(w)));
      bodySummary = `mutated ${body}`;
    } else {
      const [summary, bytes] = pick(JUNK_BODIES);
      body = bytes;
      chunked = typeof bytes === "string" && bytes.length > 16 * 1024 && chance(0.5);
      bodySummary = chunked ? `${summary}, chunked` : summary;
    }
    const type = chance(0.85) ? "application/json" : pick(CONTENT_TYPES);
    if (type !== null) headers["Content-Type"] = type;
    bodySummary += ` [${type ?? "no Content-Type"}]`;
  }
  const needs = route.operation !== undefined && method === route.method ? RIGHTS[route.operation] : undefined;
  return { route: route.name, needs, method, path, headers, body, chunked, credential, bodySummary };
}

// ---------------------------------------------------------------------------------------------------------------------
// Checks.

const PROBLEM_FIELDS = { code: "string", type: "string", title: "string", detail: "string", requestId: "string" };
type Answered = Extract<Answer, { status: number }>;

/** Why an error answer is not an RFC 9457 problem as README promises, or null when it is one. */
function problemDefect(req: { method: string }, res: Answered): string | null {
  const mediaType = (res.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
  if (mediaType !== "application/problem+json") return `Content-Type is ${res.headers["content-type"] ?? "missing"}`;
  // A HEAD answer has no body by definition; its headers are all there is to check.
  if (req.method === "HEAD") return null;
  let body: Seeded;
  try {
    body = JSON.parse(res.text);
  } catch {
    return "body is not JSON";
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) return "body is not a JSON object";
  for (const [field, type] of Object.entries(PROBLEM_FIELDS)) {
    if (typeof body[field] !== type) return `\`${field}\` is ${JSON.stringify(body[field]) ?? "missing"}`;
  }
  if (body.status !== res.status) return `\`status\` is ${JSON.stringify(body.status)}, not ${res.status}`;
  return null;
}

/**
 * Routes whose successful answer legitimately shows a new key, secret or invitation once; elsewhere nothing key-shaped may appear
 * (the API reference is left out: an example there is documentation, not a leak).
 */
const SHOWS_SECRETS = new Set([
  "provision",
  "recovery",
  "key-create",
  "key-rotate",
  "agent-create",
  "agent-identity-secret",
  "user-create",
  "POST /v1/users/{id}/invitation",
]);

/** A failure one answer shows: its kind, and the code or detail that tells it apart. */
export type Failure = { kind: string; code: string };
/** What the checks read of a request (the gateway's half sends its own). */
export type Checked = { method: string; route: string; needs?: Needs; credential: string };

/** Every failure one answer shows: [{kind, code}]. `secrets` maps each known secret to what it is. */
export function check(req: Checked, res: Answer, secrets: Iterable<[string, string]>): Failure[] {
  if (res.error !== undefined) return [{ kind: "no answer", code: res.error }];
  const failures: Failure[] = [];
  let code = "";
  try {
    code = JSON.parse(res.text).code ?? "";
  } catch {
    // not JSON; the problem check below says so where it matters
  }
  if (res.status >= 500) failures.push({ kind: "5xx answer", code });
  // The fuzzer's own rule for the operation, never the document's: who may have a successful answer.
  if (res.status >= 200 && res.status < 300 && req.needs !== undefined && !MAY[req.needs].includes(holderOf(req.credential)))
    failures.push({ kind: `2xx for ${holderOf(req.credential)} on an operation for ${req.needs}`, code: req.credential });
  if (res.status >= 400) {
    const defect = problemDefect(req, res);
    if (defect) failures.push({ kind: "error that is not a problem+json", code: defect });
  }
  if (STACK_LINE.test(res.text)) failures.push({ kind: "stack trace in an answer", code });
  const seen = `${res.text}\n${JSON.stringify(res.headers)}`;
  for (const [secret, what] of secrets) {
    if (seen.includes(secret)) failures.push({ kind: `${what} in an answer`, code });
  }
  // Lists and reads must not carry anything shaped like a key or a hash, even of keys this run never saw.
  const isJson = (res.headers["content-type"] ?? "").startsWith("application/json");
  if (res.status < 300 && isJson && !SHOWS_SECRETS.has(req.route) && req.route !== "docs") {
    if (KEY_SHAPE.test(res.text)) failures.push({ kind: "key-shaped string in a successful answer", code: req.route });
    if (HASH_SHAPE.test(res.text)) failures.push({ kind: "hash-shaped string in a successful answer", code: req.route });
  }
  return failures;
}

/** After an answer is checked: the keys and secrets it created join the secrets no later answer may show. */
function learnSecrets(res: Answer, secrets: Map<string, string>): void {
  if (res.error !== undefined || res.status >= 300 || !(res.headers["content-type"] ?? "").startsWith("application/json")) return;
  let body: Seeded;
  try {
    body = JSON.parse(res.text);
  } catch {
    return;
  }
  // An invitation (a new user's, or a provisioned admin's) is shown once too.
  for (const value of [body?.invitation?.token, body?.admin?.invitation?.token])
    if (typeof value === "string") secrets.set(value, "invitation token");
  for (const value of [body?.key, body?.key?.key, body?.identitySecret]) {
    if (typeof value !== "string") continue;
    if (KEY_SHAPE.test(value) && !value.startsWith("idsec_")) addKey(secrets, value);
    else secrets.set(value, "identity secret");
  }
}

function addKey(secrets: Map<string, string>, raw: string): void {
  secrets.set(raw, "raw key");
  secrets.set(sha256(raw), "key hash (SHA-256)");
}

// ---------------------------------------------------------------------------------------------------------------------
// The run.

type Example = { request: string; credential: string; headers: Headers; body: string; answer: string };
type Group = Failure & { id: string; count: number; example: Example | null };
export type FailureLog = ReturnType<typeof failureLog>;

/** Records failures, keeping one example per distinct failure and a count of each. */
function failureLog() {
  const groups = new Map<string, Group>();
  return {
    groups,
    add(req: Checked & { path: string; headers: Headers; bodySummary: string }, res: Answer, failure: Failure) {
      const id = `${failure.kind} | ${req.method} ${req.route} | ${res.status ?? "-"} ${failure.code}`;
      const group = groups.get(id) ?? { ...failure, id, count: 0, example: null };
      group.count += 1;
      group.example ??= {
        request: `${req.method} ${req.path.length > 200 ? `${req.path.slice(0, 200)}…(${req.path.length} chars)` : req.path}`,
        credential: req.credential,
        headers: Object.fromEntries(
          Object.entries(req.headers).map(([k, value]) => {
            const v = String(value);
            return [k, v.length > 120 ? `${v.slice(0, 120)}…(${v.length} chars)` : v];
          }),
        ),
        body: req.bodySummary.length > 200 ? `${req.bodySummary.slice(0, 200)}…(${req.bodySummary.length} chars)` : req.bodySummary,
        answer:
          res.error !== undefined
            ? res.error
            : `${res.status} ${res.headers["content-type"] ?? "(no Content-Type)"} ${res.text.slice(0, 300)}`,
      };
      groups.set(id, group);
    },
  };
}

function printFailures(groups: Map<string, Group>) {
  const byKind = new Map<string, Group[]>();
  for (const group of groups.values()) byKind.set(group.kind, [...(byKind.get(group.kind) ?? []), group]);
  let printed = 0;
  for (const [kind, list] of byKind) {
    const total = list.reduce((n, g) => n + g.count, 0);
    console.log(`\nFAIL ${kind}: ${total} answers, ${list.length} distinct`);
    for (const [i, group] of list.entries()) {
      // Every kind shows at least one example, however many the kinds before it showed.
      if (printed >= MAX_EXAMPLES && i > 0) {
        console.log(`  - ${group.id} (${group.count}×)`);
        continue;
      }
      printed += 1;
      const e = group.example as Example;
      console.log(`  - ${group.id} (${group.count}×)`);
      console.log(`      request:    ${e.request}`);
      console.log(`      credential: ${e.credential}`);
      console.log(`      headers:    ${JSON.stringify(e.headers)}`);
      if (e.body) console.log(`      body:       ${e.body}`);
      console.log(`      answer:     ${e.answer}`);
    }
  }
}

const HTTP_METHODS = new Set(["get", "put", "post", "delete", "options", "head", "patch", "trace"]);

/**
 * Keygate's operations, read from the document it serves; each must have the fuzzer's own rule in RIGHTS, and each is
 * sent: through the fuzzer's route for it where there is one, else with its parameters drawn from every pool of ids.
 */
async function inventory(): Promise<Route[]> {
  const res = await send({ method: "GET", path: "/openapi.json" });
  if (res.error !== undefined || res.status !== 200) throw new Error(`reading /openapi.json: ${res.error ?? res.status}`);
  const doc = JSON.parse(res.text) as { paths: Record<string, Record<string, unknown>> };
  const operations = Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.keys(item)
      .filter((method) => HTTP_METHODS.has(method))
      .map((method) => `${method.toUpperCase()} ${path}`),
  );
  const unruled = operations.filter((op) => !(op in RIGHTS));
  const stale = Object.keys(RIGHTS).filter((op) => !operations.includes(op));
  if (unruled.length > 0 || stale.length > 0) {
    throw new Error(
      `the fuzzer's rules (RIGHTS) do not match the served document: no rule for ${unruled.join(", ") || "-"}; a rule for what it no longer serves: ${stale.join(", ") || "-"}`,
    );
  }
  const covered = new Set(ROUTES.map((r) => r.operation));
  const others = operations
    .filter((op) => !covered.has(op))
    .map((op): Route => {
      const [method, template] = op.split(" ") as [string, string];
      const fill = (w: World) => (_: string, name: string) =>
        name === "type" ? pick(["mailbox", "process", "project", "nope"]) : pathId(w, everyId(w));
      return { name: op, operation: op, method, path: (w) => template.replace(/\{(\w+)\}/g, fill(w)), body: () => ({}) };
    });
  return [...ROUTES, ...others];
}

/** Every id the world holds: keys, agents, users, the account. */
const everyId = (w: World) => [...w.keyIds, ...w.agentIds, ...Object.values(w.users), w.accounts.a];

/** The management API's half: Keygate without a gateway, the seeded world, REQUESTS requests. */
async function fuzzApi(failures: FailureLog) {
  const { mf, url } = await startKeygate({
    port: 0,
    bindings: {
      OPERATOR_TOKEN,
      VERIFY_TOKEN,
      ALLOW_HTTP: "true",
      JWT_SIGNING_KEYS: JSON.stringify([{ kid: "fuzz", secret: SIGNING_SECRET }]),
    },
  });
  apiPort = Number(new URL(url).port);
  const statuses: Record<string, number> = {};
  const perRoute: Record<string, Record<string, number>> = {};
  try {
    const routes = await inventory();
    const world = await seed();
    const secrets = new Map([
      [OPERATOR_TOKEN, "operator token"],
      [VERIFY_TOKEN, "verify token"],
      [SIGNING_SECRET, "JWT signing secret"],
    ]);
    for (const secret of world.secrets) {
      if (secret.startsWith("idsec_")) secrets.set(secret, "identity secret");
      else addKey(secrets, secret);
    }
    const kinds = credentialKinds(world);

    for (let sent = 0; sent < REQUESTS; sent += PARALLEL) {
      // Drawn before sending, so the sequence of requests depends on the seed alone, never on answers or timing.
      const batch = Array.from({ length: Math.min(PARALLEL, REQUESTS - sent) }, () => nextRequest(world, kinds, routes));
      const answers = await Promise.all(batch.map((req) => send(req)));
      // Checked against the secrets known before this batch, so a key created in it may appear only in its own answer.
      const known = [...secrets];
      batch.forEach((req, i) => {
        const res = answers[i] as Answer;
        const status = res.error !== undefined ? "error" : String(res.status);
        statuses[status] = (statuses[status] ?? 0) + 1;
        const counts = perRoute[req.route] ?? {};
        perRoute[req.route] = counts;
        counts[status] = (counts[status] ?? 0) + 1;
        for (const failure of check(req, res, known)) failures.add(req, res, failure);
      });
      for (const res of answers) learnSecrets(res, secrets);
    }
  } finally {
    await mf.dispose();
  }
  return { statuses, perRoute };
}

const histogram = (statuses: Record<string, number>) =>
  Object.entries(statuses)
    .map(([status, n]) => `${status}:${n}`)
    .join(" ");

async function main() {
  const failures = failureLog();
  const lines: string[] = [];
  try {
    let started = Date.now();
    const api = await fuzzApi(failures);
    lines.push(`${REQUESTS} requests, seed ${SEED}, ${((Date.now() - started) / 1000).toFixed(1)} s, statuses ${histogram(api.statuses)}`);
    let gateway = null;
    if (GATEWAY_REQUESTS > 0) {
      started = Date.now();
      const kit = { send, call, check, failures, mulberry32, utf8Bytes, base64url, jwt, OPERATOR_TOKEN, SIGNING_SECRET, WIDGET };
      gateway = await fuzzGateway({ seed: SEED, requests: GATEWAY_REQUESTS, parallel: PARALLEL, kit });
      // `200>` counts answers the upstream gave (the request was forwarded); the rest are Keygate's own.
      lines.push(
        `gateway ${GATEWAY_REQUESTS} requests (${gateway.forwarded} forwarded), seed ${SEED}, ${((Date.now() - started) / 1000).toFixed(1)} s, statuses ${histogram(gateway.statuses)}`,
      );
    }
    if (VERBOSE) {
      const perRoute = { ...api.perRoute, ...gateway?.perRoute };
      for (const [route, counts] of Object.entries(perRoute).sort()) console.log(`${route.padEnd(22)} ${JSON.stringify(counts)}`);
    }
  } finally {
    agent.destroy();
  }

  if (failures.groups.size > 0) {
    printFailures(failures.groups);
    const total = [...failures.groups.values()].reduce((n, g) => n + g.count, 0);
    console.log(`\nfuzz: FAILED, ${total} failing checks in ${failures.groups.size} distinct failures`);
    for (const line of lines) console.log(`fuzz: ${line}`);
    return 1;
  }
  for (const line of lines) console.log(`fuzz: ok, ${line}`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`fuzz: could not run: ${err?.stack ?? err}`);
    process.exit(1);
  },
);
