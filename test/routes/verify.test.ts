import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, callWith, createKey, createUser, expectProblem, expire, own, provision, rows } from "../helpers";
import { lastUseSent } from "../usage/seed";

const TOKEN = "test-verify-token-0123456789abcdef0123";

type Verdict = Record<string, unknown>;

/** The two ways a backend verifies: over HTTP with VERIFY_TOKEN, and from a Worker through the service binding. */
const ways: [string, (body: unknown) => Promise<Verdict>][] = [
  [
    "POST /v1/keys/verify",
    async (body) => {
      const res = await call("/v1/keys/verify", { headers: { Authorization: `Bearer ${TOKEN}` }, body });
      expect(res.status).toBe(200);
      expect(res.headers.get("Cache-Control")).toBe("no-store");
      return res.json();
    },
  ],
  [
    "the service binding",
    async (body) => (await env.CALLER.fetch("http://caller/", { method: "POST", body: JSON.stringify(body) })).json(),
  ],
];

describe.each(ways)("verify through %s", (_, verify) => {
  it("answers who a valid key is and spends its limit as a gateway request would, cost included", async () => {
    const { account, admin, key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 5, windowSeconds: 60 } });
    const verdict = await verify({ key: limited.key });
    expect(verdict).toEqual({
      valid: true,
      accountId: account.id,
      keyId: limited.id,
      userId: admin.id,
      role: "admin",
      scopes: ["*"],
      rateLimit: { limit: 5, remaining: 4, reset: expect.any(Number) },
      credits: null,
      requestId: expect.any(String),
      externalId: null,
      meta: null,
      account: { externalId: null, meta: null },
    });
    expect(await verify({ key: limited.key, cost: 3 })).toMatchObject({ valid: true, rateLimit: { remaining: 1 } });
    expect(await verify({ key: limited.key, cost: 2 })).toEqual({ valid: false, code: "rate_limited", retryAfter: expect.any(Number) });
    // The same budget as the key's requests: one is left.
    const res = await call("/v1/whoami", { key: limited.key });
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("0");
    await expectProblem(await call("/v1/whoami", { key: limited.key }), 429, "rate_limited");
    await lastUseSent(limited.id);
    expect(await rows("SELECT last_auth_method FROM api_keys WHERE id = ?", limited.id)).toEqual([
      { last_auth_method: expect.any(String) },
    ]);
  });

  it("refuses revoked, expired, unknown and malformed keys with the codes a request would get", async () => {
    const { key } = await provision();
    const revoked = await createKey(key.key);
    await call(`/v1/api-keys/${revoked.id}`, { method: "DELETE", key: key.key });
    const expired = await createKey(key.key);
    await expire(expired.id);
    const member = await createUser(key.key, "member");
    const owned = await createKey(key.key, { ownerId: member.id });
    await call(`/v1/users/${member.id}`, { method: "PATCH", key: key.key, body: { disabled: true } });
    expect(await verify({ key: revoked.key })).toEqual({ valid: false, code: "key_revoked" });
    expect(await verify({ key: expired.key })).toEqual({ valid: false, code: "key_expired" });
    expect(await verify({ key: owned.key })).toEqual({ valid: false, code: "key_owner_disabled" });
    expect(await verify({ key: `${key.key.slice(0, -4)}0000` })).toEqual({ valid: false, code: "invalid_key" });
    expect(await verify({ key: "not-a-key" })).toEqual({ valid: false, code: "invalid_key" });
  });

  it("checks a resource grant, spending nothing when the key lacks it", async () => {
    const { account, key } = await provision();
    await own(account.id, "mailbox:mbx_1", "mailbox:mbx_2");
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_1"], rateLimit: { limit: 3, windowSeconds: 60 } });
    expect(await verify({ key: scoped.key, resource: "mailbox:mbx_2" })).toEqual({ valid: false, code: "insufficient_scope" });
    expect(await verify({ key: scoped.key, resource: "mailbox:mbx_1" })).toMatchObject({
      valid: true,
      scopes: ["mailbox:mbx_1"],
      rateLimit: { remaining: 2 },
    });
    expect(await verify({ key: key.key, resource: "mailbox:mbx_2" })).toMatchObject({ valid: true });
  });

  it("never matches another account's resource, nor one no account owns, whatever the key's rights", async () => {
    const victim = await provision();
    await own(victim.account.id, "mailbox:mbx_victim");
    const { key } = await provision();
    // A key of another account naming the victim's mailbox in its own scopes gains nothing by it.
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_victim"], rateLimit: { limit: 3, windowSeconds: 60 } });
    for (const k of [key.key, scoped.key]) {
      expect(await verify({ key: k, resource: "mailbox:mbx_victim" })).toEqual({ valid: false, code: "not_found" });
      expect(await verify({ key: k, resource: "mailbox:mbx_nobody" })).toEqual({ valid: false, code: "not_found" });
    }
    // Nothing was spent on the refusals.
    expect(await verify({ key: scoped.key })).toMatchObject({ valid: true, rateLimit: { remaining: 2 } });
    expect(await verify({ key: victim.key.key, resource: "mailbox:mbx_victim" })).toMatchObject({ valid: true });
  });
});

describe("POST /v1/keys/verify", () => {
  it("needs the verify token, compared exactly; a wrong one spends the address's failure budget", async () => {
    const { key } = await provision();
    await expectProblem(await call("/v1/keys/verify", { body: { key: key.key } }), 401, "missing_credentials");
    for (const wrong of [TOKEN.slice(0, -1), `${TOKEN}x`, key.key]) {
      const res = await call("/v1/keys/verify", { headers: { Authorization: `Bearer ${wrong}` }, body: { key: key.key } });
      await expectProblem(res, 401, "invalid_verify_token");
    }
    const ip = { "CF-Connecting-IP": "10.77.0.1" };
    const codes: number[] = [];
    for (let i = 0; i < 32; i++)
      codes.push((await call("/v1/keys/verify", { headers: { ...ip, Authorization: "Bearer wrong" }, body: { key: key.key } })).status);
    expect(codes.slice(0, 30).every((s) => s === 401)).toBe(true);
    expect(codes.slice(30)).toEqual([429, 429]);
    // A refused verify token never reaches the key: no use is recorded.
    expect(await rows("SELECT last_used_at FROM api_keys WHERE id = ?", key.id)).toEqual([{ last_used_at: null }]);
  });

  it("is off (500 configuration_error) without VERIFY_TOKEN, and validates its body", async () => {
    const { key } = await provision();
    const off = await callWith({ VERIFY_TOKEN: "" }, "/v1/keys/verify", {
      headers: { Authorization: `Bearer ${TOKEN}` },
      body: { key: key.key },
    });
    await expectProblem(off, 500, "configuration_error");
    const bad = await call("/v1/keys/verify", {
      headers: { Authorization: `Bearer ${TOKEN}` },
      body: { key: key.key, cost: 0, resource: "x", extra: 1 },
    });
    expect((await expectProblem(bad, 400, "invalid_request")).errors).toEqual([
      { field: "resource", message: expect.any(String) },
      { field: "cost", message: expect.any(String) },
      { field: "extra", message: "is not a known field" },
    ]);
    await expectProblem(await call("/v1/keys/verify", { headers: { Authorization: `Bearer ${TOKEN}` } }), 405, "method_not_allowed");
  });
});

describe("the verify service binding", () => {
  it("rejects invalid input with an error naming the fields", async () => {
    const res = await env.CALLER.fetch("http://caller/", { method: "POST", body: JSON.stringify({ key: 1, cost: 0 }) });
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: "TypeError: invalid_request: key must be a string; cost must be an integer from 1 to 1000" });
  });
});
