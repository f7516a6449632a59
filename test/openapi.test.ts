import { describe, expect, it } from "vitest";
import { app } from "../src/app";
import { ERRORS } from "../src/errors";
import { call } from "./helpers";

type Operation = {
  security?: Record<string, string[]>[];
  responses: Record<string, { description: string; content?: Record<string, { schema: unknown }> }>;
};
type Document = { paths: Record<string, Record<string, Operation>>; components: { securitySchemes: Record<string, unknown> } };

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

  it("gives every route its security and every problem the status the ERRORS table gives it", async () => {
    const doc = await served();
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(["ApiKey", "Bearer"]);
    expect(doc.paths["/v1/api-keys"]?.post?.security).toEqual([{ ApiKey: [] }, { Bearer: [] }]);
    expect(doc.paths["/v1/accounts"]?.post?.security).toEqual([{ Bearer: [] }]);
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
  it("is a readable reference of every route, served by Keygate with nothing fetched from elsewhere", async () => {
    const res = await call("/docs");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Security-Policy")).toContain("default-src 'none'");
    const html = await res.text();
    for (const path of Object.keys((await served()).paths)) expect(html).toContain(`${path}</h3>`);
    expect(html).not.toMatch(/<script|src=|href="(https?:)?\/\//);
  });
});
