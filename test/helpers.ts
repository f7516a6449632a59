import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { expect } from "vitest";
import worker from "../src/index";
import { checkContract } from "./contract";

export const ORIGIN = "https://keygate.test";
export const OPERATOR_TOKEN = "test-operator-token-0123456789abcdef";
export const VERIFY_TOKEN = "test-verify-token-0123456789abcdef0123";

let ipCounter = 0;
function nextIp(): string {
  ipCounter += 1;
  return `10.${(ipCounter >> 16) & 255}.${(ipCounter >> 8) & 255}.${ipCounter & 255}`;
}

type Init = { method?: string; key?: string; headers?: Record<string, string>; body?: unknown };

function request(path: string, init: Init = {}): Request {
  const headers = new Headers(init.headers);
  // Each request comes from its own client address unless the test names one, so per-IP failure limits only
  // trip in the tests that aim at them.
  if (!headers.has("CF-Connecting-IP")) headers.set("CF-Connecting-IP", nextIp());
  if (init.key !== undefined) headers.set("Authorization", `Bearer ${init.key}`);
  let body: string | undefined;
  if (init.body !== undefined) {
    body = typeof init.body === "string" ? init.body : JSON.stringify(init.body);
    if (!headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  }
  return new Request(path.startsWith("http") ? path : ORIGIN + path, { method: init.method ?? (body ? "POST" : "GET"), headers, body });
}

/**
 * A request through the deployed worker's own fetch handler, as a client would send it. Every answer is checked against
 * the OpenAPI contract of its route, so the whole suite proves the document true.
 */
export async function call(path: string, init: Init = {}): Promise<Response> {
  const req = request(path, init);
  const res = await exports.default.fetch(req.clone());
  await checkContract(req, res);
  return res;
}

/** The same, with some bindings replaced (another sunset, a broken D1); waits for `waitUntil` work to finish. */
export async function callWith(overrides: Partial<Cloudflare.Env>, path: string, init: Init = {}): Promise<Response> {
  const req = request(path, init);
  const ctx = createExecutionContext();
  const res = await worker.fetch(req.clone(), { ...env, ...overrides }, ctx);
  await waitOnExecutionContext(ctx);
  await checkContract(req, res);
  return res;
}

/**
 * Through the gateway: the same as `callWith`, without the contract check, because what the upstream answers is the
 * provider's, not Keygate's (Keygate's own problems on these paths are still checked by `expectProblem`).
 */
export async function through(overrides: Partial<Cloudflare.Env>, input: string | Request, init: Init = {}): Promise<Response> {
  const req = typeof input === "string" ? request(input, init) : input;
  const ctx = createExecutionContext();
  const res = await worker.fetch(req, { ...env, ...overrides }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

export type Provisioned = {
  account: { id: string; name: string; keyPrefix: string; membersCanCreateKeys: boolean; createdAt: string };
  admin: { id: string; email: string; role: string; disabled: boolean };
  key: KeyBody;
};

export type KeyBody = {
  id: string;
  key: string;
  name: string;
  prefix: string;
  start: string;
  scopes: string[];
  status: string;
  ownerId: string;
  createdBy: string;
  createdAt: string;
  expiresAt: string | null;
  rateLimit: { limit: number; windowSeconds: number } | null;
  rateLimits: { name: string; limit: number; windowSeconds: number }[] | null;
  lastUsedAt: string | null;
  lastAuthMethod: string | null;
  revokedAt: string | null;
  rotatedFrom: string | null;
};

let counter = 0;

/** A new account with its admin and the admin's full-access key. */
export async function provision(body: Record<string, unknown> = {}): Promise<Provisioned> {
  counter += 1;
  const res = await call("/v1/accounts", {
    headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` },
    body: { name: `Account ${counter}`, admin: { email: `admin${counter}@example.com` }, ...body },
  });
  expect(res.status).toBe(201);
  return res.json();
}

export async function createKey(key: string, body: Record<string, unknown> = {}): Promise<KeyBody> {
  const res = await call("/v1/api-keys", { key, body: { name: "test key", ...body } });
  expect(res.status, await res.clone().text()).toBe(201);
  return res.json();
}

export async function createUser(key: string, role: "admin" | "member"): Promise<{ id: string; email: string; role: string }> {
  counter += 1;
  const res = await call("/v1/users", { key, body: { email: `user${counter}@example.com`, role } });
  expect(res.status).toBe(201);
  return res.json();
}

/** A member of the account and a full-access key of theirs (created by the admin on their behalf). */
export async function memberWithKey(adminKey: string): Promise<{ user: { id: string }; key: KeyBody }> {
  const user = await createUser(adminKey, "member");
  return { user, key: await createKey(adminKey, { ownerId: user.id, name: "member key" }) };
}

/** Changes a key's row directly (to stand for time passing) and makes its counter read it again. */
export async function setKeyColumn(keyId: string, column: "expires_at" | "revoked_at", value: string): Promise<void> {
  await env.DB.prepare(`UPDATE api_keys SET ${column} = ? WHERE id = ?`).bind(value, keyId).run();
  await env.KEYS.getByName(`key:${keyId}`).reload();
}

/** Moves a key's expiry into the past, as if time had passed. */
export function expire(keyId: string): Promise<void> {
  return setKeyColumn(keyId, "expires_at", "2020-01-01T00:00:00.000Z");
}

/** Asserts the one error shape: RFC 9457 problem+json with a stable code and the request id. */
export async function expectProblem(res: Response, status: number, code: string): Promise<Record<string, unknown>> {
  const body = (await res.json()) as Record<string, unknown>;
  expect({ status: res.status, code: body.code }).toEqual({ status, code });
  expect(res.headers.get("Content-Type")).toBe("application/problem+json");
  expect(body).toMatchObject({ type: `urn:keygate:error:${code}`, status, code });
  expect(typeof body.title).toBe("string");
  expect(typeof body.detail).toBe("string");
  expect(body.requestId).toBe(res.headers.get("X-Request-Id"));
  expect(JSON.stringify(body)).not.toMatch(/at .*\.(ts|js):\d+/);
  return body;
}

export async function rows<T = Record<string, unknown>>(query: string, ...params: unknown[]): Promise<T[]> {
  return (
    await env.DB.prepare(query)
      .bind(...params)
      .all<T>()
  ).results;
}

export const SIGNING_KEYS = [
  { kid: "test-2", secret: "test-signing-secret-two-0123456789abcdef" },
  { kid: "test-1", secret: "test-signing-secret-one-0123456789abcdef" },
];
export const WIDGET_ORIGIN = "https://ok.example";

export type AgentBody = { id: string; name: string; allowedOrigins: string[]; tokenTtlSeconds: number; disabled: boolean };

/** An agent as its creation answers it: with the identity secret, shown this once. */
export type CreatedAgent = AgentBody & { identitySecret: string };

export async function createAgent(key: string, body: Record<string, unknown> = {}): Promise<CreatedAgent> {
  const res = await call("/v1/agents", { key, body: { name: "Support widget", allowedOrigins: [WIDGET_ORIGIN], ...body } });
  expect(res.status, await res.clone().text()).toBe(201);
  return res.json();
}

/** A browser's handshake: POST /v1/handshake from `origin` with the public agent id. */
export function handshake(agentId: string, origin: string | null = WIDGET_ORIGIN, extra: Init = {}): Promise<Response> {
  return call("/v1/handshake", {
    ...extra,
    headers: { ...(origin === null ? {} : { Origin: origin }), ...extra.headers },
    body: { agentId, ...(extra.body as object) },
  });
}

/** An account, an agent allowing WIDGET_ORIGIN and a token a browser at that origin got for it. */
export async function widget(): Promise<{ provisioned: Provisioned; agent: CreatedAgent; token: string }> {
  const provisioned = await provision();
  const agent = await createAgent(provisioned.key.key);
  const res = await handshake(agent.id);
  expect(res.status).toBe(200);
  const { token } = await res.json<{ token: string }>();
  return { provisioned, agent, token };
}

/** POST /v1/chat/messages with a bearer credential from an origin. */
export function chat(credential: string, origin: string | null = WIDGET_ORIGIN, message = "hello there"): Promise<Response> {
  return call("/v1/chat/messages", { key: credential, headers: origin === null ? {} : { Origin: origin }, body: { message } });
}

/** The provider's backend says `accountId` owns these resources (`mailbox:mbx_1`), as a gateway route or verify needs. */
export async function own(accountId: string, ...grants: string[]): Promise<void> {
  for (const grant of grants) {
    const res = await call(`/v1/resource-owners/${grant.replace(":", "/")}`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${VERIFY_TOKEN}` },
      body: { accountId },
    });
    expect(res.status).toBe(200);
  }
}
