import { createLocalJWKSet, decodeJwt, jwtVerify } from "jose";
import { describe, expect, it } from "vitest";
import {
  call,
  createAgent,
  createKey,
  createUser,
  expectProblem,
  handshake,
  OPERATOR_TOKEN,
  ORIGIN,
  own,
  provision,
  rows,
  through,
  WIDGET_ORIGIN,
} from "../helpers";
import { type Echo, GATEWAY, gw, UPSTREAM } from "./table";

async function echo(res: Response): Promise<Echo> {
  expect(res.status, await res.clone().text()).toBe(200);
  expect(res.headers.get("X-Upstream")).toBe("yes");
  return res.json();
}

describe("gateway: Robotomail's mailbox routes", () => {
  it("lets a mailbox-scoped key reach its own mailboxes only, and a full-access key all of its account's", async () => {
    const { account, key } = await provision();
    await own(account.id, "mailbox:mbx_1", "mailbox:mbx_2");
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_1"] });
    const seen = await echo(await gw("/v1/mailboxes/mbx_1/messages?unread=true", { key: scoped.key }));
    expect(seen).toMatchObject({ method: "GET", url: "/v1/mailboxes/mbx_1/messages?unread=true" });
    await expectProblem(await gw("/v1/mailboxes/mbx_2/messages", { key: scoped.key }), 403, "insufficient_scope");
    await expectProblem(await gw("/v1/mailboxes", { key: scoped.key, body: { name: "x" } }), 403, "insufficient_scope");
    // A spelling an upstream could read as another mailbox is never forwarded.
    await expectProblem(await gw("/v1/mailboxes/mbx_1%2F..%2Fmbx_2/messages", { key: scoped.key }), 404, "not_found");
    await echo(await gw("/v1/mailboxes/mbx_2/messages", { key: key.key }));
    expect((await echo(await gw("/v1/mailboxes", { key: key.key, body: { name: "x" } }))).body).toBe('{"name":"x"}');
  });

  it("refuses a mailbox the key has no grant for, and another account's, without spending", async () => {
    const { account, key } = await provision();
    await own(account.id, "mailbox:mbx_8", "mailbox:mbx_9");
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_9"], rateLimit: { limit: 2, windowSeconds: 60 } });
    for (let i = 0; i < 3; i++) await expectProblem(await gw("/v1/mailboxes/mbx_8/x", { key: scoped.key }), 403, "insufficient_scope");
    const other = await provision();
    await own(other.account.id, "mailbox:mbx_10");
    for (let i = 0; i < 3; i++) await expectProblem(await gw("/v1/mailboxes/mbx_10/x", { key: scoped.key }), 404, "not_found");
    const res = await gw("/v1/mailboxes/mbx_9/x", { key: scoped.key });
    await echo(res);
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("1");
  });
});

describe("gateway: Roboticks' organizations and projects", () => {
  it("lets a member limited to one project, and their key, reach that project of their own organization only", async () => {
    const { account, key } = await provision({ slug: `org-${crypto.randomUUID().slice(0, 8)}` });
    const other = await provision();
    const member = await createUser(key.key, "member");
    const granted = await call(`/v1/users/${member.id}`, { method: "PATCH", key: key.key, body: { grants: ["project:warehouse"] } });
    expect(granted.status).toBe(200);
    expect((await granted.json<{ grants: string[] }>()).grants).toEqual(["project:warehouse"]);
    // A full-access key of that member: its rights are the member's.
    const memberKey = await createKey(key.key, { ownerId: member.id });
    const slug = (await rows<{ slug: string }>("SELECT slug FROM accounts WHERE id = ?", account.id))[0]?.slug as string;
    for (const org of [account.id, slug]) {
      const seen = await echo(await gw(`/api/v1/organizations/${org}/projects/warehouse/devices`, { key: memberKey.key }));
      expect(seen.headers["keygate-scopes"]).toBe("project:warehouse");
    }
    await expectProblem(
      await gw(`/api/v1/organizations/${account.id}/projects/garage/devices`, { key: memberKey.key }),
      403,
      "insufficient_scope",
    );
    await expectProblem(
      await gw(`/api/v1/organizations/${other.account.id}/projects/warehouse/devices`, { key: memberKey.key }),
      404,
      "not_found",
    );
    // The admin reaches every project, of their own organization only.
    await echo(await gw(`/api/v1/organizations/${account.id}/projects/garage/devices`, { key: key.key }));
    await expectProblem(await gw(`/api/v1/organizations/${other.account.id}/projects/garage/devices`, { key: key.key }), 404, "not_found");
  });

  it("applies a change of the owner's grants on the next request", async () => {
    const { key } = await provision();
    const member = await createUser(key.key, "member");
    const memberKey = await createKey(key.key, { ownerId: member.id });
    const { account } = await (await call("/v1/whoami", { key: key.key }))
      .json<{ accountId: string }>()
      .then((w) => ({ account: w.accountId }));
    const path = `/api/v1/organizations/${account}/projects/lab/devices`;
    await echo(await gw(path, { key: memberKey.key }));
    await call(`/v1/users/${member.id}`, { method: "PATCH", key: key.key, body: { grants: ["project:warehouse"] } });
    await expectProblem(await gw(path, { key: memberKey.key }), 403, "insufficient_scope");
    await call(`/v1/users/${member.id}`, { method: "PATCH", key: key.key, body: { grants: ["*"] } });
    await echo(await gw(path, { key: memberKey.key }));
    expect(await rows("SELECT action FROM audit_events WHERE target = ? AND action = 'user.updated'", member.id)).toHaveLength(2);
  });

  it("refuses grants of unknown resource types, and a slug another account holds", async () => {
    const { key } = await provision();
    const member = await createUser(key.key, "member");
    const res = await call(`/v1/users/${member.id}`, { method: "PATCH", key: key.key, body: { grants: ["planet:mars"] } });
    expect((await expectProblem(res, 400, "invalid_request")).errors).toEqual([{ field: "grants[0]", message: expect.any(String) }]);
    const slug = `taken-${crypto.randomUUID().slice(0, 8)}`;
    await provision({ slug });
    const again = await call("/v1/accounts", {
      headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` },
      body: { name: "Second", slug, admin: { email: "second@example.com" } },
    });
    await expectProblem(again, 409, "slug_taken");
    expect(await rows("SELECT id FROM users WHERE email = 'second@example.com'")).toEqual([]);
  });
});

describe("gateway: RPA Watch's processes", () => {
  it("lets process-scoped keys reach their processes, and full access only where the route asks for it", async () => {
    const { account, key } = await provision();
    await own(account.id, "process:proc_a", "process:proc_b", "process:proc_c");
    const scoped = await createKey(key.key, { processIds: ["proc_a", "proc_b"] });
    await echo(await gw("/v1/processes/proc_b/runs", { key: scoped.key }));
    await expectProblem(await gw("/v1/processes/proc_c/runs", { key: scoped.key }), 403, "insufficient_scope");
    await expectProblem(await gw("/v1/processes/proc_a/runs", { method: "DELETE", key: scoped.key }), 403, "insufficient_scope");
    await echo(await gw("/v1/processes/proc_a/runs", { method: "DELETE", key: key.key }));
    // The catch-all needs full access; without a key nothing passes.
    await expectProblem(await gw("/v1/anything", { key: scoped.key }), 403, "insufficient_scope");
    await expectProblem(await gw("/v1/anything"), 401, "missing_credentials");
  });
});

describe("gateway: what the upstream receives", () => {
  it("never the client's credential nor a forged identity, always Keygate's identity headers and a verifiable assertion", async () => {
    const { account, admin, key } = await provision();
    await own(account.id, "mailbox:mbx_1");
    const res = await gw("/v1/mailboxes/mbx_1/messages?userApiToken=leak&page=2", {
      method: "POST",
      headers: {
        "X-API-Key": key.key,
        "Keygate-Account-Id": "acc_forged",
        "X-Keygate-User-Id": "usr_forged",
        "keygate-role": "admin",
        Cookie: "session=provider",
        "X-Custom": "kept",
        // The table judged a POST: the upstream must not be told to act as another method.
        "X-HTTP-Method-Override": "DELETE",
      },
      body: { subject: "hi" },
    });
    const seen = await echo(res);
    expect(seen.url).toBe("/v1/mailboxes/mbx_1/messages?page=2");
    expect(seen.body).toBe('{"subject":"hi"}');
    expect(JSON.stringify(seen)).not.toContain(key.key);
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers["x-api-key"]).toBeUndefined();
    expect(seen.headers["x-keygate-user-id"]).toBeUndefined();
    expect(seen.headers["x-http-method-override"]).toBeUndefined();
    expect(seen.headers).toMatchObject({
      "keygate-account-id": account.id,
      "keygate-key-id": key.id,
      "keygate-user-id": admin.id,
      "keygate-role": "admin",
      "keygate-scopes": "*",
      "keygate-auth-method": "key",
      "keygate-request-id": res.headers.get("X-Request-Id"),
      cookie: "session=provider",
      "x-custom": "kept",
    });
    // The upstream's own headers come back; Keygate adds its request id and rate-limit headers, nothing of its own.
    expect(res.headers.get("X-RateLimit-Limit")).toBe("60");
    expect(res.headers.get("X-Frame-Options")).toBeNull();
    expect(res.headers.get("Keep-Alive")).toBeNull();
    // Nor a header the upstream's Connection names.
    const hop = await gw("/v1/anything", { key: key.key, headers: { "X-Test-Hop": "1" } });
    expect(hop.headers.get("X-Upstream")).toBe("yes");
    expect(hop.headers.get("X-Upstream-Hop")).toBeNull();

    const jwks = await call("/.well-known/jwks.json");
    expect(jwks.headers.get("Cache-Control")).toBe("public, max-age=300");
    const keys = createLocalJWKSet(await jwks.json());
    const assertion = seen.headers["keygate-assertion"] as string;
    const url = `${UPSTREAM}/v1/mailboxes/mbx_1/messages`;
    const { payload, protectedHeader } = await jwtVerify(assertion, keys, {
      issuer: ORIGIN,
      audience: new URL(UPSTREAM).origin,
      typ: "keygate-assertion+jwt",
      algorithms: ["ES256"],
    });
    expect(protectedHeader.kid).toBe("test-assertion");
    expect(payload).toMatchObject({
      sub: admin.id,
      acc: account.id,
      key: key.id,
      role: "admin",
      scopes: ["*"],
      amr: "key",
      htm: "POST",
      htu: url,
    });
    expect(payload.jti).toBe(res.headers.get("X-Request-Id"));
    expect((payload.exp as number) - (payload.iat as number)).toBe(60);
    // Replayed for another method or URL, the assertion does not hold: what an upstream checks besides the signature.
    const holds = (method: string, target: string) => payload.htm === method && payload.htu === target;
    expect(holds("POST", url)).toBe(true);
    expect(holds("DELETE", url)).toBe(false);
    expect(holds("POST", `${UPSTREAM}/v1/mailboxes/mbx_2/messages`)).toBe(false);
    // Forged with another key, it fails the signature check.
    const forged = `${assertion.split(".").slice(0, 2).join(".")}.${"A".repeat(86)}`;
    await expect(jwtVerify(forged, keys)).rejects.toThrow();
  });

  it("forwards public routes without any credential or forged identity, and without an assertion", async () => {
    const { key } = await provision();
    const seen = await echo(
      await gw("/v1/status", { headers: { "X-API-Key": key.key, "Keygate-Account-Id": "acc_forged", Authorization: "Basic dXNlcg==" } }),
    );
    expect(seen.headers["x-api-key"]).toBeUndefined();
    expect(seen.headers["keygate-account-id"]).toBeUndefined();
    expect(seen.headers["keygate-assertion"]).toBeUndefined();
    expect(seen.headers["keygate-auth-method"]).toBe("none");
    // Not even the provider's own credential, unless the route says so (test/gateway/credentials.test.ts).
    expect(seen.headers.authorization).toBeUndefined();
  });

  it("passes the upstream's statuses and redirects through untouched", async () => {
    const { key } = await provision();
    for (const status of [201, 204, 401, 404, 500, 503]) expect((await gw(`/status/${status}`, { key: key.key })).status).toBe(status);
    const res = await gw("/status/418", { key: key.key });
    expect(res.status).toBe(418);
    expect(res.headers.get("X-Upstream")).toBe("yes");
    expect(await res.text()).toBe("status 418");
    const redirect = await gw("/redirect", { key: key.key });
    expect(redirect.status).toBe(302);
    expect(redirect.headers.get("Location")).toBe("/elsewhere");
  });

  it("spends the route's cost, and only on the key's own budget", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 12, windowSeconds: 60 } });
    const first = await gw("/v1/reports/monthly", { key: limited.key });
    expect(first.headers.get("X-RateLimit-Remaining")).toBe("7");
    expect((await gw("/v1/reports/monthly", { key: limited.key })).headers.get("X-RateLimit-Remaining")).toBe("2");
    const refused = await gw("/v1/reports/monthly", { key: limited.key });
    await expectProblem(refused, 429, "rate_limited");
    // Refused because it costs more than is left, not because nothing is: the headers say what is.
    expect(refused.headers.get("X-RateLimit-Remaining")).toBe("2");
    expect(refused.headers.get("RateLimit")).toMatch(/^"default";r=2;t=\d+$/);
    // A cheaper request still fits in what is left.
    expect((await gw("/v1/anything", { key: limited.key })).headers.get("X-RateLimit-Remaining")).toBe("1");
  });
});

describe("gateway: streaming, failures and configuration", () => {
  it("streams the upstream's answer as it comes (an SSE event arrives before the upstream finishes)", async () => {
    const { key } = await provision();
    const id = crypto.randomUUID();
    const res = await gw(`/events/${id}`, { key: key.key });
    expect(res.headers.get("Content-Type")).toBe("text/event-stream");
    const reader = (res.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream()).getReader();
    expect((await reader.read()).value).toBe("event: first\ndata: 1\n\n");
    await fetch(`${UPSTREAM}/release/${id}`);
    let rest = "";
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += r.value;
    expect(rest).toBe("event: second\ndata: 2\n\n");
  });

  it("streams the request body as it comes (the upstream sees the first part before the client sends the rest)", async () => {
    const { key } = await provision();
    const id = crypto.randomUUID();
    const part = new Uint8Array(64 * 1024).fill(97);
    let sendRest: () => void = () => {};
    const restSent = new Promise<void>((r) => (sendRest = r));
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(part);
        await restSent;
        for (let i = 0; i < 16; i++) controller.enqueue(part);
        controller.close();
      },
    });
    const req = new Request(`${ORIGIN}/upload/${id}`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${key.key}`, "CF-Connecting-IP": "10.9.9.9" },
      body,
    });
    const answer = through(GATEWAY, req);
    await expect
      .poll(async () => (await (await fetch(`${UPSTREAM}/probe/${id}`)).json<{ bytes: number }>()).bytes, { timeout: 5000 })
      .toBeGreaterThan(0);
    sendRest();
    const seen = await echo(await answer);
    // Far beyond Keygate's own 16 KiB body limit: the gateway's bodies are the upstream's.
    expect(seen.bytes).toBe(17 * 64 * 1024);
  });

  it("answers 502 when the upstream cannot be reached (spending nothing) and 504 when it is too slow (spending)", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 5, windowSeconds: 60 } });
    const down = await gw("/v1/anything", { key: limited.key }, { UPSTREAM_URL: "http://127.0.0.1:1" });
    await expectProblem(down, 502, "upstream_unavailable");
    expect(down.headers.get("X-RateLimit-Remaining")).toBe("4");
    // The slow upstream got the request and may have done the work: it counts, so slowness buys no extra requests.
    const slow = await gw("/slow/x?ms=2000", { key: limited.key }, { UPSTREAM_TIMEOUT_MS: "200" });
    await expectProblem(slow, 504, "upstream_timeout");
    expect(slow.headers.get("X-RateLimit-Remaining")).toBe("4");
    expect((await gw("/v1/anything", { key: limited.key })).headers.get("X-RateLimit-Remaining")).toBe("3");
  });

  it("refuses a bad route table or upstream with 500 configuration_error on gateway paths only", async () => {
    const { key } = await provision();
    const bad = [
      "not json",
      JSON.stringify([{ pattern: "no-slash" }]),
      JSON.stringify([{ pattern: "/v1/x/:id", resource: { type: "mailbox", param: "other" } }]),
      JSON.stringify([{ pattern: "/v1/*/x" }]),
      JSON.stringify([{ pattern: "/v1/x", auth: "public", access: "full" }]),
      JSON.stringify([{ pattern: "/v1/x", cost: 0 }]),
      JSON.stringify([{ pattern: "/v1/x", unknown: true }]),
    ];
    for (const GATEWAY_ROUTES of bad) {
      await expectProblem(await gw("/v1/x", { key: key.key }, { GATEWAY_ROUTES }), 500, "configuration_error");
      expect((await through({ ...GATEWAY, GATEWAY_ROUTES }, "/v1/whoami", { key: key.key })).status).toBe(200);
    }
    const health = await through({ ...GATEWAY, GATEWAY_ROUTES: "[" }, "/health");
    expect((await expectProblem(health, 500, "configuration_error")).variables).toEqual(["GATEWAY_ROUTES"]);
    for (const UPSTREAM_URL of ["not a url", "ftp://x.example", "https://x.example/?q=1"])
      await expectProblem(await gw("/v1/x", { key: key.key }, { UPSTREAM_URL }), 500, "configuration_error");
    await expectProblem(await gw("/v1/x", { key: key.key }, { ASSERTION_SIGNING_KEYS: "" }), 500, "configuration_error");
    const unsigned = await through({ ...GATEWAY, ASSERTION_SIGNING_KEYS: "" }, "/health");
    expect((await expectProblem(unsigned, 500, "configuration_error")).variables).toEqual(["ASSERTION_SIGNING_KEYS"]);
    expect((await through({ ASSERTION_SIGNING_KEYS: "" }, "/health")).status).toBe(200);
  });

  it("forwards nothing without UPSTREAM_URL, nothing no route takes, and never Keygate's own paths", async () => {
    const { key } = await provision();
    await expectProblem(await through({ GATEWAY_ROUTES: GATEWAY.GATEWAY_ROUTES }, "/v1/anything", { key: key.key }), 404, "not_found");
    const only = JSON.stringify([{ pattern: "/v1/mailboxes/:id/*", resource: { type: "mailbox", param: "id" } }]);
    await expectProblem(await gw("/v1/other", { key: key.key }, { GATEWAY_ROUTES: only }), 404, "not_found");
    // The catch-all takes every path but Keygate's own.
    await expectProblem(await gw("/v1/api-keys/x/y", { key: key.key }), 404, "not_found");
    expect((await gw("/v1/whoami", { key: key.key })).headers.get("X-Upstream")).toBeNull();
    // People's routes, the dashboard, usage and the resource registry are Keygate's too.
    for (const path of [
      "/v1/auth/login",
      "/v1/auth/other",
      "/dashboard/keys",
      "/dashboard/other",
      "/v1/account/usage",
      "/v1/api-keys/x/usage",
      "/v1/resource-owners/mailbox/x",
    ])
      expect(
        (await gw(path, { key: key.key }, { GATEWAY_ROUTES: JSON.stringify([{ pattern: "/*", auth: "public" }]) })).headers.get(
          "X-Upstream",
        ),
        path,
      ).toBeNull();
  });
});

describe("gateway: the widget's chat through the upstream", () => {
  it("forwards handshake tokens on key-or-token routes with the end user's identity, and speaks CORS", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    const { token } = await (await handshake(agent.id)).json<{ token: string }>();
    const res = await gw("/v1/chat/messages", {
      headers: { Authorization: `Bearer ${token}`, Origin: WIDGET_ORIGIN },
      body: { message: "hi" },
    });
    const seen = await echo(res);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe(WIDGET_ORIGIN);
    const claims = decodeJwt(token);
    expect(seen.headers).toMatchObject({
      "keygate-auth-method": "token",
      "keygate-agent-id": agent.id,
      "keygate-user-id": claims.sub,
      "keygate-account-id": claims.acc,
    });
    expect(seen.headers["keygate-key-id"]).toBeUndefined();
    expect(decodeJwt(seen.headers["keygate-assertion"] as string)).toMatchObject({ amr: "token", agt: agent.id, sub: claims.sub });
    // Tokens stay on chat routes.
    const elsewhere = await gw("/v1/mailboxes/mbx_1/x", { headers: { Authorization: `Bearer ${token}`, Origin: WIDGET_ORIGIN } });
    await expectProblem(elsewhere, 403, "insufficient_scope");
    // A route that takes tokens answers browsers' preflights, whatever methods it lists.
    const posts = JSON.stringify([
      { pattern: "/v1/chat/*", auth: "key-or-token", methods: ["POST"] },
      { pattern: "/*", access: "full" },
    ]);
    const preflight = await gw(
      "/v1/chat/messages",
      { method: "OPTIONS", headers: { Origin: WIDGET_ORIGIN, "Access-Control-Request-Method": "POST" } },
      { GATEWAY_ROUTES: posts },
    );
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("Access-Control-Allow-Origin")).toBe(WIDGET_ORIGIN);
    // Without a route for the chat, Keygate's own echo answers.
    const builtIn = await gw(
      "/v1/chat/messages",
      { headers: { Authorization: `Bearer ${token}`, Origin: WIDGET_ORIGIN }, body: { message: "hi" } },
      { GATEWAY_ROUTES: "[]" },
    );
    expect(builtIn.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
  });

  it("lets the widget read a refusal on a key-or-token route, as on Keygate's own chat", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    const { token } = await (await handshake(agent.id)).json<{ token: string }>();
    const send = (origin: string) =>
      gw(
        "/v1/chat/messages",
        { headers: { Authorization: `Bearer ${token}`, Origin: origin }, body: { message: "hi" } },
        { CHAT_RATE_LIMIT: "1/60" },
      );
    expect((await send(WIDGET_ORIGIN)).status).toBe(200);
    // Over the end user's chat limit: the widget must read the 429 (and its Retry-After) to wait before it retries.
    const limited = await send(WIDGET_ORIGIN);
    await expectProblem(limited, 429, "rate_limited");
    expect(limited.headers.get("Access-Control-Allow-Origin")).toBe(WIDGET_ORIGIN);
    expect(limited.headers.get("Access-Control-Expose-Headers")).toContain("Retry-After");
    expect(limited.headers.get("Vary")).toContain("Origin");
    // Another origin learns nothing from it.
    const elsewhere = await send("https://evil.example");
    expect(elsewhere.headers.get("Access-Control-Allow-Origin")).toBeNull();
  });
});
