import { type Schema, validate } from "@cfworker/json-schema";
import { describe, expect, it } from "vitest";
import { app } from "../src/http/app";
import { ERRORS } from "../src/platform/errors";
import { contract } from "./contract";
import { call } from "./helpers";

type Operation = {
  operationId?: string;
  tags?: string[];
  security?: Record<string, string[]>[];
  responses: Record<string, { description: string; headers?: Record<string, unknown>; content?: Record<string, { schema: unknown }> }>;
};
type Document = {
  tags: { name: string }[];
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, unknown>; schemas: Record<string, unknown> };
};

const served = async () => (await call("/openapi.json")).json<Document>();

describe("the OpenAPI document", () => {
  it("documents every route of the app and nothing else", async () => {
    const doc = await served();
    const inDocument = Object.entries(doc.paths)
      .flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path.replace(/\{([^}]+)\}/g, ":$1")}`))
      .sort();
    // Route handlers, not middleware nor the 405 answers every path gives to the methods it lacks.
    const inApp = [
      ...new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path.replace(/\/$/, "") || "/"}`)),
    ].sort();
    expect(inDocument).toEqual(inApp);
  });

  it("gives every operation an id, a tag and its security, one scheme per kind of secret", async () => {
    const doc = await served();
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(
      ["AccessToken", "ApiKey", "DashboardCookie", "HandshakeToken", "OperatorToken", "VerifyToken"].sort(),
    );
    const op = (method: string, path: string) => doc.paths[path]?.[method];
    expect(op("post", "/v1/api-keys")?.security).toEqual([{ ApiKey: [] }, { AccessToken: [] }]);
    expect(op("post", "/v1/chat/messages")?.security).toEqual([{ ApiKey: [] }, { AccessToken: [] }, { HandshakeToken: [] }]);
    expect(op("post", "/v1/accounts")?.security).toEqual([{ OperatorToken: [] }]);
    expect(op("post", "/v1/keys/verify")?.security).toEqual([{ VerifyToken: [] }]);
    expect(op("post", "/v1/auth/logout")?.security).toEqual([{ AccessToken: [] }]);
    expect(op("get", "/dashboard/keys")?.security).toEqual([{ DashboardCookie: [] }]);
    for (const [method, path] of [
      ["get", "/health"],
      ["post", "/v1/auth/login"],
      ["get", "/docs"],
      ["post", "/dashboard/login"],
    ])
      expect(op(method as string, path as string)?.security, `${method} ${path}`).toEqual([]);
    const ids = new Set<string>();
    const tags = new Set(doc.tags.map((t) => t.name));
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, o] of Object.entries(item)) {
        expect(o.operationId, `${method} ${path}`).toMatch(/^[a-z][A-Za-z0-9]+$/);
        expect(ids.has(o.operationId as string), `${o.operationId} is unique`).toBe(false);
        ids.add(o.operationId as string);
        expect(o.tags?.length, `${method} ${path}`).toBe(1);
        expect(tags.has(o.tags?.[0] as string), `${o.tags?.[0]} is described`).toBe(true);
        expect(Array.isArray(o.security), `${method} ${path}`).toBe(true);
        for (const scheme of (o.security ?? []).flatMap((s) => Object.keys(s)))
          expect(doc.components.securitySchemes).toHaveProperty(scheme);
        for (const [status, r] of Object.entries(o.responses))
          expect(r.headers, `${method} ${path} ${status}`).toHaveProperty("X-Request-Id");
      }
    }
    expect(op("get", "/v1/api-keys")?.responses["200"]?.headers).toHaveProperty("RateLimit");
    expect(op("get", "/v1/api-keys")?.responses["200"]?.headers).toHaveProperty("Deprecation");
    expect(op("get", "/v1/api-keys")?.responses["429"]?.headers).toHaveProperty("Retry-After");
  });

  it("documents the `<type>Ids` of a new key for the configured resource types, and no other field", async () => {
    const { components } = await served();
    const newKey = components.schemas.NewKey as { properties: Record<string, unknown>; additionalProperties: unknown };
    expect(Object.keys(newKey.properties).sort()).toEqual(
      [
        "name",
        "scopes",
        "expiresAt",
        "ownerId",
        "rateLimit",
        "rateLimits",
        "credits",
        "allowedIps",
        "externalId",
        "meta",
        "mailboxIds",
        "processIds",
        "projectIds",
      ].sort(),
    );
    expect(newKey.additionalProperties).toBe(false);
    // The rules the server enforces, as a client generated from the document sees them.
    const { lookup } = await contract();
    const accepts = (body: unknown) =>
      validate(body, lookup["https://keygate.test/openapi.json#/components/schemas/NewKey"] as Schema, "2020-12", lookup).valid;
    expect(accepts({ name: "x" })).toBe(true);
    expect(accepts({ name: "x", expiresAt: null, mailboxIds: ["mbx_1"], scopes: ["project:p1"] })).toBe(true);
    expect(accepts({ name: "x", scopes: ["planet:p1"] })).toBe(false);
    expect(accepts({ name: "x", mailboxId: ["mbx_1"] })).toBe(false);
    expect(accepts({ name: "x", rateLimit: { limit: 0, windowSeconds: 60 } })).toBe(false);
    const minute = { name: "minute", limit: 10, windowSeconds: 60 };
    expect(accepts({ name: "x", rateLimits: [minute] })).toBe(true);
    expect(accepts({ name: "x", rateLimits: [{ ...minute, name: "Minute" }] })).toBe(false);
    expect(accepts({ name: "x", rateLimits: Array.from({ length: 9 }, (_, i) => ({ ...minute, name: `l${i}` })) })).toBe(false);
    // A key's limits are its own: the document refuses `shared` on them, as the server does.
    expect(accepts({ name: "x", rateLimits: [{ ...minute, shared: "account" }] })).toBe(false);
    const refill = { amount: 100, interval: "month", mode: "set", dayOfMonth: 15 };
    expect(accepts({ name: "x", credits: { remaining: 100, refill } })).toBe(true);
    expect(accepts({ name: "x", credits: null })).toBe(true);
    expect(accepts({ name: "x", credits: { remaining: -1 } })).toBe(false);
    expect(accepts({ name: "x", credits: { remaining: 1, refill: { ...refill, interval: "week" } } })).toBe(false);
    expect(accepts({ name: "x", credits: { remaining: 1, refill: { ...refill, dayOfMonth: 29 } } })).toBe(false);
    const limit = (await served()).paths["/v1/api-keys"]?.get as unknown as { parameters: { name: string; schema: unknown }[] };
    expect(limit.parameters.find((p) => p.name === "limit")?.schema).toMatchObject({ type: "integer", minimum: 1, maximum: 100 });
  });

  it("names only the configured resource types in the registry's paths, as the registry enforces", async () => {
    const doc = (await served()) as unknown as {
      paths: Record<string, Record<string, { parameters?: { name: string; in: string; schema: { enum?: string[] } }[] }>>;
    };
    const registry = Object.entries(doc.paths).filter(([path]) => path.startsWith("/v1/resource-owners/"));
    expect(registry.length).toBeGreaterThan(0);
    for (const [, item] of registry)
      for (const op of Object.values(item)) {
        const type = op.parameters?.find((p) => p.in === "path" && p.name === "type");
        expect(type?.schema.enum).toEqual(["mailbox", "process", "project"]);
      }
  });

  it("gives every problem the status the ERRORS table gives it", async () => {
    const doc = await served();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        for (const [status, response] of Object.entries(op.responses)) {
          const problem = response.content?.["application/problem+json"];
          if (!problem) continue;
          const codes = [...response.description.matchAll(/`([a-z_]+)`/g)].map((m) => m[1] as keyof typeof ERRORS);
          expect(codes.length, `${method} ${path} ${status}`).toBeGreaterThan(0);
          for (const code of codes) expect(ERRORS[code][0], `${method} ${path} ${code}`).toBe(Number(status));
        }
      }
    }
  });
});

describe("GET /docs", () => {
  it("is the reference rendered from the served document by a renderer Keygate serves itself, nothing from elsewhere", async () => {
    const res = await call("/docs");
    expect(res.status).toBe(200);
    const policy = res.headers.get("Content-Security-Policy") ?? "";
    expect(policy).toContain("default-src 'none'");
    expect(policy).toContain("script-src 'self'");
    expect(policy).not.toMatch(/https?:|\*/);
    const html = await res.text();
    expect([...html.matchAll(/<script[^>]*>/g)].map((m) => m[0])).toEqual(['<script src="/docs/redoc.standalone.js">']);
    expect(html).toContain('<redoc spec-url="/openapi.json">');
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    const renderer = await call("/docs/redoc.standalone.js");
    expect(renderer.status).toBe(200);
    expect(renderer.headers.get("Content-Type")).toContain("javascript");
    expect((await renderer.text()).length).toBeGreaterThan(500_000);
  });

  it("opens with an introduction to authentication, errors and paging", async () => {
    const { info } = (await served()) as unknown as { info: { description: string } };
    for (const section of ["Authentication", "Errors", "Paging"]) expect(info.description).toContain(`## ${section}\n`);
  });
});
