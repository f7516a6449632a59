import { beforeAll, describe, expect, it } from "vitest";
import { page } from "./dashboard/helpers";
import {
  call,
  createAgent,
  createKey,
  expectProblem,
  expire,
  handshake,
  memberWithKey,
  OPERATOR_TOKEN,
  provision,
  VERIFY_TOKEN,
  WIDGET_ORIGIN,
} from "./helpers";

/** An account to attack: its admin key, a second key and a member user, whose ids routes can put in their path. */
export type Target = {
  adminKey: string;
  keyId: string;
  userId: string;
  agentId: string;
  accountId: string;
  token: string;
  webhookId: string;
};

export type ProtectedRoute = {
  method: string;
  path: (t: Target) => string;
  body?: unknown;
  /**
   * `any`: every valid key; `full`: full-access keys; `admin`: full-access keys of admins; `person`: a person's access
   * token only (no API key).
   */
  needs: "any" | "full" | "admin" | "person";
};

async function newTarget(): Promise<Target> {
  const { account, key } = await provision();
  const second = await createKey(key.key, { name: "second" });
  const member = await memberWithKey(key.key);
  const agent = await createAgent(key.key);
  const { token } = await (await handshake(agent.id)).json<{ token: string }>();
  const hook = await call("/v1/webhooks", { key: key.key, body: { url: "https://hooks.example.com/keygate", events: ["webhook.test"] } });
  const { id: webhookId } = await hook.json<{ id: string }>();
  return { adminKey: key.key, keyId: second.id, userId: member.user.id, agentId: agent.id, accountId: account.id, token, webhookId };
}

/** The checks every protected route must pass; each route's test file runs them. */
export function securityChecks(route: ProtectedRoute): void {
  const send = async (t: Target, headers: Record<string, string>) =>
    call(route.path(t), { method: route.method, headers, ...(route.body === undefined ? {} : { body: route.body }) });

  describe(`${route.method} ${route.path({ adminKey: "", keyId: ":keyId", userId: ":userId", agentId: ":agentId", accountId: "", token: "", webhookId: ":webhookId" })} security`, () => {
    // One account to attack per route, shared by its checks: none of them changes what it holds.
    let shared: Promise<Target>;
    beforeAll(() => {
      shared = newTarget();
    });
    const target = () => shared;
    it("refuses a request without a credential", async () => {
      const res = await send(await target(), {});
      await expectProblem(res, 401, "missing_credentials");
      expect(res.headers.get("WWW-Authenticate")).toBe('Bearer realm="keygate"');
    });

    it("refuses a credential that is not shaped like a key", async () => {
      for (const credential of ["Bearer nope", "Bearer sk_123", "Basic dXNlcjpwYXNz", `Bearer SK_${"A".repeat(64)}`]) {
        const res = await send(await target(), { Authorization: credential });
        await expectProblem(res, 401, "malformed_credentials");
        expect(res.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');
      }
    });

    it("refuses an unknown key", async () => {
      const res = await send(await target(), { "X-API-Key": `sk_${"0".repeat(64)}` });
      await expectProblem(res, 401, "invalid_key");
      expect(res.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');
    });

    it("refuses a revoked key", async () => {
      const t = await target();
      const extra = await createKey(t.adminKey, { name: "to revoke" });
      expect((await call(`/v1/api-keys/${extra.id}`, { method: "DELETE", key: t.adminKey })).status).toBe(200);
      await expectProblem(await send(t, { Authorization: `Bearer ${extra.key}` }), 401, "key_revoked");
    });

    it("refuses an expired key", async () => {
      const t = await target();
      const extra = await createKey(t.adminKey, { name: "to expire", expiresAt: "2099-01-01T00:00:00Z" });
      await expire(extra.id);
      await expectProblem(await send(t, { Authorization: `Bearer ${extra.key}` }), 401, "key_expired");
    });

    it("never reaches into another account", async () => {
      const t = await target();
      const other = await provision();
      const res = await send(t, { Authorization: `Bearer ${other.key.key}` });
      const text = await res.text();
      expect(text).not.toContain(t.accountId);
      expect(text).not.toContain(t.keyId);
      expect(text).not.toContain(t.userId);
      expect(text).not.toContain(t.agentId);
      expect(text).not.toContain(t.webhookId);
      if ([t.keyId, t.userId, t.agentId, t.webhookId].some((id) => route.path(t).includes(id))) expect(res.status).toBe(404);
    });

    if (route.needs !== "any") {
      it("refuses a resource-scoped key", async () => {
        const t = await target();
        const scoped = await createKey(t.adminKey, { name: "scoped", mailboxIds: ["mbx_1"] });
        const res = await send(t, { Authorization: `Bearer ${scoped.key}` });
        await expectProblem(res, 403, "insufficient_scope");
      });
    }

    if (route.needs !== "any") {
      it("refuses a handshake token, which is for the chat endpoints only", async () => {
        const t = await target();
        const res = await send(t, { Authorization: `Bearer ${t.token}`, Origin: WIDGET_ORIGIN });
        await expectProblem(res, 403, "insufficient_scope");
      });
    }

    if (route.needs === "person") {
      it("refuses an API key, even an admin's full-access one: the act is a person's", async () => {
        const t = await target();
        await expectProblem(await send(t, { Authorization: `Bearer ${t.adminKey}` }), 403, "insufficient_scope");
      });
    }

    if (route.needs === "admin") {
      it("refuses a member", async () => {
        const t = await target();
        const member = await memberWithKey(t.adminKey);
        await expectProblem(await send(t, { Authorization: `Bearer ${member.key.key}` }), 403, "insufficient_role");
      });
    }
  });
}

/** A route of the deployment's own secrets: the operator token or the verify token (a Hono path; `:params` filled). */
export type TokenRoute = { method: string; path: string; body?: unknown; token: "operator" | "verify" };

const fill = (path: string) => path.replace(/:\w+/g, (p) => (p === ":type" ? "mailbox" : "sec_0123456789abcdef01234567"));

/** The checks a route of the operator or the verify token must pass: nothing else, a key of an admin's included, opens it. */
export function tokenChecks(route: TokenRoute): void {
  const wrong = route.token === "operator" ? "invalid_operator_token" : "invalid_verify_token";
  const send = (headers: Record<string, string>) =>
    call(fill(route.path), { method: route.method, headers, ...(route.body === undefined ? {} : { body: route.body }) });
  describe(`${route.method} ${route.path} security`, () => {
    it("refuses a request without a credential", async () => {
      await expectProblem(await send({}), 401, "missing_credentials");
    });

    it("refuses any other secret: a wrong token, the other token, an admin's full-access key", async () => {
      const { key } = await provision();
      const other = route.token === "operator" ? VERIFY_TOKEN : OPERATOR_TOKEN;
      for (const credential of ["nope", other, key.key, `${route.token === "operator" ? OPERATOR_TOKEN : VERIFY_TOKEN}x`]) {
        await expectProblem(await send({ Authorization: `Bearer ${credential}` }), 401, wrong);
      }
    });
  });
}

/** A page of the dashboard behind its sign-in (a Hono path; `:params` filled). */
export type DashboardRoute = { method: "GET" | "POST"; path: string };

/** The checks a signed-in page of the dashboard must pass: no session cookie, no page, whatever else the request has. */
export function dashboardChecks(route: DashboardRoute): void {
  const send = (cookie?: string, headers: Record<string, string> = {}) =>
    page(fill(route.path), { cookie, headers, ...(route.method === "POST" ? { form: {} } : {}) });
  describe(`${route.method} ${route.path} security`, () => {
    it("sends a request without a working session cookie to the login form, an API key or a made-up cookie in hand", async () => {
      const { key } = await provision();
      for (const [cookie, headers] of [
        [undefined, {}],
        [undefined, { Authorization: `Bearer ${key.key}` }],
        [`ses_000000000000000000000000.cs_${"0".repeat(64)}`, {}],
      ] as const) {
        const res = await send(cookie, headers);
        expect(res.status).toBe(303);
        expect(res.headers.get("Location")).toBe("/dashboard/login");
      }
    });
  });
}
