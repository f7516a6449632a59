import { decodeJwt, decodeProtectedHeader } from "jose";
import { describe, expect, it } from "vitest";
import { AUDIENCE, ISSUER, TOKEN_TYPE } from "../../src/tokens/handshake";
import { call, callWith, chat, createAgent, createKey, expectProblem, handshake, provision, rows, WIDGET_ORIGIN, widget } from "../helpers";

/** What a customer's backend computes for its page: hex HMAC-SHA256 of the user id under the agent's identity secret. */
async function proof(secret: string, userId: string): Promise<string> {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(userId)));
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

describe("POST /v1/handshake from a browser", () => {
  it("gives an allowed origin a one-hour token bound to it", async () => {
    const { account, key } = await provision();
    const agent = await createAgent(key.key);
    const before = Math.floor(Date.now() / 1000);
    const res = await handshake(agent.id);
    expect(res.status).toBe(200);
    expect(res.headers.get("Cache-Control")).toBe("no-store");
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe(WIDGET_ORIGIN);
    expect(res.headers.get("Vary")).toContain("Origin");
    const body = await res.json<{ token: string; expiresIn: number }>();
    expect(body.expiresIn).toBe(3600);
    expect(decodeProtectedHeader(body.token)).toEqual({ alg: "HS256", kid: "test-2", typ: TOKEN_TYPE });
    const claims = decodeJwt(body.token);
    expect(claims).toMatchObject({ iss: ISSUER, aud: AUDIENCE, agt: agent.id, acc: account.id, origin: WIDGET_ORIGIN });
    expect(claims.sub).toMatch(/^anon_[0-9a-f]{24}$/);
    expect(claims.jti).toEqual(expect.any(String));
    expect((claims.exp as number) - (claims.iat as number)).toBe(3600);
    expect(claims.iat).toBeGreaterThanOrEqual(before);
  });

  it("uses the agent's token lifetime", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key, { tokenTtlSeconds: 300 });
    const body = await (await handshake(agent.id)).json<{ token: string; expiresIn: number }>();
    expect(body.expiresIn).toBe(300);
    const claims = decodeJwt(body.token);
    expect((claims.exp as number) - (claims.iat as number)).toBe(300);
  });

  it("refuses every origin that is not exactly an allowed one, without CORS headers", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key, { allowedOrigins: [WIDGET_ORIGIN, "https://other.example:8443"] });
    const refused = [
      "null",
      "https://ok.example.evil.com",
      "http://ok.example",
      "https://ok.example.",
      "https://ok.example:8443",
      "https://other.example",
      "https://OK.example",
      null,
    ];
    for (const origin of refused) {
      const res = await handshake(agent.id, origin);
      await expectProblem(res, 403, "origin_not_allowed");
      expect(res.headers.get("Access-Control-Allow-Origin"), String(origin)).toBeNull();
    }
    expect((await handshake(agent.id, "https://other.example:8443")).status).toBe(200);
  });

  it("answers CORS preflights for allowed origins only, echoing the origin, never *", async () => {
    const { key } = await provision();
    await createAgent(key.key, { allowedOrigins: ["https://shop.example"] });
    const preflight = (origin: string) =>
      call("/v1/handshake", {
        method: "OPTIONS",
        headers: { Origin: origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type" },
      });
    const ok = await preflight("https://shop.example");
    expect(ok.status).toBe(204);
    expect(ok.headers.get("Access-Control-Allow-Origin")).toBe("https://shop.example");
    expect(ok.headers.get("Access-Control-Allow-Methods")).toBe("POST");
    expect(ok.headers.get("Access-Control-Allow-Headers")).toContain("Content-Type");
    expect(ok.headers.get("Vary")).toContain("Origin");
    for (const origin of ["https://evil.example", "https://shop.example.evil.com", "null"]) {
      const res = await preflight(origin);
      await expectProblem(res, 403, "origin_not_allowed");
      expect(res.headers.get("Access-Control-Allow-Origin")).toBeNull();
    }
    const chatPreflight = await call("/v1/chat/messages", {
      method: "OPTIONS",
      headers: { Origin: "https://shop.example", "Access-Control-Request-Method": "POST" },
    });
    expect(chatPreflight.status).toBe(204);
    expect(chatPreflight.headers.get("Access-Control-Allow-Headers")).toContain("Authorization");
  });

  it("makes an error readable only by the origin the request proved, and varies every answer on Origin", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    // Another agent allows another origin: knowing that origin must not make other agents' answers readable to it.
    await createAgent(key.key, { allowedOrigins: ["https://other.example"] });
    const other = { Origin: "https://other.example" };
    const answers = [
      await call("/v1/handshake", { headers: other, body: { agentId: `agt_${"0".repeat(24)}` } }),
      await call("/v1/handshake", { headers: other, body: { agentId: "nope" } }),
      await call("/v1/handshake/elsewhere", { headers: other, body: {} }),
      await handshake(agent.id, "https://other.example"),
      await chat((await (await handshake(agent.id)).json<{ token: string }>()).token, "https://other.example"),
    ];
    for (const res of answers) {
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.headers.get("Access-Control-Allow-Origin")).toBeNull();
    }
    const refusedPreflight = await call("/v1/chat/messages", { method: "OPTIONS", headers: { Origin: "https://evil.example" } });
    await expectProblem(refusedPreflight, 403, "origin_not_allowed");
    expect(refusedPreflight.headers.get("Vary")).toContain("Origin");
    // Management routes never speak CORS, whatever the origin.
    const managed = await call("/v1/whoami", { key: key.key, headers: { Origin: WIDGET_ORIGIN } });
    expect(managed.headers.get("Access-Control-Allow-Origin")).toBeNull();
  });

  it("refuses a body that is not declared JSON, so every browser call is preflighted", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    const res = await call("/v1/handshake", {
      headers: { Origin: WIDGET_ORIGIN, "Content-Type": "text/plain" },
      body: JSON.stringify({ agentId: agent.id }),
    });
    await expectProblem(res, 415, "unsupported_media_type");
    await expectProblem(await handshake("agt_nope"), 400, "invalid_request");
    await expectProblem(await handshake(`agt_${"0".repeat(24)}`), 404, "not_found");
  });

  it("stops tokens minted for an origin the agent no longer allows, on their next request", async () => {
    const { provisioned, agent, token } = await widget();
    expect((await chat(token)).status).toBe(200);
    await call(`/v1/agents/${agent.id}`, { method: "PATCH", key: provisioned.key.key, body: { allowedOrigins: ["https://new.example"] } });
    await expectProblem(await chat(token), 401, "invalid_token");
  });

  it("stops a disabled agent: no new tokens, and its tokens stop on their next request", async () => {
    const { provisioned, agent, token } = await widget();
    expect((await chat(token)).status).toBe(200);
    const patched = await call(`/v1/agents/${agent.id}`, { method: "PATCH", key: provisioned.key.key, body: { disabled: true } });
    expect(await patched.json()).toMatchObject({ disabled: true });
    await expectProblem(await handshake(agent.id), 403, "agent_disabled");
    await expectProblem(await chat(token), 403, "agent_disabled");
    await call(`/v1/agents/${agent.id}`, { method: "PATCH", key: provisioned.key.key, body: { disabled: false } });
    expect((await chat(token)).status).toBe(200);
  });

  it("is rate limited per client IP and per agent", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    const ip = { "CF-Connecting-IP": "198.51.100.77" };
    const limits = { HANDSHAKE_IP_RATE_LIMIT: "2/60", HANDSHAKE_AGENT_RATE_LIMIT: "3/60" };
    const send = (headers: Record<string, string>) =>
      callWith(limits, "/v1/handshake", { headers: { Origin: WIDGET_ORIGIN, ...headers }, body: { agentId: agent.id } });
    expect((await send(ip)).status).toBe(200);
    expect((await send(ip)).status).toBe(200);
    const limited = await send(ip);
    await expectProblem(limited, 429, "rate_limited");
    expect(limited.headers.get("Retry-After")).not.toBeNull();
    // Another address gets the agent's third token; then the agent's own budget is spent, whatever the address.
    expect((await send({ "CF-Connecting-IP": "198.51.100.78" })).status).toBe(200);
    await expectProblem(await send({ "CF-Connecting-IP": "198.51.100.79" }), 429, "rate_limited");
  });
});

describe("end-user identity in browser handshakes", () => {
  it("never lets a browser name its user without the backend's proof", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    // What an attacker sends with a forged Origin: no proof, someone else's user id.
    const res = await handshake(agent.id, WIDGET_ORIGIN, { body: { userId: "customer-42" } });
    const problem = await expectProblem(res, 400, "invalid_request");
    expect(problem.errors).toEqual([{ field: "userHash", message: expect.stringContaining("HMAC-SHA256") }]);
    expect(JSON.stringify(problem)).not.toContain("eyJ");
    for (const userHash of ["0".repeat(64), await proof(agent.identitySecret, "customer-43")]) {
      await expectProblem(
        await handshake(agent.id, WIDGET_ORIGIN, { body: { userId: "customer-42", userHash } }),
        403,
        "identity_unverified",
      );
    }
    // An anonymous handshake always gets a fresh subject of its own.
    const subjects = new Set<string>();
    for (let i = 0; i < 3; i++) subjects.add(decodeJwt((await (await handshake(agent.id)).json<{ token: string }>()).token).sub as string);
    expect(subjects.size).toBe(3);
    for (const sub of subjects) expect(sub).toMatch(/^anon_[0-9a-f]{24}$/);
  });

  it("takes the user id when the page carries the backend's HMAC of it", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    expect(agent.identitySecret).toMatch(/^idsec_[0-9a-f]{64}$/);
    const userHash = await proof(agent.identitySecret, "customer-42");
    const res = await handshake(agent.id, WIDGET_ORIGIN, { body: { userId: "customer-42", userHash } });
    expect(res.status).toBe(200);
    expect(decodeJwt((await res.json<{ token: string }>()).token)).toMatchObject({ sub: "customer-42", origin: WIDGET_ORIGIN });
    // Another agent's secret proves nothing here.
    const other = await createAgent(key.key);
    const foreign = await proof(other.identitySecret, "customer-42");
    await expectProblem(
      await handshake(agent.id, WIDGET_ORIGIN, { body: { userId: "customer-42", userHash: foreign } }),
      403,
      "identity_unverified",
    );
  });

  it("shows the identity secret once and replaces it on rotation, old proofs refused at once", async () => {
    const { account, admin, key } = await provision();
    const agent = await createAgent(key.key);
    const oldProof = await proof(agent.identitySecret, "u-1");
    for (const res of [await call(`/v1/agents/${agent.id}`, { key: key.key }), await call("/v1/agents", { key: key.key })]) {
      expect(await res.text()).not.toContain(agent.identitySecret);
    }
    const rotated = await call(`/v1/agents/${agent.id}/identity-secret`, { key: key.key, body: {} });
    expect(rotated.status).toBe(200);
    expect(rotated.headers.get("Cache-Control")).toBe("no-store");
    const { identitySecret } = await rotated.json<{ identitySecret: string }>();
    expect(identitySecret).toMatch(/^idsec_[0-9a-f]{64}$/);
    expect(identitySecret).not.toBe(agent.identitySecret);
    await expectProblem(
      await handshake(agent.id, WIDGET_ORIGIN, { body: { userId: "u-1", userHash: oldProof } }),
      403,
      "identity_unverified",
    );
    const fresh = await handshake(agent.id, WIDGET_ORIGIN, { body: { userId: "u-1", userHash: await proof(identitySecret, "u-1") } });
    expect(fresh.status).toBe(200);
    expect(
      await rows(
        "SELECT actor FROM audit_events WHERE account_id = ? AND action = 'agent.identity_secret_rotated' AND target = ?",
        account.id,
        agent.id,
      ),
    ).toEqual([{ actor: admin.id }]);
  });

  it("reserves anon_ ids for anonymous visitors", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    const userHash = await proof(agent.identitySecret, "anon_0123456789abcdef01234567");
    await expectProblem(
      await handshake(agent.id, WIDGET_ORIGIN, { body: { userId: "anon_0123456789abcdef01234567", userHash } }),
      400,
      "invalid_request",
    );
    await expectProblem(
      await call("/v1/handshake", { key: key.key, body: { agentId: agent.id, userId: "anon_0123456789abcdef01234567" } }),
      400,
      "invalid_request",
    );
  });

  it("keeps separate budgets: an anonymous flood starves neither identified users nor the backend", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    const limits = { HANDSHAKE_AGENT_RATE_LIMIT: "2/60", HANDSHAKE_USER_RATE_LIMIT: "2/60" };
    const browser = (body: Record<string, unknown> = {}) =>
      callWith(limits, "/v1/handshake", { headers: { Origin: WIDGET_ORIGIN }, body: { agentId: agent.id, ...body } });
    expect((await browser()).status).toBe(200);
    expect((await browser()).status).toBe(200);
    await expectProblem(await browser(), 429, "rate_limited");

    const server = await callWith(limits, "/v1/handshake", { key: key.key, body: { agentId: agent.id, userId: "user-7" } });
    expect(server.status).toBe(200);
    const identified = { userId: "user-8", userHash: await proof(agent.identitySecret, "user-8") };
    expect((await browser(identified)).status).toBe(200);
    expect((await browser(identified)).status).toBe(200);
    // Each identified user has a budget of their own.
    await expectProblem(await browser(identified), 429, "rate_limited");
    expect((await browser({ userId: "user-9", userHash: await proof(agent.identitySecret, "user-9") })).status).toBe(200);
  });
});

describe("POST /v1/handshake from a backend (server-side minting)", () => {
  it("mints a token for one end user with a full-access key of the agent's account, no Origin needed", async () => {
    const { account, key } = await provision();
    const agent = await createAgent(key.key);
    const res = await call("/v1/handshake", { key: key.key, body: { agentId: agent.id, userId: "user-7" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Limit")).toBe("60");
    const { token, expiresIn } = await res.json<{ token: string; expiresIn: number }>();
    expect(expiresIn).toBe(3600);
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({ sub: "user-7", agt: agent.id, acc: account.id });
    expect(claims.origin).toBeUndefined();
    // Not bound to an origin: usable by the backend itself, or handed to the end user's browser.
    expect((await chat(token, null)).status).toBe(200);
    expect((await chat(token, WIDGET_ORIGIN)).status).toBe(200);
  });

  it("needs a userId, a full-access key, and an agent of the key's own account", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    const other = await provision();
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_1"] });
    await expectProblem(await call("/v1/handshake", { key: key.key, body: { agentId: agent.id } }), 400, "invalid_request");
    await expectProblem(
      await call("/v1/handshake", { key: scoped.key, body: { agentId: agent.id, userId: "u" } }),
      403,
      "insufficient_scope",
    );
    await expectProblem(await call("/v1/handshake", { key: other.key.key, body: { agentId: agent.id, userId: "u" } }), 404, "not_found");
    await expectProblem(
      await call("/v1/handshake", { headers: { "X-API-Key": "garbage" }, body: { agentId: agent.id, userId: "u" } }),
      401,
      "malformed_credentials",
    );
    const userHash = await proof(agent.identitySecret, "u");
    await expectProblem(
      await call("/v1/handshake", { key: key.key, body: { agentId: agent.id, userId: "u", userHash } }),
      400,
      "invalid_request",
    );
  });
});

describe("POST /v1/chat/messages", () => {
  it("works with API keys too: server-to-server keys work on every API", async () => {
    const { key } = await provision();
    const res = await chat(key.key, null, "from a server");
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Limit")).toBe("60");
    expect(await res.text()).toContain('"text":" server"');
  });

  it("counts chat requests per agent user", async () => {
    const { token } = await widget();
    const limited = (t: string) =>
      callWith({ CHAT_RATE_LIMIT: "2/60" }, "/v1/chat/messages", { key: t, headers: { Origin: WIDGET_ORIGIN }, body: { message: "x" } });
    expect((await limited(token)).status).toBe(200);
    const second = await limited(token);
    expect(second.headers.get("X-RateLimit-Remaining")).toBe("0");
    const third = await limited(token);
    await expectProblem(third, 429, "rate_limited");
    expect(third.headers.get("Access-Control-Allow-Origin")).toBe(WIDGET_ORIGIN);
  });

  it("refuses a bad body", async () => {
    const { token } = await widget();
    const res = await call("/v1/chat/messages", { key: token, headers: { Origin: WIDGET_ORIGIN }, body: { text: "wrong field" } });
    await expectProblem(res, 400, "invalid_request");
  });
});
