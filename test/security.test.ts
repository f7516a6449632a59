import { describe, expect, it } from "vitest";
import { contract } from "./contract";
import { type ProtectedRoute, securityChecks } from "./security";

// Every protected route of the API; a new route is added here so it cannot forget a check.
const routes: ProtectedRoute[] = [
  { method: "GET", path: () => "/v1/whoami", needs: "any" },
  { method: "GET", path: () => "/v1/account", needs: "full" },
  { method: "POST", path: () => "/v1/api-keys", body: { name: "x" }, needs: "full" },
  { method: "GET", path: () => "/v1/api-keys", needs: "full" },
  { method: "GET", path: (t) => `/v1/api-keys/${t.keyId}`, needs: "full" },
  { method: "DELETE", path: (t) => `/v1/api-keys/${t.keyId}`, needs: "full" },
  { method: "GET", path: (t) => `/v1/api-keys/${t.keyId}/usage`, needs: "full" },
  { method: "GET", path: () => "/v1/account/usage", needs: "full" },
  { method: "POST", path: (t) => `/v1/api-keys/${t.keyId}/rotate`, body: {}, needs: "full" },
  { method: "POST", path: () => "/v1/users", body: { email: "new@example.com", role: "member" }, needs: "admin" },
  { method: "GET", path: () => "/v1/users", needs: "admin" },
  { method: "GET", path: (t) => `/v1/users/${t.userId}`, needs: "admin" },
  { method: "PATCH", path: (t) => `/v1/users/${t.userId}`, body: { role: "admin" }, needs: "admin" },
  { method: "POST", path: (t) => `/v1/users/${t.userId}/invitation`, needs: "admin" },
  { method: "GET", path: () => "/v1/auth/sessions", needs: "full" },
  { method: "DELETE", path: (t) => `/v1/auth/sessions/${t.keyId}`, needs: "full" },
  { method: "PATCH", path: () => "/v1/account", body: {}, needs: "admin" },
  { method: "POST", path: () => "/v1/agents", body: { name: "w", allowedOrigins: ["https://a.example"] }, needs: "admin" },
  { method: "GET", path: () => "/v1/agents", needs: "admin" },
  { method: "GET", path: (t) => `/v1/agents/${t.agentId}`, needs: "admin" },
  { method: "PATCH", path: (t) => `/v1/agents/${t.agentId}`, body: { name: "renamed" }, needs: "admin" },
  { method: "POST", path: (t) => `/v1/agents/${t.agentId}/identity-secret`, body: {}, needs: "admin" },
  { method: "POST", path: () => "/v1/chat/messages", body: { message: "hi" }, needs: "any" },
];

for (const route of routes) securityChecks(route);

describe("the shared security checks", () => {
  it("cover every route that takes an API key, so a new route cannot skip them", async () => {
    const sample = { adminKey: "", keyId: "{id}", userId: "{id}", agentId: "{id}", accountId: "", token: "" };
    const checked = routes.map((r) => `${r.method} ${r.path(sample)}`).sort();
    // Every route whose security names the API key, except those open to anonymous callers too (the handshake).
    const protectedRoutes = (await contract()).operations
      .filter(
        ({ operation: { security = [] } }) => security.some((s) => "ApiKey" in s) && !security.some((s) => Object.keys(s).length === 0),
      )
      .map((r) => `${r.method} ${r.path}`)
      .sort();
    expect(checked).toEqual(protectedRoutes);
  });
});
