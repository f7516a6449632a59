// npm run fuzz: a bounded, reproducible fuzzer. Serves the built worker with Miniflare on 127.0.0.1, seeds two accounts
// through the public API, then sends FUZZ_REQUESTS (default 3000) requests across every route with every credential kind
// and malformed input, chosen by a PRNG seeded with FUZZ_SEED (default 1). It fails on any 5xx, any error that is not
// problem+json, and any answer that carries a raw key or a key hash.
import { createHash } from "node:crypto";
import { startKeygate } from "./keygate-server.mjs";

const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 3000);
const SEED = Number(process.env.FUZZ_SEED ?? 1);
const PARALLEL = 8;
const PORT = 8797;
const OPERATOR_TOKEN = "fuzz-operator-token-0123456789abcdef0123";
const WIDGET = "https://widget.example";
/** The running Keygate's base URL, once started. */
let url = "";

/** mulberry32: small, fast and the same sequence for the same seed everywhere. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(SEED);
const pick = (list) => list[Math.floor(random() * list.length)];
const chance = (p) => random() < p;

function problemShaped(res, text) {
  if (res.headers.get("content-type") !== "application/problem+json") return false;
  try {
    const body = JSON.parse(text);
    return (
      body.status === res.status &&
      typeof body.code === "string" &&
      typeof body.type === "string" &&
      typeof body.title === "string" &&
      typeof body.detail === "string" &&
      typeof body.requestId === "string"
    );
  } catch {
    return false;
  }
}

/** Two accounts, keys of every kind, a member, an agent and a token, made through the public API. */
async function seed() {
  const post = async (path, body, credential) => {
    const res = await fetch(url + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${credential}` },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`seeding ${path}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  const wide = { limit: 1_000_000, windowSeconds: 60 };
  const a = await post(
    "/v1/accounts",
    { name: "A", keyPrefix: "acme", membersCanCreateKeys: true, rateLimit: wide, admin: { email: "a@a.example" } },
    OPERATOR_TOKEN,
  );
  const b = await post("/v1/accounts", { name: "B", rateLimit: wide, admin: { email: "b@b.example" } }, OPERATOR_TOKEN);
  const admin = a.key.key;
  const member = await post("/v1/users", { email: "m@a.example", role: "member" }, admin);
  const memberKey = await post("/v1/api-keys", { name: "member", ownerId: member.id, rateLimit: wide }, admin);
  const scoped = await post("/v1/api-keys", { name: "scoped", mailboxIds: ["mbx_1"], rateLimit: wide }, admin);
  const low = await post("/v1/api-keys", { name: "low", rateLimit: { limit: 2, windowSeconds: 60 } }, admin);
  const revoked = await post("/v1/api-keys", { name: "revoked" }, admin);
  await fetch(`${url}/v1/api-keys/${revoked.id}`, { method: "DELETE", headers: { Authorization: `Bearer ${admin}` } });
  const agent = await post("/v1/agents", { name: "W", allowedOrigins: [WIDGET] }, admin);
  const shake = await fetch(`${url}/v1/handshake`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Origin: WIDGET },
    body: JSON.stringify({ agentId: agent.id }),
  });
  const { token } = await shake.json();
  return {
    accountId: a.account.id,
    otherAccountId: b.account.id,
    ids: [a.key.id, memberKey.id, scoped.id, revoked.id, member.id, a.admin.id, agent.id, b.key.id, b.admin.id],
    // Keys the fuzzer may revoke or rotate: not the admin key most requests use, so the run keeps reaching handlers.
    disposableIds: [memberKey.id, scoped.id, revoked.id, low.id, b.key.id, "key_nope"],
    agentId: agent.id,
    identitySecret: agent.identitySecret,
    rawKeys: [admin, memberKey.key, scoped.key, low.key, revoked.key, b.key.key],
    credentials: {
      none: {},
      admin: { Authorization: `Bearer ${admin}` },
      adminHeader: { "X-API-Key": admin },
      adminQuery: { query: `userApiToken=${admin}` },
      member: { Authorization: `Bearer ${memberKey.key}` },
      scoped: { "X-API-Key": scoped.key },
      low: { Authorization: `Bearer ${low.key}` },
      revoked: { Authorization: `Bearer ${revoked.key}` },
      otherAccount: { Authorization: `Bearer ${b.key.key}` },
      operator: { Authorization: `Bearer ${OPERATOR_TOKEN}` },
      token: { Authorization: `Bearer ${token}`, Origin: WIDGET },
      flippedToken: { Authorization: `Bearer ${token.slice(0, -3)}${token.endsWith("A") ? "B" : "A"}xx`, Origin: WIDGET },
      unknownKey: { "X-API-Key": `acme_${"0".repeat(64)}` },
      garbage: { Authorization: pick(["Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "Bearer a b", `Bearer ${"x".repeat(5000)}`, "Bearer é"]) },
      conflicting: { Authorization: `Bearer ${admin}`, "X-API-Key": memberKey.key },
    },
  };
}

/** Values that break assumptions: wrong types, edges of ranges, odd strings and dates. */
const ODD = [
  null,
  "",
  " ",
  0,
  -1,
  1.5,
  1e308,
  Number.MAX_SAFE_INTEGER,
  true,
  [],
  {},
  [null],
  { nested: { deeper: [1, 2, 3] } },
  "x".repeat(5000),
  "é✓😀\u0000\u202e",
  "../../etc/passwd",
  "<script>alert(1)</script>",
  "2027-02-30T00:00:00Z",
  "9999-12-31T23:59:59-05:00",
  "+010000-01-01T00:00:00Z",
  "2099-01-01T00:00:00Z",
  "*",
  "mailbox:mbx_1",
  "https://widget.example",
  "agt_000000000000000000000000",
];

/** A valid body for each route, which mutate() then bends. */
function validBody(route, world) {
  const bodies = {
    accounts: { name: "F", admin: { email: `f${Math.floor(random() * 1e9)}@f.example` } },
    recovery: {},
    keys: { name: "k", scopes: ["*"], expiresAt: "2099-01-01T00:00:00Z", rateLimit: { limit: 10, windowSeconds: 60 } },
    rotate: { gracePeriodSeconds: 0 },
    users: { email: `u${Math.floor(random() * 1e9)}@a.example`, role: "member" },
    userPatch: { role: "member", disabled: false },
    account: { rateLimit: { limit: 1_000_000, windowSeconds: 60 }, maxRateLimit: null },
    agents: { name: "w", allowedOrigins: [WIDGET], tokenTtlSeconds: 600 },
    agentPatch: { name: "w2" },
    handshake: { agentId: world.agentId },
    chat: { message: "hello" },
    empty: {},
  };
  return structuredClone(bodies[route.body] ?? {});
}

function mutate(body) {
  const keys = Object.keys(body);
  const roll = random();
  if (roll < 0.3 || keys.length === 0) body[pick(["unknown", "mailboxId", "__proto__", "constructor", "scopes", "admin"])] = pick(ODD);
  else if (roll < 0.7) body[pick(keys)] = pick(ODD);
  else if (roll < 0.85) delete body[pick(keys)];
  else {
    const k = pick(keys);
    body[k] =
      typeof body[k] === "object" && body[k] !== null ? { ...body[k], [pick(["limit", "windowSeconds", "email"])]: pick(ODD) } : [body[k]];
  }
  return body;
}

const ROUTES = [
  { method: "GET", path: () => "/health" },
  { method: "POST", path: () => "/v1/accounts", body: "accounts", creates: true },
  {
    method: "POST",
    path: (w) => `/v1/accounts/${pick([w.accountId, w.otherAccountId, "acc_nope"])}/recovery-key`,
    body: "recovery",
    creates: true,
  },
  { method: "GET", path: () => "/v1/whoami" },
  { method: "GET", path: () => "/v1/account" },
  { method: "PATCH", path: () => "/v1/account", body: "account" },
  { method: "POST", path: () => "/v1/api-keys", body: "keys", creates: true },
  {
    method: "GET",
    path: () => `/v1/api-keys?${pick(["", "limit=0", "limit=101", "limit=2", "limit=abc", "cursor=%%%", "cursor=W10", "limit=1.5"])}`,
  },
  { method: "GET", path: (w) => `/v1/api-keys/${pick(w.ids)}` },
  { method: "DELETE", path: (w) => `/v1/api-keys/${pick(w.disposableIds)}` },
  { method: "POST", path: (w) => `/v1/api-keys/${pick(w.disposableIds)}/rotate`, body: "rotate", creates: true },
  { method: "POST", path: () => "/v1/users", body: "users" },
  { method: "GET", path: () => "/v1/users?limit=3" },
  { method: "GET", path: (w) => `/v1/users/${pick(w.ids)}` },
  { method: "PATCH", path: (w) => `/v1/users/${pick(w.ids)}`, body: "userPatch" },
  { method: "POST", path: () => "/v1/agents", body: "agents", creates: true },
  { method: "GET", path: () => "/v1/agents" },
  { method: "GET", path: (w) => `/v1/agents/${pick(w.ids)}` },
  { method: "PATCH", path: (w) => `/v1/agents/${pick(w.ids)}`, body: "agentPatch" },
  { method: "POST", path: (w) => `/v1/agents/${pick(w.ids)}/identity-secret`, body: "empty", creates: true },
  { method: "POST", path: () => "/v1/handshake", body: "handshake" },
  { method: "OPTIONS", path: () => pick(["/v1/handshake", "/v1/chat/messages"]) },
  { method: "POST", path: () => "/v1/chat/messages", body: "chat" },
  {
    method: "GET",
    path: () => `/demo/widget?agent=${pick(["agt_x", "<b>", ""])}&api=${pick(["https://evil.example", "javascript:alert(1)", ""])}`,
  },
  {
    method: "GET",
    path: () =>
      pick(["/", "/v2/x", "/v1", "/v1/api-keys/%2e%2e/x", `/v1/users/${"a".repeat(3000)}`, "/v1/agents/%F0%9F%98%80", "/v1/handshake/x"]),
  },
];

function randomRequest(world) {
  const route = pick(ROUTES);
  // Mostly credentials that get past authentication, so that handlers see the malformed input too.
  const credential = chance(0.4) ? pick(["admin", "adminHeader", "member"]) : pick(Object.keys(world.credentials));
  const { query, ...headers } = world.credentials[credential];
  let path = route.path(world);
  if (query) path += (path.includes("?") ? "&" : "?") + query;
  const method = chance(0.08) ? pick(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]) : route.method;
  if (chance(0.5)) headers.Origin ??= pick([WIDGET, "https://evil.example", "null"]);
  if (chance(0.85)) headers["CF-Connecting-IP"] = `10.0.${Math.floor(random() * 4)}.${Math.floor(random() * 250)}`;
  let body;
  if (route.body && method !== "GET" && method !== "OPTIONS") {
    const roll = random();
    const value = validBody(route, world);
    if (roll < 0.35) body = JSON.stringify(value);
    else if (roll < 0.75) body = JSON.stringify(mutate(value));
    else body = pick(["{", "[1,2]", '"text"', "null", "", "{}", `{"name":"${"x".repeat(17 * 1024)}"}`, "\u0000", '{"a":1,"a":2}']);
    headers["Content-Type"] = chance(0.9)
      ? "application/json"
      : pick(["text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8"]);
  }
  return { method, path, headers, body, credential, creates: route.creates === true };
}

/** Starts Keygate, seeds it, sends the requests and checks every answer; exits 1 on any failure. */
async function main() {
  const { mf, url: started } = await startKeygate({
    port: PORT,
    bindings: {
      OPERATOR_TOKEN,
      ALLOW_HTTP: "true",
      JWT_SIGNING_KEYS: JSON.stringify([{ kid: "fuzz", secret: "fuzz-signing-secret-0123456789abcdefghij" }]),
    },
  });

  url = started;
  let failures = 0;
  try {
    const world = await seed();
    const secrets = [...world.rawKeys, ...world.rawKeys.map((k) => createHash("sha256").update(k).digest("hex")), world.identitySecret];
    const statuses = {};
    const examples = new Map();
    const fail = (kind, request, res, text) => {
      failures += 1;
      const list = examples.get(kind) ?? [];
      if (list.length < 3)
        list.push(
          `${request.method} ${request.path} [${request.credential}] body=${String(request.body).slice(0, 80)} -> ${res.status} ${text.slice(0, 300)}`,
        );
      examples.set(kind, list);
    };

    for (let sent = 0; sent < REQUESTS; sent += PARALLEL) {
      const batch = Array.from({ length: Math.min(PARALLEL, REQUESTS - sent) }, () => randomRequest(world));
      await Promise.all(
        batch.map(async (request) => {
          const res = await fetch(url + request.path, { method: request.method, headers: request.headers, body: request.body });
          const text = await res.text();
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
          if (res.status >= 500) fail(`${res.status} answer`, request, res, text);
          if (res.status >= 400 && !problemShaped(res, text)) fail("error that is not problem+json", request, res, text);
          if (/\bat .*\.(js|ts):\d+/.test(text)) fail("stack trace in a body", request, res, text);
          const seen = text + JSON.stringify([...res.headers]);
          if (secrets.some((s) => seen.includes(s))) {
            // The one answer allowed to carry a raw key is the one that creates it.
            if (!(res.status === 201 && request.creates)) fail("secret in an answer", request, res, text);
          }
        }),
      );
    }
    console.log(`fuzz: ${REQUESTS} requests, seed ${SEED}, statuses ${JSON.stringify(statuses)}`);
    for (const [kind, list] of examples) console.log(`FAIL ${kind}:\n  ${list.join("\n  ")}`);
  } finally {
    await mf.dispose();
  }
  process.exit(failures > 0 ? 1 : 0);
}

await main();
