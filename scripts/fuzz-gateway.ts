// The gateway half of `npm run fuzz` (scripts/fuzz.ts runs it after the management API's half).
//
// It starts a small upstream (node:http on 127.0.0.1, an ephemeral port) that answers every request 200 with a JSON echo
// of what it received and records it by the request's X-Fuzz-Id, then a second Keygate with UPSTREAM_URL pointing at
// it, a GATEWAY_ROUTES table like wrangler.toml's (mailbox, project-with-account and process resource routes, a
// full-access DELETE, a route with cost, a key-or-token chat route, public routes, a full-access catch-all) and a
// generated ASSERTION_SIGNING_KEYS. It seeds two accounts with full-access, scoped, member, revoked, expiring and
// low-limit keys, handshake tokens and a person's access and refresh tokens and dashboard cookie, registers which account
// owns which mailbox and process, then sends seeded requests: odd paths (encoded characters, `//`, `%2F`, `%2e`, `%25`
// that decodes twice, `;`, text NFKC changes, unicode, very long paths, case variants, trailing slashes), odd headers
// (forged Keygate-* / X-Keygate-* in any spelling, method and path overrides, repeated X-API-Key, headers a Connection
// header names, other hop-by-hop headers, a hostile Host, the dashboard's host), every way of presenting a valid,
// scoped, revoked or garbage credential or any other secret of Keygate's (in Basic, with a character stuck to it),
// every method, and bodies.
//
// Answers Keygate gives itself get the checks of the rest of the fuzzer (no 5xx, problem+json, no secret). Because the
// upstream is up, fast and never answers 5xx, any 5xx (502 and 504 included) is Keygate's. What the upstream received
// is checked against the table: no secret of Keygate's reaches it in any case or base64, on any route, nor a Keygate-*
// header or a hop-by-hop header the client sent, nor a method or path override; the identity headers and the signed
// assertion (issued by PUBLIC_ORIGIN, whatever the Host) describe the request and a credential the client actually
// presented; nothing is forwarded on the dashboard's host; the upstream's Set-Cookie of the dashboard's session cookie
// never reaches the client; and the path it received, read as a strict, a lax (decoding to a fixpoint) or a normalising
// (NFKC) upstream reads paths, is one the table allows for that credential (a scoped key never reaches the full-access
// catch-all, another account's organization or resource, or a resource it has no grant for).
import { createHash, generateKeyPairSync, type KeyObject, verify } from "node:crypto";
import http from "node:http";
import type { Answer, CallOptions, check, Failure, FailureLog, Headers, Outgoing, Seeded } from "./fuzz.ts";
import { startKeygate } from "./keygate-server.mjs";

/** A route of GATEWAY_ROUTES, as README's table describes it. */
type GatewayRoute = {
  pattern: string;
  methods?: string[];
  auth?: "key" | "key-or-token" | "public";
  access?: "full";
  resource?: { type: string; param: string };
  account?: string;
  cost?: number;
  forwardAuthorization?: boolean;
};

/** The route table: wrangler.toml's example plus a full-access-only DELETE, a route with cost and a public prefix. */
export const GATEWAY_ROUTES: GatewayRoute[] = [
  { pattern: "/v1/mailboxes/:mailboxId/*", resource: { type: "mailbox", param: "mailboxId" } },
  { pattern: "/api/v1/organizations/:org/projects/:project/*", account: "org", resource: { type: "project", param: "project" } },
  { pattern: "/v1/processes/:processId/runs", methods: ["DELETE"], access: "full", resource: { type: "process", param: "processId" } },
  { pattern: "/v1/processes/:processId/*", resource: { type: "process", param: "processId" } },
  { pattern: "/v1/reports/*", cost: 5 },
  { pattern: "/v1/chat/*", auth: "key-or-token" },
  { pattern: "/v1/status", auth: "public" },
  { pattern: "/public/*", auth: "public" },
  { pattern: "/open/*", auth: "public", forwardAuthorization: true },
  { pattern: "/*", access: "full" },
];

/** The identity headers Keygate itself sets on forwarded requests; any other keygate-ish name came from a client. */
const IDENTITY_HEADERS = new Set([
  "keygate-account-id",
  "keygate-user-id",
  "keygate-auth-method",
  "keygate-key-id",
  "keygate-role",
  "keygate-scopes",
  "keygate-agent-id",
  "keygate-request-id",
  "keygate-assertion",
]);
/** Headers that would make an upstream act on another method or path than the table judged: never forwarded. */
const OVERRIDES = new Set(["x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url"]);
/** The issuer every assertion must name, and the dashboard's host (where nothing is forwarded). */
const PUBLIC_ORIGIN = "https://keygate.fuzz.example";
const SESSION_FIXATION = `__Host-keygate_session=ses_${"0".repeat(24)}.cs_${"0".repeat(64)}; Path=/; Secure; HttpOnly`;
const DASHBOARD_HOST = "dashboard.fuzz.example";
/** Markers in header values the client sends that must never reach the upstream. */
const FORGED = "forged";
const HOP = "fuzzhop";
const ASSERTION_TTL_SECONDS = 60;
/** High enough that no seeded key but the low one runs out. A copy of fuzz.ts's WIDE: the API half mutates bodies holding that one. */
const WIDE = Object.freeze({ limit: 1_000_000, windowSeconds: 60 });
/** Set so that POST /v1/keys/verify (one of Keygate's own paths) answers as deployed, not 500 configuration_error. */
const VERIFY_TOKEN = "fuzz-verify-token-0123456789abcdefghijkl";
/** The upstream's own limit on request headers; far above anything sent, so it never refuses what Keygate forwards. */
const UPSTREAM_MAX_HEADER_BYTES = 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------------------
// The upstream.

/**
 * Starts the upstream on 127.0.0.1 (an ephemeral port). It answers every request 200 with `{method, url, headers,
 * bytes}` and records it under its X-Fuzz-Id (or among the strays when it has none).
 */
type Received = { method: string; url: string; rawHeaders: string[]; bytes: number };
export async function startUpstream() {
  const received = new Map<string, Received[]>();
  const strays: Received[] = [];
  const server = http.createServer({ maxHeaderSize: UPSTREAM_MAX_HEADER_BYTES }, (req, res) => {
    let bytes = 0;
    req.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
    });
    req.on("error", () => res.destroy());
    req.on("end", () => {
      const record = { method: req.method ?? "", url: req.url ?? "", rawHeaders: req.rawHeaders, bytes };
      const id = req.headers["x-fuzz-id"];
      if (typeof id === "string" && /^g\d+$/.test(id)) received.set(id, [...(received.get(id) ?? []), record]);
      else strays.push(record);
      const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, bytes });
      res.writeHead(200, {
        "Content-Type": "application/json",
        "Content-Length": Buffer.byteLength(body),
        "X-Fuzz-Upstream": "1",
        // An upstream that tries to sign the browser in to a dashboard session of its choosing, and one cookie of its own.
        "Set-Cookie": [SESSION_FIXATION, "upstream=1; Path=/"],
      });
      res.end(body);
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    origin,
    /** What the upstream received for one request, and forgets it. */
    take(id: string) {
      const records = received.get(id) ?? [];
      received.delete(id);
      return records;
    },
    /** Requests that carried no fuzz id (so none of the fuzzer's), and forgets them. */
    takeStrays: () => strays.splice(0),
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// The route table as the fuzzer reads it: the same table, matched the way README describes, on its own code.

type Segment = string | { param: string };
const COMPILED = GATEWAY_ROUTES.map((route, index) => {
  const segments = route.pattern === "/" ? [] : route.pattern.slice(1).split("/");
  const rest = segments[segments.length - 1] === "*";
  return {
    route,
    name: route.auth === "public" ? `public ${route.pattern}` : route.pattern === "/*" ? "catch-all /*" : `${index}:${route.pattern}`,
    segments: (rest ? segments.slice(0, -1) : segments).map((s): Segment => (s.startsWith(":") ? { param: s.slice(1) } : s.toLowerCase())),
    rest,
  };
});

/** The first route that takes `method` and these (decoded) segments, with its parameters, or null. */
function modelMatch(method: string, parts: string[]): { route: GatewayRoute; name: string; params: Record<string, string> } | null {
  for (const { route, name, segments, rest } of COMPILED) {
    if (route.methods && !route.methods.includes(method)) continue;
    if (rest ? parts.length < segments.length : parts.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (const [i, segment] of segments.entries()) {
      const part = parts[i] as string;
      if (typeof segment === "string") ok = segment === part.toLowerCase();
      else if (part === "") ok = false;
      else params[segment.param] = part;
      if (!ok) break;
    }
    if (ok) return { route, name, params };
  }
  return null;
}

function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/**
 * How upstreams read a received path. `strict`: segment by segment, each percent-decoded, literals without regard to
 * case and a trailing slash ignored (what README says the table does). `lax`: what permissive servers and proxies also
 * do: decode first and then split (so `%2F` and `%5C` separate segments), drop `;params`, merge `//`, resolve `.` and
 * `..`. The upstream may be either, so a forwarded path must be allowed under both.
 */
function readings(pathname: string) {
  const strict = pathname.slice(1).split("/");
  if (strict.length > 1 && strict[strict.length - 1] === "") strict.pop();
  let decoded = pathname;
  for (let i = 0; i < 4 && decode(decoded) !== decoded; i++) decoded = decode(decoded);
  const resolve = (text: string) => {
    const parts: string[] = [];
    for (const segment of text.split(/[/\\]/)) {
      const s = segment.split(";")[0] as string;
      if (s === "" || s === ".") continue;
      if (s === "..") parts.pop();
      else parts.push(s);
    }
    return parts;
  };
  return {
    strict: pathname === "/" ? [] : strict.map(decode),
    lax: resolve(decoded),
    normalising: resolve(decoded.normalize("NFKC")),
  };
}

/** The resources the provider's backend says each account owns (`a`, `b`); any other id is no account's. */
const OWNED: Record<"a" | "b", string[]> = {
  a: ["mailbox:mbx_123", "mailbox:mbx_1", "process:p1", "process:p2"],
  b: ["mailbox:mbx_2", "process:p3"],
};
/** `type:id` -> owning account id, filled in when the world is made. */
const owners = new Map<string, string>();

/** A principal a client may present: a key, a person's session or a handshake token (whose scopes are none). */
type Who = {
  kind: "key" | "session" | "token";
  accountId: string;
  slug?: string;
  keyId?: string;
  userId?: string;
  agentId?: string;
  scopes: string[];
};

/** Whether `who` (a principal the client presented) may reach `route` with `params`, as README's table says. */
function allows(route: GatewayRoute, params: Record<string, string>, who: Who | null): boolean {
  if (route.auth === "public") return true;
  if (!who) return false;
  const ownAccount = (value: string | undefined) => value === who.accountId || (who.slug !== undefined && value === who.slug);
  if (route.account !== undefined && !ownAccount(params[route.account])) return false;
  // Where the URL names no account, the resource it names must be the caller's account's.
  if (route.account === undefined && route.resource !== undefined) {
    if (owners.get(`${route.resource.type}:${params[route.resource.param]}`) !== who.accountId) return false;
  }
  if (who.kind === "token") return route.auth === "key-or-token" && route.resource === undefined && route.access === undefined;
  if (who.scopes.includes("*")) return true;
  if (route.access === "full" || route.resource === undefined) return false;
  return who.scopes.includes(`${route.resource.type}:${params[route.resource.param]}`);
}

/**
 * Keygate's own paths, read from the document it serves: each operation's fixed start (`/v1/api-keys` of
 * `/v1/api-keys/{id}`), which README says is never forwarded, nor anything under it; the chat's excepted (a route may
 * take it).
 */
async function ownPaths(send: (req: Outgoing) => Promise<Answer>): Promise<string[]> {
  const res = await send({ method: "GET", path: "/openapi.json" });
  if (res.error !== undefined || res.status !== 200) throw new Error(`reading /openapi.json: ${res.error ?? res.status}`);
  const { paths } = JSON.parse(res.text) as { paths: Record<string, unknown> };
  const starts = Object.keys(paths).map((path) => path.split(/\/\{/)[0] as string);
  return [...new Set(starts)].filter((p) => p !== "/v1/chat" && !p.startsWith("/v1/chat/"));
}

function isOwnPath(path: string, own: readonly string[]): boolean {
  const p = (path.length > 1 ? path.replace(/\/$/, "") : path).toLowerCase();
  return own.some((o) => p === o || p.startsWith(`${o}/`));
}

/** A path an upstream could read two ways, which README says is never forwarded. */
const AMBIGUOUS = [/\/\//, /%2f/i, /%5c/i, /%2e/i, /%25/, /;/, /\\/, /(^|\/)\.\.?(\/|$)/];

// ---------------------------------------------------------------------------------------------------------------------
// Assertions: ES256 JWTs the upstream can verify with the public half of the generated key.

/** A fresh P-256 key for ASSERTION_SIGNING_KEYS (private JWK with a kid) and its public half. */
function assertionKey() {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { jwk: { ...privateKey.export({ format: "jwk" }), kid: "fuzz-assertion" }, publicKey };
}

function jsonPart(part: string | undefined): Seeded {
  try {
    return JSON.parse(Buffer.from(part ?? "", "base64url").toString("utf8"));
  } catch {
    return null;
  }
}

type Context = { secrets: [string, string][]; publicKey: KeyObject; keygateOrigin: string; upstreamOrigin: string; own: string[] };

/** What is wrong with the assertion an upstream received, or null when it proves exactly this request. */
function assertionDefect(
  token: string | undefined,
  {
    publicKey,
    keygateOrigin,
    upstreamOrigin,
    method,
    pathname,
    headers,
  }: Context & { method: string; pathname: string; headers: Record<string, string | undefined> },
): string | null {
  if (typeof token !== "string") return "missing";
  const [h, p, s, extra] = token.split(".");
  if (extra !== undefined || !s) return "not a JWS";
  const header = jsonPart(h);
  const claims = jsonPart(p);
  if (header?.alg !== "ES256" || header?.typ !== "keygate-assertion+jwt" || header?.kid !== "fuzz-assertion") return "wrong header";
  const valid = verify("sha256", Buffer.from(`${h}.${p}`), { key: publicKey, dsaEncoding: "ieee-p1363" }, Buffer.from(s, "base64url"));
  if (!valid) return "bad signature";
  if (!claims) return "claims are not JSON";
  const expect = {
    iss: keygateOrigin,
    aud: upstreamOrigin,
    htm: method,
    htu: `${upstreamOrigin}${pathname}`,
    sub: headers["keygate-user-id"],
    acc: headers["keygate-account-id"],
    amr: headers["keygate-auth-method"],
    jti: headers["keygate-request-id"],
    key: headers["keygate-key-id"],
    agt: headers["keygate-agent-id"],
  };
  for (const [claim, value] of Object.entries(expect)) {
    if (claims[claim] !== value) return `\`${claim}\` is ${JSON.stringify(claims[claim])}, not ${JSON.stringify(value)}`;
  }
  if (claims.exp - claims.iat !== ASSERTION_TTL_SECONDS) return "does not live 60 s";
  return null;
}

// ---------------------------------------------------------------------------------------------------------------------
// The world.

/**
 * Two accounts (with slugs), keys of every kind and handshake tokens, made through the public API of the gateway's
 * Keygate. Each principal records what it may reach: `{kind: "key", keyId, accountId, slug, scopes}` (scopes as the key
 * holds them effectively) or `{kind: "token", accountId, agentId}`.
 */
/** A principal of the world: its raw secret and who presenting it proves (null: no one). */
type Principal = { raw: string; who: Who | null; origin?: string };
type Call = (method: string, path: string, options?: CallOptions) => Promise<Seeded>;
/** The rest of the fuzzer, as scripts/fuzz.ts hands it over. */
export type Kit = {
  send: (req: Outgoing) => Promise<Answer>;
  call: Call;
  check: typeof check;
  failures: FailureLog;
  mulberry32: (seed: number) => () => number;
  utf8Bytes: (text: string) => string;
  base64url: (value: unknown) => string;
  jwt: (header: object, payload: object, secret?: string) => string;
  OPERATOR_TOKEN: string;
  SIGNING_SECRET: string;
  WIDGET: string;
};

async function seedWorld(call: Call, send: (req: Outgoing) => Promise<Answer>, kit: Kit) {
  const { OPERATOR_TOKEN, WIDGET } = kit;
  const provision = (body: object) => call("POST", "/v1/accounts", { key: OPERATOR_TOKEN, body });
  const a = await provision({ name: "Acme", slug: "acme-corp", keyPrefix: "acme", rateLimit: WIDE, admin: { email: "ops@acme.example" } });
  const b = await provision({ name: "Globex", slug: "globex", rateLimit: WIDE, admin: { email: "ops@globex.example" } });
  const rootA = a.key.key;
  const rootB = b.key.key;
  const A = { accountId: a.account.id, slug: "acme-corp" };
  const B = { accountId: b.account.id, slug: "globex" };
  for (const [name, accountId] of [
    ["a", A.accountId],
    ["b", B.accountId],
  ] as const) {
    for (const grant of OWNED[name]) {
      await call("PUT", `/v1/resource-owners/${grant.replace(":", "/")}`, { key: VERIFY_TOKEN, body: { accountId } });
      owners.set(grant, accountId);
    }
  }
  const newKey = (root: string, body: object) => call("POST", "/v1/api-keys", { key: root, body: { rateLimit: WIDE, ...body } });
  const principals: Record<string, Principal> = {};
  const add = (name: string, created: Seeded, account: { accountId: string; slug: string }, scopes: string[]) => {
    principals[name] = { raw: created.key, who: { kind: "key", keyId: created.id, ...account, scopes } };
  };

  add("admin", await newKey(rootA, { name: "admin" }), A, ["*"]);
  add("mailbox", await newKey(rootA, { name: "mailbox", mailboxIds: ["mbx_123"] }), A, ["mailbox:mbx_123"]);
  add("process", await newKey(rootA, { name: "process", processIds: ["p1"] }), A, ["process:p1"]);
  add("project", await newKey(rootA, { name: "project", projectIds: ["warehouse"] }), A, ["project:warehouse"]);
  const multi = ["mailbox:mbx_1", "process:p2", "project:garage"];
  add("multi", await newKey(rootA, { name: "multi", scopes: multi }), A, multi);
  // A full-access key of a member limited to one project: its rights are the member's.
  const member = await call("POST", "/v1/users", { key: rootA, body: { email: "member@acme.example", role: "member" } });
  await call("PATCH", `/v1/users/${member.id}`, { key: rootA, body: { grants: ["project:warehouse"] } });
  add("member", await newKey(rootA, { name: "member", ownerId: member.id }), A, ["project:warehouse"]);
  // Valid a few seconds into the run; judged as the full-access key it was (an upper bound of what it may reach).
  const soon = new Date(Date.now() + 4_000).toISOString();
  add("expiring", await newKey(rootA, { name: "expiring", expiresAt: soon, mailboxIds: ["mbx_123"] }), A, ["mailbox:mbx_123"]);
  add("low", await newKey(rootA, { name: "low", rateLimit: { limit: 5, windowSeconds: 3600 } }), A, ["*"]);
  add("otherAdmin", await newKey(rootB, { name: "admin" }), B, ["*"]);
  add("otherMailbox", await newKey(rootB, { name: "mailbox", mailboxIds: ["mbx_123"] }), B, ["mailbox:mbx_123"]);
  const revoked = await newKey(rootA, { name: "revoked" });
  await call("DELETE", `/v1/api-keys/${revoked.id}`, { key: rootA });
  principals.revoked = { raw: revoked.key, who: null };

  const agent = await call("POST", "/v1/agents", { key: rootA, body: { name: "Support", allowedOrigins: [WIDGET] } });
  const agentB = await call("POST", "/v1/agents", { key: rootB, body: { name: "Globex", allowedOrigins: ["https://globex.example"] } });
  const handshake = (body: object, extra: CallOptions): Promise<string> =>
    call("POST", "/v1/handshake", { body, ...extra }).then((r) => r.token);
  const token = (agentId: string, account: { accountId: string; slug: string }): Who => ({
    kind: "token",
    agentId,
    accountId: account.accountId,
    slug: account.slug,
    scopes: [],
  });
  principals.browserToken = {
    raw: await handshake({ agentId: agent.id }, { origin: WIDGET }),
    who: token(agent.id, A),
    origin: WIDGET,
  };
  principals.serverToken = { raw: await handshake({ agentId: agent.id, userId: "user-7" }, { key: rootA }), who: token(agent.id, A) };

  // A person of account A (an admin): their access token is a credential of its own, their refresh token and dashboard
  // cookie are secrets that authenticate nothing at the gateway.
  const password = "fuzz person password 0123";
  const person = await call("POST", "/v1/users", { key: rootA, body: { email: "person@acme.example", role: "admin" } });
  await call("POST", "/v1/auth/accept-invitation", { body: { token: person.invitation.token, password } });
  const pair = await call("POST", "/v1/auth/login", { body: { email: "person@acme.example", password } });
  principals.person = { raw: pair.access_token, who: { kind: "session", userId: person.id, ...A, scopes: ["*"] } };
  const form = await send({
    method: "POST",
    path: "/dashboard/login",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: `http://${DASHBOARD_HOST}`, Host: DASHBOARD_HOST },
    body: new URLSearchParams({ email: "person@acme.example", password }).toString(),
  });
  const cookie = /__Host-keygate_session=([^;]+)/.exec([form.headers?.["set-cookie"] ?? []].flat().join("\n"))?.[1];
  if (!cookie) throw new Error(`seeding the dashboard cookie: ${form.error ?? `${form.status} ${form.text?.slice(0, 200)}`}`);
  principals.otherToken = { raw: await handshake({ agentId: agentB.id, userId: "u" }, { key: rootB }), who: token(agentB.id, B) };

  const keys = [rootA, rootB, ...Object.values(principals).map((p) => p.raw)].filter((raw) => !raw.includes("."));
  const tokens = Object.values(principals)
    .map((p) => p.raw)
    .filter((raw) => raw.includes("."));
  return {
    principals,
    accounts: { a: A, b: B },
    keys,
    tokens,
    identitySecrets: [agent.identitySecret, agentB.identitySecret],
    personSecrets: { refresh: pair.refresh_token, cookie },
    agentIds: [agent.id, agentB.id],
    /** The upstream's port, once it runs. */
    upstreamPort: "",
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Requests.

/** A PRNG-driven toolbox, so the gateway's sequence depends on its own seed only. */
function dice(random: () => number) {
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(list: readonly T[]): T => list[int(list.length)] as T;
  const chance = (p: number) => random() < p;
  const hex = (n: number) => Array.from({ length: n }, () => "0123456789abcdef"[int(16)]).join("");
  /** Picks by weight from [[weight, value], ...]. */
  const weighted = <T>(entries: readonly (readonly [number, T])[]): T => {
    let roll = random() * entries.reduce((n, [w]) => n + w, 0);
    for (const [w, value] of entries) {
      roll -= w;
      if (roll < 0) return value;
    }
    return (entries[entries.length - 1] as readonly [number, T])[1];
  };
  return { int, pick, chance, hex, weighted };
}

/** Paths by kind: each a function of the world and the dice, returning a path that may carry its own query. */
type Dice = ReturnType<typeof dice>;
type World = Awaited<ReturnType<typeof seedWorld>>;
const of = (w: World, name: string) => w.principals[name] as Principal;
type PathKinds = Record<string, () => string> & { granted: (who: Who | undefined) => string };

function pathKinds(w: World, d: Dice): PathKinds {
  const { pick, hex, int } = d;
  const rest = () =>
    pick([
      "",
      "/",
      "/messages",
      "/messages/42",
      "/a/b/c",
      "/x.json",
      "/~user",
      "/%F0%9F%98%80",
      "/%C3%A9t%C3%A9",
      "/%00",
      "/%3F",
      "/%23frag",
      "/%25",
      "/%252F..%252F",
      "/%C0%AE%C0%AE/x",
      "/a%20b",
      "/...",
      "/runs",
    ]);
  const mailbox = () => pick(["mbx_123", "mbx_123", "mbx_1", "mbx_2", "MBX_123", "mbx%5F123", "%6Dbx_123", "mbx_123.", "mbx_", "*"]);
  const org = () =>
    pick([
      w.accounts.a.accountId,
      w.accounts.a.slug,
      w.accounts.a.slug,
      w.accounts.b.accountId,
      w.accounts.b.slug,
      "ACME-CORP",
      "acme%2Dcorp",
      `acc_${hex(24)}`,
    ]);
  const project = () => pick(["warehouse", "warehouse", "garage", "lab", "WAREHOUSE", "%77arehouse"]);
  const processId = () => pick(["p1", "p1", "p2", "p3", "P1", "%70%31"]);
  const processTail = () => pick(["/runs", "/runs", "/RUNS", "/%72uns", "/runs/", "/runs/1", "/logs", ""]);
  const kinds: Record<string, () => string> = {
    mailbox: () => `/v1/mailboxes/${mailbox()}${rest()}`,
    mailboxes: () => pick(["/v1/mailboxes", "/v1/mailboxes/", "/V1/Mailboxes"]),
    project: () => `/api/v1/organizations/${org()}/projects/${project()}${rest()}`,
    organization: () => `/api/v1/organizations/${org()}${pick(["", "/projects", "/members", "/projects/"])}`,
    process: () => `/v1/processes/${processId()}${processTail()}`,
    reports: () => `/v1/${pick(["reports", "reports", "%72eports", "REPORTS"])}${rest()}`,
    chat: () => pick(["/v1/chat/messages", "/v1/chat/messages", "/v1/chat", "/V1/CHAT/messages", "/v1/chat/messages/", "/v1/%63hat/x"]),
    status: () => pick(["/v1/status", "/v1/status/", "/V1/STATUS", "/v1/%73tatus", "/v1/status/x", "/v1/statuses"]),
    public: () => `/public${rest()}`,
    open: () => `/open${rest()}`,
    catchAll: () =>
      pick([
        "/",
        "/admin",
        "/v2/keys",
        "/v1",
        "/v1/",
        "/favicon.ico",
        "/.env",
        `/${"a".repeat(4000 + int(3000))}`,
        `/${"seg/".repeat(500)}end`,
        `/v1/mailboxes/mbx_123/${"x".repeat(6000)}`,
        "/%F0%9F%98%80/%E2%80%AE",
        `/internal/${hex(8)}`,
      ]),
    own: () =>
      pick([
        "/health",
        "/health/",
        "/HEALTH",
        "/v1/whoami",
        "/v1/%77hoami",
        "/V1/WHOAMI",
        "/v1/api-keys",
        "/v1/api-keys/x",
        "/v1/accounts",
        "/v1/keys/verify",
        "/.well-known/jwks.json",
        "/.well-known/x",
        "/demo/widget",
        "/dashboard",
        "/docs",
        "/openapi.json",
        "/v1/auth/x",
      ]),
    // Spellings meant to slip past a stricter route or out of a granted prefix: never forwarded, or forwarded only where
    // the table allows it.
    escape: () =>
      pick([
        "/v1/mailboxes/mbx_123/..%2F..%2Fadmin",
        "/v1/mailboxes/mbx_123/..%2fmbx_2/x",
        "/v1/mailboxes/mbx_123%2F..%2Fmbx_2/x",
        "/v1/mailboxes/mbx_123/%2e%2e/mbx_2",
        "/v1/mailboxes/mbx_123/.%2e/.%2e/admin",
        "/v1/mailboxes/mbx_123/%2E%2E/%2E%2E/%2E%2E/admin",
        "/v1/mailboxes/mbx_123/../mbx_2/x",
        "/v1/mailboxes/mbx_123/x/../../../admin",
        "/v1/mailboxes/mbx_123;/../admin",
        "/v1/mailboxes/mbx_123;x/messages",
        "/v1/mailboxes/mbx_123%3B/x",
        "/v1/mailboxes/mbx_123%5C..%5Cmbx_2",
        "/v1/mailboxes/mbx_123/\\..\\..\\admin",
        "/v1/mailboxes//mbx_123/x",
        "//v1/mailboxes/mbx_123",
        "/v1//mailboxes/mbx_123",
        "/v1/processes/p1/runs;x",
        "/v1/processes/p1/runs%2F",
        "/v1/processes/p1/runs%2f.",
        "/v1/processes/p1/./runs",
        "/v1/processes/p1//runs",
        "/v1/processes/p1/x/../runs",
        "/v1/processes/p1%2Fruns",
        `/api/v1/organizations/${w.accounts.a.accountId}/projects/warehouse/..%2F..%2F..%2F${w.accounts.b.accountId}%2Fprojects%2Fwarehouse`,
        `/api/v1/organizations/acme-corp/projects/warehouse/../../../globex/projects/warehouse`,
        "/public/..%2Fadmin",
        "/public/%2e%2e/admin",
        "/public/..%5Cadmin",
        "/public%2F..%2Fadmin",
        "/public/;/../admin",
        "/public/x/../../admin",
        "/v1/status/..%2F..%2Fadmin",
        "/v1/status;/admin",
        "/v1/status%3B/admin",
        "/v1/status/%2e%2e",
        `//127.0.0.1:${w.upstreamPort}/steal`,
        "//evil.example/steal",
        "/%2F%2Fevil.example/x",
        "/%5C%5Cevil.example/x",
        "/v1/%2e%2e/v1/whoami",
        "/v1/chat/..%2F..%2Fadmin",
        "/v1/chat/%2e%2e/%2e%2e/admin",
        "/v1/chat/messages;/../../admin",
        "/%ZZ/x",
        "/v1/mailboxes/mbx_123/%ZZ",
        "/v1/mailboxes/mbx_123/%E0%A4%A",
        // Decoded twice, `%25` reads as another escape.
        "/v1/mailboxes/mbx_123/%252e%252e/mbx_2/x",
        "/v1/mailboxes/mbx_123/%25%32%65%25%32%65/mbx_2/x",
        "/v1/mailboxes/mbx_123/%252F..%252Fmbx_2",
        "/public/%252e%252e/admin",
        "/open/%25%32%65%25%32%65/admin",
        // Text NFKC normalisation or case mapping changes: `ｒ`, `‥`, `．`, `ſ`, `ı`.
        "/v1/processes/p1/%EF%BD%92uns",
        "/v1/mailboxes/mbx_123/%E2%80%A5/mbx_2/x",
        "/v1/mailboxes/mbx_123/%EF%BC%8E%EF%BC%8E/mbx_2",
        "/public/%E2%80%A5/admin",
        "/v1/%C5%BFtatus",
        "/v1/processes/p1/run%C5%BF",
        "/v1/%C4%B1d",
      ]),
  };
  /** A path to something `who` holds a grant for (its own resources, its own organization), so scoped keys get through. */
  const kind = (name: string) => (kinds[name] as () => string)();
  const granted = (who: Who | undefined) => {
    if (!who) return kind(pick(["public", "status", "mailbox"]));
    if (who.kind === "token") return kind("chat");
    const scope = pick(who.scopes);
    if (scope === "*") return kind(pick(["mailbox", "project", "process", "reports", "catchAll", "mailboxes"]));
    const [type, id] = scope.split(":");
    if (type === "mailbox") return `/v1/mailboxes/${id}${rest()}`;
    if (type === "process") return `/v1/processes/${id}${processTail()}`;
    return `/api/v1/organizations/${pick([who.accountId, who.slug])}/projects/${id}${rest()}`;
  };
  return Object.assign(kinds, { granted });
}

/** A spelling change that README says leaves the route alone: case, a trailing slash, an encoded unreserved character. */
function respell(path: string, d: Dice): string {
  const [pathname, query] = path.split(/\?(.*)/s);
  let p = pathname as string;
  const roll = d.int(4);
  if (roll === 0) p = p.replace(/[a-z]+/g, (word) => (d.chance(0.5) ? word.toUpperCase() : word));
  else if (roll === 1) p = p.endsWith("/") ? p.slice(0, -1) || "/" : `${p}/`;
  else if (roll === 2) {
    // Encode one letter: `%72` for `r`, in either case of hex digits.
    const letters = [...p.matchAll(/[a-zA-Z]/g)];
    if (letters.length > 0) {
      const { index } = d.pick(letters) as RegExpExecArray;
      const code = p.charCodeAt(index).toString(16);
      p = `${p.slice(0, index)}%${d.chance(0.5) ? code.toUpperCase() : code}${p.slice(index + 1)}`;
    }
  } else p = p.replace(/\/([^/]*)$/, (_, last: string) => `/${last}${d.pick(["%7E", "~", "-", "."])}`);
  return query === undefined ? p : `${p}?${query}`;
}

/** `text` with the character at `index` (of a key's random part) changed to a hex digit it is not. */
function flip(text: string, index: number, d: Dice): string {
  const digits = "0123456789abcdef";
  const other = digits[(digits.indexOf(text[index] as string) + 1 + d.int(15)) % 16];
  return text.slice(0, index) + other + text.slice(index + 1);
}

/** Credentials: the principal presented (null when none of the world's) and how. */
type Credential = { label: string; headers: Headers; query?: string; who: Who[]; raw?: string };

function credential(w: World, d: Dice, kit: Kit): Credential {
  const { pick, chance, hex, weighted } = d;
  const name = weighted([
    [5, "admin"],
    [5, "mailbox"],
    [4, "process"],
    [3, "project"],
    [2, "multi"],
    [3, "member"],
    [1, "expiring"],
    [1, "low"],
    [2, "otherAdmin"],
    [2, "otherMailbox"],
    [2, "revoked"],
    [3, "browserToken"],
    [2, "serverToken"],
    [1, "otherToken"],
    [3, "person"],
    [3, "secret"],
    [3, "none"],
    [3, "garbage"],
  ]);
  if (name === "none") return { label: "none", headers: {}, who: [] };
  const basic = (user: string, password = "") => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
  if (name === "person") {
    // A person's access token authenticates as them where it is a bearer token or the X-API-Key; nowhere else.
    const { raw, who } = of(w, "person");
    const [form, headers, proves] = pick([
      ["bearer", { Authorization: `Bearer ${raw}` }, true],
      ["x-api-key", { "X-API-Key": raw }, true],
      ["basic", { Authorization: basic(raw) }, false],
      ["stuck dot", { Authorization: `Bearer ${raw}.` }, false],
      ["custom header", { "X-Auth-Token": raw }, false],
      ["cookie", { Cookie: `token=${raw}; theme=dark` }, false],
    ]);
    return { label: `person/${form}`, headers, who: proves && who ? [who] : [], raw };
  }
  if (name === "secret") {
    // Every other secret of Keygate's, written where and how a client might: none of them authenticates here.
    const { refresh, cookie } = w.personSecrets;
    const key = of(w, "mailbox").raw;
    const [what, secret] = pick([
      ["refresh token", refresh],
      ["dashboard cookie", cookie],
      ["verify token", VERIFY_TOKEN],
      ["operator token", kit.OPERATOR_TOKEN],
      ["handshake token", of(w, "serverToken").raw],
      ["key", key],
    ]);
    const [where, headers, query] = pick([
      ["bearer", { Authorization: `Bearer ${secret}` }],
      ["x-api-key", { "X-API-Key": secret }],
      ["basic user", { Authorization: basic(secret) }],
      ["basic password", { Authorization: basic("user", secret) }],
      ["stuck dot", { "X-API-Key": `${secret}.` }],
      // A JWT in upper case is no token any more (base64 is case-sensitive); every other secret still is one.
      ["upper case", { Authorization: `Bearer ${/^eyJ/.test(secret) ? secret : secret.toUpperCase()}` }],
      ["custom header", { "X-Upstream-Token": secret }],
      ["cookie", { Cookie: `sid=${secret}` }],
      ["query", {}, `token=${encodeURIComponent(secret)}`],
    ]);
    return { label: `secret: ${what} (${where})`, headers, query, who: [], raw: secret };
  }
  if (name === "garbage") {
    const key = of(w, "admin").raw;
    const [label, headers] = pick([
      ["unknown key", { "X-API-Key": `acme_${hex(64)}` }],
      ["flipped key", { Authorization: `Bearer ${flip(key, 5 + d.int(key.length - 5), d)}` }],
      ["upper-case key", { Authorization: `Bearer ${key.toUpperCase()}` }],
      ["key and more", { "X-API-Key": `${key}0` }],
      ["basic", { Authorization: "Basic Zm9vOmJhcg==" }],
      ["bare bearer", { Authorization: "Bearer" }],
      ["long", { Authorization: `Bearer ${"x".repeat(5000)}` }],
      ["unicode", { "X-API-Key": kit.utf8Bytes("é😀\u202e") }],
      ["operator-shaped", { Authorization: `Bearer ${"o".repeat(40)}` }],
      [
        "alg none token",
        { Authorization: `Bearer ${kit.base64url({ alg: "none", typ: "keygate-chat+jwt" })}.${kit.base64url({ sub: "x" })}.` },
      ],
      [
        "foreign-signed token",
        { Authorization: `Bearer ${kit.jwt({ alg: "HS256", kid: "fuzz", typ: "keygate-chat+jwt" }, { sub: "x" }, "x".repeat(40))}` },
      ],
      ["empty X-API-Key", { "X-API-Key": "" }],
    ]);
    // `raw`: garbage built from a real key is judged as that key's client would be (it must not leak either).
    return { label: `garbage: ${label}`, headers, who: [], raw: key };
  }
  const principal = of(w, name);
  const raw = principal.raw;
  const who = principal.who ? [principal.who] : [];
  if (raw.includes(".")) {
    // A handshake token: as a browser sends it (with the Origin it was minted for) or not.
    const headers: Headers = { Authorization: `Bearer ${raw}` };
    if (principal.origin && chance(0.8)) headers.Origin = principal.origin;
    else if (chance(0.3)) headers.Origin = pick([kit.WIDGET, "https://evil.example"]);
    return { label: `${name}`, headers, who, raw };
  }
  const other = of(w, "mailbox").raw === raw ? of(w, "admin") : of(w, "mailbox");
  const [form, headers, extraWho] = weighted<[string, Headers | null, (Who | null)?]>([
    [12, ["bearer", { Authorization: `Bearer ${raw}` }]],
    [12, ["x-api-key", { "X-API-Key": raw }]],
    [1, ["lower-case bearer", { Authorization: `bearer ${raw}` }]],
    [1, ["spaced bearer", { Authorization: `Bearer   ${raw}  ` }]],
    [1, ["tab bearer", { Authorization: `Bearer\t${raw}` }]],
    [1, ["spaced x-api-key", { "X-API-Key": ` ${raw} ` }]],
    [2, ["x-api-key twice", { "X-API-Key": [raw, raw] }]],
    [1, ["x-api-key twice, another key second", { "X-API-Key": [raw, other.raw] }, other.who]],
    [1, ["both headers", { Authorization: `Bearer ${raw}`, "X-API-Key": raw }]],
    [1, ["both headers, another key", { Authorization: `Bearer ${raw}`, "X-API-Key": other.raw }, other.who]],
    [1, ["token form", { Authorization: `Token ${raw}` }]],
    [1, ["two in one", { Authorization: `Bearer ${raw},${raw}` }]],
    [1, ["quoted", { Authorization: `Bearer "${raw}"` }]],
    [1, ["semicolon", { "X-API-Key": `${raw};` }]],
    [1, ["proxy-authorization", { "Proxy-Authorization": `Bearer ${raw}` }]],
    [2, ["query", null]],
  ]);
  const label = `${name}Key/${form}`;
  if (headers === null) return { label, headers: {}, query: `userApiToken=${raw}`, who, raw };
  // Upper bound of who the request may prove to be: any key it carries, wherever Keygate may read it from.
  return { label, headers, who: extraWho ? [...who, extraWho] : who, raw };
}

/** Headers a client must not be able to pass to the upstream, or that test how Keygate reads the request. */
function oddHeaders(d: Dice, n: number) {
  const { pick, chance, int } = d;
  const headers: Headers = {};
  const tags: string[] = [];
  if (chance(0.35)) {
    for (let i = 0, count = 1 + int(3); i < count; i++) {
      const name = pick([
        "Keygate-Account-Id",
        "Keygate-User-Id",
        "Keygate-Role",
        "Keygate-Scopes",
        "Keygate-Key-Id",
        "Keygate-Auth-Method",
        "Keygate-Agent-Id",
        "Keygate-Request-Id",
        "Keygate-Assertion",
        "Keygate-Anything",
        "KEYGATE-ROLE",
        "keygate-account-id",
        "X-Keygate-User-Id",
        "X-Keygate-Role",
        "x-KEYGATE-scopes",
        "Keygate_Account_Id",
        "Keygate_Role",
        "KEYGATE_SCOPES",
        "X_Keygate_User_Id",
        "x_keygate_role",
        "Keygate-Role_",
      ]);
      const value = pick([`${FORGED}-${n}`, `${FORGED},*`, `*, ${FORGED}`, `admin ${FORGED}`]);
      headers[name] = chance(0.15) ? [value, `${FORGED}-again`] : value;
    }
    tags.push("forged");
  }
  if (chance(0.25)) {
    const name = pick([
      "X-HTTP-Method-Override",
      "x-http-method-override",
      "X-HTTP-Method",
      "X-Method-Override",
      "X_HTTP_Method_Override",
      "x_http_method_override",
      "X_HTTP_METHOD",
      "X_Method_Override",
      "X-Original-URL",
      "X_Rewrite_URL",
      "x-rewrite-url",
    ]);
    headers[name] = /url/i.test(name) ? pick(["/admin", "/v1/processes/p1/runs"]) : pick(["DELETE", "PUT", "PATCH", "GET", "delete"]);
    tags.push(`override ${name}`);
  }
  if (chance(0.15)) {
    // Headers the request's Connection header names are hop-by-hop: never forwarded.
    const named = pick(["X-Fuzz-Hop", "X-Fuzz-Hop, Keygate-Role", "x-fuzz-hop", "X-Fuzz-Hop , Keep-Alive"]);
    headers.Connection = `close, ${named}`;
    headers["X-Fuzz-Hop"] = `${HOP}-${n}`;
    if (named.includes("Keygate-Role")) headers["Keygate-Role"] = `${FORGED}-hop`;
    tags.push("connection-named");
  }
  if (chance(0.1)) {
    headers[pick(["TE", "Keep-Alive", "Proxy-Connection"])] = pick([`${HOP}`, `trailers, ${HOP}`]);
    tags.push("hop-by-hop");
  }
  if (chance(0.15)) {
    const [name, value] = pick([
      ["X-Forwarded-For", "203.0.113.9, 10.0.0.1"],
      ["Forwarded", "for=203.0.113.9;host=evil.example"],
      ["X-Forwarded-Host", "evil.example"],
      // Hosts a client chooses: never the assertion's issuer; on the dashboard's host nothing is forwarded.
      ["Host", "127.0.0.1:1@evil.example"],
      ["Host", "evil.example"],
      ["Host", DASHBOARD_HOST],
      ["Host", DASHBOARD_HOST.toUpperCase()],
      ["Cookie", "session=abc; other=1"],
      // Not gzip or br: the runtime would compress answers, and the fuzzer reads them as they come.
      ["Accept-Encoding", "x-unknown;q=1, identity;q=0.5"],
      ["X-Request-Id", "req_client"],
      ["X-Long", "v".repeat(8000)],
      ["X-Unicode", "\u00e9\u00ff"],
      ["X-Empty", ""],
      ["Content-Encoding", "gzip"],
      ["Via", "1.1 evil"],
    ]);
    headers[name] = value;
    tags.push(name);
  }
  return { headers, tags };
}

const METHODS: [number, string][] = [
  [30, "GET"],
  [20, "POST"],
  [8, "PUT"],
  [8, "PATCH"],
  [12, "DELETE"],
  [6, "OPTIONS"],
  [7, "HEAD"],
  [2, "TRACE"],
  [2, "PROPFIND"],
];

/** A body and its summary; framed explicitly (Content-Length or chunked), as node sends no framing for DELETE by itself. */
function body(d: Dice) {
  const { pick, int } = d;
  return pick<[string, string | Buffer]>([
    ["small JSON", JSON.stringify({ message: "hello", n: int(100) })],
    ["JSON with keygate fields", JSON.stringify({ accountId: "acc_forged", role: "admin", _method: "DELETE" })],
    ["form", "_method=DELETE&a=1"],
    ["empty", ""],
    ["bad JSON", '{"a":'],
    ["invalid UTF-8", Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])],
    ["NUL", "\u0000"],
    ["16 KiB + 1", "x".repeat(16 * 1024 + 1)],
    ["64 KiB", "y".repeat(64 * 1024)],
    ["200 KiB", "z".repeat(200 * 1024)],
  ]);
}

/** One gateway request, drawn from the dice alone: a path, a method, a credential, odd headers, a query and a body. */
function nextRequest(w: World, d: Dice, kit: Kit, n: number, paths: PathKinds) {
  const { pick, chance, weighted } = d;
  const cred = credential(w, d, kit);
  const kind = weighted([
    [10, "granted"],
    [7, "mailbox"],
    [2, "mailboxes"],
    [5, "project"],
    [1, "organization"],
    [5, "process"],
    [2, "reports"],
    [4, "chat"],
    [2, "status"],
    [2, "public"],
    [2, "open"],
    [3, "catchAll"],
    [2, "own"],
    [6, "escape"],
  ]);
  let path = kind === "granted" ? paths.granted(cred.who[0]) : (paths[kind] as () => string)();
  // Respelling draws as many numbers as the path has words, and paths hold this run's ids: it gets dice of its own, so
  // the main sequence never depends on them.
  if (kind !== "escape" && chance(0.2)) path = respell(path, dice(kit.mulberry32(d.int(2 ** 31))));
  const method = weighted(METHODS);
  const { headers: odd, tags } = oddHeaders(d, n);
  const headers: Headers = { ...odd, ...cred.headers, "X-Fuzz-Id": `g${n}` };
  if (!headers.Origin && chance(0.15)) headers.Origin = pick([kit.WIDGET, "https://evil.example", "null"]);
  if (method === "OPTIONS" && chance(0.5)) {
    headers["Access-Control-Request-Method"] = pick(["POST", "DELETE"]);
    headers["Access-Control-Request-Headers"] = "authorization, content-type";
  }
  headers["CF-Connecting-IP"] = chance(0.9) ? `10.${d.int(256)}.${d.int(256)}.${d.int(256)}` : "203.0.113.7";

  const query = [];
  if (cred.query) query.push(cred.query);
  if (chance(0.15))
    query.push(pick(["a=1", "_method=DELETE", "q=%F0%9F%98%80", "%ZZ=1", "x=%00", "userApiToken=", "a=1&a=2", `q=${"q".repeat(2000)}`]));
  if (query.length > 0) path += (path.includes("?") ? "&" : "?") + query.join("&");

  let payload: string | Buffer | undefined;
  let bodySummary = "";
  let chunked = false;
  const bodyAllowed = method !== "HEAD" && method !== "TRACE";
  if (bodyAllowed && (["POST", "PUT", "PATCH"].includes(method) ? chance(0.8) : chance(0.1))) {
    const [summary, bytes] = body(d);
    payload = bytes;
    chunked = chance(0.25);
    bodySummary = chunked ? `${summary}, chunked` : summary;
    if (chunked) headers["Transfer-Encoding"] = "chunked";
    else headers["Content-Length"] = String(Buffer.byteLength(bytes));
    if (chance(0.8)) headers["Content-Type"] = pick(["application/json", "text/plain", "application/x-www-form-urlencoded"]);
  }
  return {
    route: `gw:${kind}`,
    method,
    path,
    headers,
    body: payload,
    chunked,
    credential: [cred.label, ...tags].join(" + "),
    bodySummary,
    fuzzId: `g${n}`,
    who: cred.who,
    presented: cred.raw,
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Checks of what the upstream received.

/** A text as an upstream may read it: as it is, percent-decoded, and every base64 run in it decoded (`Basic ...`). */
function decodings(text: string): string[] {
  const out = [text];
  try {
    out.push(decodeURIComponent(text));
  } catch {
    // not percent-encoding
  }
  for (const view of [...out])
    for (const [run] of view.matchAll(/[A-Za-z0-9+/_-]{20,}={0,2}/g)) out.push(Buffer.from(run, "base64").toString("latin1"));
  return out.map((view) => view.toLowerCase());
}

/** Every failure the upstream's record of one forwarded request shows: [{kind, code}]. */
type GatewayRequest = ReturnType<typeof nextRequest> & { requestId?: string };

function checkForwarded(req: GatewayRequest, record: Received, ctx: Context): Failure[] {
  const failures: Failure[] = [];
  const fail = (kind: string, code: string) => failures.push({ kind, code });
  const headers: Record<string, string> = Object.create(null);
  const names: string[] = [];
  for (let i = 0; i < record.rawHeaders.length; i += 2) {
    const name = record.rawHeaders[i] as string;
    const lower = name.toLowerCase();
    names.push(name);
    const value = record.rawHeaders[i + 1] ?? "";
    headers[lower] = lower in headers ? `${headers[lower]}, ${value}` : value;
  }
  const everything = `${record.url}\n${record.rawHeaders.join("\n")}`;
  const method = headers["keygate-auth-method"];
  const authenticated = method !== "none";

  if (record.method !== req.method) fail("upstream received another method", `${req.method} -> ${record.method}`);

  // Secrets: no key, token, hash or other secret of Keygate's reaches the upstream, on any route, in any case, percent- or
  // base64-encoded, whoever presented it and however.
  const readable = decodings(everything);
  for (const [secret, what] of ctx.secrets) {
    if (!readable.some((view) => view.includes(secret.toLowerCase()))) continue;
    const presented = secret === req.presented;
    fail(`${presented ? `the client's ${what}` : what} reached the upstream`, `${authenticated ? "authenticated" : "public"} route`);
  }
  if (/[?&]userApiToken=/.test(record.url)) fail("?userApiToken= reached the upstream", record.url.slice(0, 80));
  if (/[?&]_method=/i.test(record.url)) fail("a _method override reached the upstream", record.url.slice(0, 80));

  for (const name of names) {
    const normal = name.toLowerCase().replaceAll("_", "-");
    const value = headers[name.toLowerCase()] as string;
    if (value.includes(FORGED) || name.toLowerCase().includes(FORGED)) fail("a client's Keygate-* header reached the upstream", name);
    else if ((normal.startsWith("keygate-") || normal.startsWith("x-keygate-")) && !IDENTITY_HEADERS.has(name.toLowerCase())) {
      fail("an identity header Keygate does not set reached the upstream", name);
    }
    if (value.includes(HOP)) fail("a hop-by-hop header reached the upstream", name);
    // `_` and `-` are one to CGI-style servers (WSGI, Rack: HTTP_X_HTTP_METHOD_OVERRIDE), as README says of Keygate_Role.
    if (OVERRIDES.has(normal)) fail("a method or path override reached the upstream", name);
  }
  for (const name of IDENTITY_HEADERS) {
    const count = names.filter((n) => n.toLowerCase() === name).length;
    if (count > 1) fail("an identity header reached the upstream twice", name);
  }

  // Who the upstream is told the caller is must be a principal the client presented.
  const { pathname } = new URL(record.url, "http://upstream");
  let who: Who | null = null;
  if (method === "none") {
    for (const name of ["keygate-account-id", "keygate-key-id", "keygate-user-id", "keygate-assertion", "keygate-role"]) {
      if (name in headers) fail("a public request reached the upstream with an identity", name);
    }
  } else if (method === "key" || method === "token" || method === "session") {
    const told: Record<string, (p: Who) => boolean> = {
      key: (p) => headers["keygate-key-id"] === p.keyId,
      token: (p) => headers["keygate-agent-id"] === p.agentId,
      session: (p) => headers["keygate-user-id"] === p.userId && headers["keygate-key-id"] === undefined,
    };
    const toldOf = told[method] as (p: Who) => boolean;
    who = req.who.find((p) => p.kind === method && toldOf(p) && headers["keygate-account-id"] === p.accountId) ?? null;
    if (!who) fail("the upstream was told of an identity the client did not present", `${method} for ${req.credential.split(" + ")[0]}`);
    const defect = assertionDefect(headers["keygate-assertion"], { ...ctx, method: record.method, pathname, headers });
    if (defect) fail("the assertion does not prove the forwarded request", defect);
  } else {
    fail("Keygate-Auth-Method is missing or unknown", String(method));
  }
  if (headers["keygate-request-id"] !== req.requestId) fail("Keygate-Request-Id is not the answer's X-Request-Id", "");

  // The path: never one an upstream could read two ways, never Keygate's own, and under every reading a route the table
  // allows for who the request proved to be (null: only public routes).
  if (AMBIGUOUS.some((re) => re.test(pathname))) fail("forwarded a path an upstream could read two ways", pathname.slice(0, 80));
  const views = readings(pathname);
  if (isOwnPath(`/${views.strict.join("/")}`, ctx.own)) fail("forwarded one of Keygate's own paths", pathname.slice(0, 80));
  for (const [reading, parts] of Object.entries(views)) {
    const match = modelMatch(record.method, parts);
    const allowed = match && (who ? allows(match.route, match.params, who) : match.route.auth === "public");
    if (!allowed) {
      const principal = who ? (who.kind === "token" ? "token" : `${who.kind} [${who.scopes.join(",")}]`) : "no credential";
      fail("forwarded outside what the table allows", `${reading} reading: ${match?.name ?? "no route"} for ${principal}`);
    }
  }
  return failures;
}

// ---------------------------------------------------------------------------------------------------------------------
// The run.

function echoed(text: string): { url?: string } | null {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * Runs the gateway fuzz: `kit` carries the rest of the fuzzer (send, check, failure log, constants, helpers). Returns
 * the status histogram, per-route counts and how many requests were forwarded.
 */
export async function fuzzGateway({ seed, requests, parallel, kit }: { seed: number; requests: number; parallel: number; kit: Kit }) {
  const d = dice(kit.mulberry32((seed ^ 0x67617465) >>> 0));
  const upstream = await startUpstream();
  const assertion = assertionKey();
  const { mf, url } = await startKeygate({
    port: 0,
    bindings: {
      OPERATOR_TOKEN: kit.OPERATOR_TOKEN,
      ALLOW_HTTP: "true",
      JWT_SIGNING_KEYS: JSON.stringify([{ kid: "fuzz", secret: kit.SIGNING_SECRET }]),
      VERIFY_TOKEN,
      UPSTREAM_URL: upstream.origin,
      GATEWAY_ROUTES: JSON.stringify(GATEWAY_ROUTES),
      ASSERTION_SIGNING_KEYS: JSON.stringify([assertion.jwk]),
      PUBLIC_ORIGIN,
      DASHBOARD_HOST,
      // Well above anything this upstream takes, so a 504 can only be Keygate's own.
      UPSTREAM_TIMEOUT_MS: "10000",
    },
  });
  const port = Number(new URL(url).port);
  const send = (req: Outgoing) => kit.send({ ...req, port });
  const statuses: Record<string, number> = {};
  const perRoute: Record<string, Record<string, number>> = {};
  let forwarded = 0;
  try {
    const world = await seedWorld((method, path, options) => kit.call(method, path, { ...options, port }), send, kit);
    world.upstreamPort = new URL(upstream.origin).port;
    const secrets = new Map([
      [kit.OPERATOR_TOKEN, "operator token"],
      [kit.SIGNING_SECRET, "JWT signing secret"],
      [VERIFY_TOKEN, "verify token"],
      [assertion.jwk.d as string, "assertion signing key"],
    ]);
    for (const raw of world.keys) {
      secrets.set(raw, "raw key");
      secrets.set(createHash("sha256").update(raw).digest("hex"), "key hash (SHA-256)");
    }
    for (const token of world.tokens) secrets.set(token, "handshake or access token");
    secrets.set(world.personSecrets.refresh, "refresh token");
    secrets.set(world.personSecrets.cookie, "dashboard cookie");
    for (const secret of world.identitySecrets) secrets.set(secret, "identity secret");
    const ctx: Context = {
      own: await ownPaths(send),
      secrets: [...secrets],
      publicKey: assertion.publicKey,
      keygateOrigin: PUBLIC_ORIGIN,
      upstreamOrigin: upstream.origin,
    };
    // Keygate's own answers are checked as the rest of the fuzzer checks them; the secrets it knows are these.
    const keygateSecrets = ctx.secrets;
    const paths = pathKinds(world, d);

    for (let sent = 0; sent < requests; sent += parallel) {
      // Drawn before sending, so the sequence depends on the seed alone.
      const batch = Array.from({ length: Math.min(parallel, requests - sent) }, (_, i) => nextRequest(world, d, kit, sent + i, paths));
      const answers = await Promise.all(batch.map((req) => send(req)));
      batch.forEach((req: GatewayRequest, i) => {
        const res = answers[i] as Answer;
        const records = upstream.take(req.fuzzId);
        const wasForwarded = records.length > 0;
        if (wasForwarded) forwarded += 1;
        const label = res.error !== undefined ? "error" : wasForwarded ? `${res.status}>` : String(res.status);
        statuses[label] = (statuses[label] ?? 0) + 1;
        const counts = perRoute[req.route] ?? {};
        perRoute[req.route] = counts;
        counts[label] = (counts[label] ?? 0) + 1;
        const failures: Failure[] = [];
        if (!wasForwarded || res.error !== undefined) failures.push(...kit.check(req, res, keygateSecrets));
        else {
          // The answer is the upstream's: it passes through, with Keygate's request id and rate-limit headers only.
          if (res.status >= 500) failures.push({ kind: "5xx answer", code: "forwarded" });
          if (res.status !== 200 || res.headers["x-fuzz-upstream"] !== "1") {
            failures.push({ kind: "a forwarded request answered otherwise than the upstream did", code: String(res.status) });
          }
          const cookies = [res.headers["set-cookie"] ?? []].flat();
          if (cookies.some((c) => /keygate_session/i.test(c)))
            failures.push({ kind: "the upstream set Keygate's session cookie", code: "" });
          if (!cookies.includes("upstream=1; Path=/"))
            failures.push({ kind: "the upstream's own cookie did not reach the client", code: "" });
          if (String(req.headers.Host ?? "").toLowerCase() === DASHBOARD_HOST)
            failures.push({ kind: "forwarded a request on the dashboard's host", code: req.path.slice(0, 80) });
          if (req.method !== "HEAD" && records.length === 1 && echoed(res.text)?.url !== records[0]?.url) {
            failures.push({ kind: "a forwarded request answered otherwise than the upstream did", code: "body" });
          }
          req.requestId = String(res.headers["x-request-id"]);
          if (records.length > 1) failures.push({ kind: "the upstream received one request more than once", code: String(records.length) });
          for (const record of records) failures.push(...checkForwarded(req, record, ctx));
        }
        for (const failure of failures) kit.failures.add(req, res, failure);
      });
      for (const stray of upstream.takeStrays()) {
        const req = { route: "gw:stray", method: stray.method, path: stray.url, headers: {}, credential: "-", bodySummary: "" };
        kit.failures.add(
          req,
          { status: 200, headers: {}, text: "" },
          { kind: "the upstream received a request the fuzzer did not send", code: "" },
        );
      }
    }
  } finally {
    await mf.dispose();
    await upstream.close();
  }
  return { statuses, perRoute, forwarded };
}
