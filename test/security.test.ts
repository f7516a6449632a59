import { describe, expect, it } from "vitest";
import { app } from "../src/http/app";
import { type DashboardRoute, dashboardChecks, type ProtectedRoute, securityChecks, type TokenRoute, tokenChecks } from "./security";

// Every route of the app is in one of these lists (the last test walks the mounted routes): a new route cannot go
// unchecked, and one that takes no credential is named public with its reason.

// The API's routes of keys and access tokens.
const routes: ProtectedRoute[] = [
  { method: "GET", path: () => "/v1/whoami", needs: "any" },
  { method: "GET", path: () => "/v1/account", needs: "full" },
  { method: "POST", path: () => "/v1/api-keys", body: { name: "x" }, needs: "full" },
  { method: "GET", path: () => "/v1/api-keys", needs: "full" },
  { method: "GET", path: (t) => `/v1/api-keys/${t.keyId}`, needs: "full" },
  { method: "PATCH", path: (t) => `/v1/api-keys/${t.keyId}`, body: { externalId: "ext-1" }, needs: "full" },
  { method: "DELETE", path: (t) => `/v1/api-keys/${t.keyId}`, needs: "full" },
  { method: "GET", path: (t) => `/v1/api-keys/${t.keyId}/usage`, needs: "full" },
  { method: "GET", path: () => "/v1/account/usage", needs: "full" },
  { method: "GET", path: () => "/v1/account/key-hygiene", needs: "full" },
  { method: "GET", path: (t) => `/v1/api-keys/${t.keyId}/credits/ledger`, needs: "full" },
  { method: "GET", path: () => "/v1/account/credits/ledger", needs: "admin" },
  { method: "POST", path: () => "/v1/account/credits", body: { operation: "subtract", amount: 1 }, needs: "admin" },
  { method: "POST", path: (t) => `/v1/api-keys/${t.keyId}/credits`, body: { operation: "add", amount: 1 }, needs: "admin" },
  { method: "POST", path: (t) => `/v1/api-keys/${t.keyId}/rotate`, body: {}, needs: "full" },
  { method: "POST", path: () => "/v1/users", body: { email: "new@example.com", role: "member" }, needs: "admin" },
  { method: "GET", path: () => "/v1/users", needs: "admin" },
  { method: "GET", path: (t) => `/v1/users/${t.userId}`, needs: "admin" },
  { method: "PATCH", path: (t) => `/v1/users/${t.userId}`, body: { role: "admin" }, needs: "admin" },
  { method: "POST", path: (t) => `/v1/users/${t.userId}/invitation`, needs: "admin" },
  { method: "GET", path: (t) => `/v1/users/${t.userId}/credits`, needs: "full" },
  { method: "POST", path: (t) => `/v1/users/${t.userId}/credits`, body: { operation: "add", amount: 1 }, needs: "admin" },
  { method: "GET", path: (t) => `/v1/users/${t.userId}/credits/ledger`, needs: "full" },
  { method: "GET", path: () => "/v1/auth/sessions", needs: "full" },
  { method: "POST", path: () => "/v1/auth/logout", needs: "person" },
  {
    method: "POST",
    path: () => "/v1/auth/password",
    body: { currentPassword: "x", newPassword: "a new password of 12+" },
    needs: "person",
  },
  { method: "DELETE", path: (t) => `/v1/auth/sessions/${t.keyId}`, needs: "full" },
  { method: "PATCH", path: () => "/v1/account", body: {}, needs: "admin" },
  { method: "POST", path: () => "/v1/agents", body: { name: "w", allowedOrigins: ["https://a.example"] }, needs: "admin" },
  { method: "GET", path: () => "/v1/agents", needs: "admin" },
  { method: "GET", path: (t) => `/v1/agents/${t.agentId}`, needs: "admin" },
  { method: "PATCH", path: (t) => `/v1/agents/${t.agentId}`, body: { name: "renamed" }, needs: "admin" },
  { method: "POST", path: (t) => `/v1/agents/${t.agentId}/identity-secret`, body: {}, needs: "admin" },
  { method: "POST", path: () => "/v1/chat/messages", body: { message: "hi" }, needs: "any" },
  { method: "POST", path: () => "/v1/webhooks", body: { url: "https://hooks.example.com/a", events: ["*"] }, needs: "admin" },
  { method: "GET", path: () => "/v1/webhooks", needs: "admin" },
  { method: "GET", path: (t) => `/v1/webhooks/${t.webhookId}`, needs: "admin" },
  { method: "PATCH", path: (t) => `/v1/webhooks/${t.webhookId}`, body: { description: "x" }, needs: "admin" },
  { method: "DELETE", path: (t) => `/v1/webhooks/${t.webhookId}`, needs: "admin" },
  { method: "POST", path: (t) => `/v1/webhooks/${t.webhookId}/secret`, needs: "admin" },
  { method: "POST", path: (t) => `/v1/webhooks/${t.webhookId}/test`, needs: "admin" },
  { method: "GET", path: (t) => `/v1/webhooks/${t.webhookId}/deliveries`, needs: "admin" },
  {
    method: "POST",
    path: (t) => `/v1/webhooks/${t.webhookId}/deliveries/${t.webhookId === ":id" ? ":deliveryId" : "dlv_x"}/retry`,
    needs: "admin",
  },
];

// The deployment's own secrets: provisioning with the operator token, the provider's backends with the verify token.
const tokenRoutes: TokenRoute[] = [
  { method: "POST", path: "/v1/accounts", body: { name: "x", adminEmail: "a@example.com" }, token: "operator" },
  { method: "PATCH", path: "/v1/accounts/:id", body: {}, token: "operator" },
  { method: "POST", path: "/v1/accounts/:id/recovery-key", body: {}, token: "operator" },
  { method: "GET", path: "/v1/accounts/:id/credits/ledger", token: "operator" },
  { method: "POST", path: "/v1/accounts/:id/credits", body: { operation: "add", amount: 1 }, token: "operator" },
  { method: "POST", path: "/v1/credits/settle", body: { requestId: "req_x", used: 1, accountId: "acc_x" }, token: "verify" },
  {
    method: "PUT",
    path: "/v1/plans/:id",
    body: { name: "x", rateLimits: [{ name: "m", limit: 1, windowSeconds: 60 }] },
    token: "operator",
  },
  { method: "GET", path: "/v1/plans", token: "operator" },
  { method: "GET", path: "/v1/plans/:id", token: "operator" },
  { method: "POST", path: "/v1/keys/verify", body: { key: `sk_${"0".repeat(64)}` }, token: "verify" },
  { method: "PUT", path: "/v1/resource-owners/:type/:id", body: { accountId: "acc_x" }, token: "verify" },
  { method: "GET", path: "/v1/resource-owners/:type/:id", token: "verify" },
  { method: "DELETE", path: "/v1/resource-owners/:type/:id", token: "verify" },
];

// The dashboard's pages behind its sign-in (its session cookie).
const dashboardRoutes: DashboardRoute[] = [
  { method: "GET", path: "/dashboard/keys" },
  { method: "POST", path: "/dashboard/keys" },
  { method: "GET", path: "/dashboard/keys/:id/revoke" },
  { method: "POST", path: "/dashboard/keys/:id/revoke" },
  { method: "GET", path: "/dashboard/keys/:id/rotate" },
  { method: "POST", path: "/dashboard/keys/:id/rotate" },
  { method: "POST", path: "/dashboard/keys/:id/credits" },
  { method: "GET", path: "/dashboard/keys/:id/ledger" },
  { method: "GET", path: "/dashboard/usage" },
  { method: "GET", path: "/dashboard/usage/ledger" },
  { method: "GET", path: "/dashboard/users" },
  { method: "POST", path: "/dashboard/users" },
  { method: "GET", path: "/dashboard/users/:id" },
  { method: "POST", path: "/dashboard/users/:id" },
  { method: "POST", path: "/dashboard/users/:id/disable" },
  { method: "POST", path: "/dashboard/users/:id/enable" },
  { method: "POST", path: "/dashboard/users/:id/invitation" },
  { method: "GET", path: "/dashboard/agents" },
  { method: "POST", path: "/dashboard/agents" },
  { method: "GET", path: "/dashboard/agents/:id" },
  { method: "POST", path: "/dashboard/agents/:id" },
  { method: "POST", path: "/dashboard/agents/:id/disable" },
  { method: "POST", path: "/dashboard/agents/:id/enable" },
  { method: "GET", path: "/dashboard/webhooks" },
  { method: "POST", path: "/dashboard/webhooks" },
  { method: "GET", path: "/dashboard/webhooks/:id" },
  { method: "POST", path: "/dashboard/webhooks/:id/test" },
  { method: "POST", path: "/dashboard/webhooks/:id/secret" },
  { method: "POST", path: "/dashboard/webhooks/:id/disable" },
  { method: "POST", path: "/dashboard/webhooks/:id/enable" },
  { method: "GET", path: "/dashboard/webhooks/:id/delete" },
  { method: "POST", path: "/dashboard/webhooks/:id/delete" },
  { method: "POST", path: "/dashboard/webhooks/:id/deliveries/:deliveryId/retry" },
  { method: "GET", path: "/dashboard/activity" },
];

// Routes that take no credential, each for its reason (their own tests check what they give away).
const PUBLIC: Record<string, string> = {
  "GET /health": "a monitor probes it; it names misconfigured variables, never their values",
  "GET /openapi.json": "the contract, for anyone writing a client",
  "GET /docs": "the reference page of that contract",
  "GET /docs/redoc.standalone.js": "the reference page's script",
  "GET /.well-known/jwks.json": "the public keys upstreams check the gateway's assertions with",
  "GET /demo/widget": "the widget demo's page: the widget authenticates through the handshake",
  "GET /demo/:file": "the widget demo's files",
  "POST /v1/handshake": "a browser widget's first call, anonymous or with the end user's signed identity",
  "POST /v1/leaks": "anyone who finds a key may report it; the answer is the same whatever the key (test/keys/leaks.test.ts)",
  "POST /v1/leaks/github": "GitHub's signature over the body is the credential (test/keys/leaks.test.ts)",
  "POST /v1/auth/login": "a person gets their first credential here (failures spend per-email and per-address budgets)",
  "POST /v1/auth/refresh": "the refresh token in the body is the credential",
  "POST /v1/auth/accept-invitation": "the invitation token in the body is the credential",
  "GET /dashboard": "a redirect to the keys page, which needs the sign-in",
  "GET /dashboard/login": "the login form",
  "POST /dashboard/logout": "ends the session its cookie names, if any, and clears the cookie: nothing without one",
  "POST /dashboard/login": "the login form's post",
  "GET /dashboard/accept-invitation": "the invitation form (the token is in the URL's fragment)",
  "POST /dashboard/accept-invitation": "the invitation form's post, with the token as its credential",
  "GET /dashboard/dashboard.css": "the dashboard's style sheet",
  "GET /dashboard/dashboard.js": "the dashboard's script",
};

for (const route of routes) securityChecks(route);
for (const route of tokenRoutes) tokenChecks(route);
for (const route of dashboardRoutes) dashboardChecks(route);

describe("the shared security checks", () => {
  it("cover every route the app mounts that is not public, so a new route cannot skip them", () => {
    const sample = { adminKey: "", keyId: ":id", userId: ":id", agentId: ":id", accountId: "", token: "", webhookId: ":id" };
    const listed = [
      ...routes.map((r) => `${r.method} ${r.path(sample)}`),
      ...tokenRoutes.map((r) => `${r.method} ${r.path}`),
      ...dashboardRoutes.map((r) => `${r.method} ${r.path}`),
      ...Object.keys(PUBLIC),
    ].sort();
    expect(new Set(listed).size).toBe(listed.length);
    // Middleware is mounted as ALL; every handler has its method.
    const mounted = [...new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path}`))].sort();
    expect(listed).toEqual(mounted);
  });
});
