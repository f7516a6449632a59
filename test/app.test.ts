import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { MAX_BODY_BYTES } from "../src/http/openapi";
import { call, callWith, expectProblem, provision } from "./helpers";

describe("the error shape", () => {
  it("answers unknown paths with 404 problem+json and a request id", async () => {
    const res = await call("/v2/nothing");
    await expectProblem(res, 404, "not_found");
    expect(res.headers.get("X-Request-Id")).toMatch(/^req_[0-9a-f]{32}$/);
  });

  it("answers a wrong method with 405 and Allow", async () => {
    const { key } = await provision();
    const res = await call("/v1/api-keys", { method: "PUT", key: key.key, body: {} });
    await expectProblem(res, 405, "method_not_allowed");
    expect(res.headers.get("Allow")).toBe("GET, POST");
    // Decided before authentication: a wrong method costs no failure budget, whatever the credential.
    const ip = { "CF-Connecting-IP": "198.51.100.200", "X-API-Key": "garbage" };
    for (let i = 0; i < 40; i++)
      await expectProblem(await call("/v1/users", { method: "PUT", headers: ip, body: {} }), 405, "method_not_allowed");
    await expectProblem(await call("/v1/whoami", { headers: ip }), 401, "malformed_credentials");
  });

  it("answers a wrong method with 405 and Allow on every path of Keygate's own, not only the API's", async () => {
    for (const [method, path, allowed] of [
      ["POST", "/health", "GET"],
      ["DELETE", "/docs", "GET"],
      ["PUT", "/openapi.json", "GET"],
      ["POST", "/.well-known/jwks.json", "GET"],
      ["POST", "/demo/widget", "GET"],
      ["DELETE", "/demo/widget.js", "GET"],
      ["PUT", "/dashboard/login", "GET, POST"],
      ["DELETE", "/dashboard/keys/key_1/revoke", "GET, POST"],
      ["PATCH", "/dashboard/users/usr_1/disable", "POST"],
      ["POST", "/dashboard/usage", "GET"],
    ] as const) {
      const res = await call(path, { method, headers: { Accept: "application/json", Origin: "https://keygate.test" } });
      await expectProblem(res, 405, "method_not_allowed");
      expect(res.headers.get("Allow"), `${method} ${path}`).toBe(allowed);
    }
    // A browser asking for HTML gets the dashboard's page, with the same status and Allow.
    const page = await call("/dashboard/activity", { method: "POST", headers: { Accept: "text/html", Origin: "https://keygate.test" } });
    expect(page.status).toBe(405);
    expect(page.headers.get("Allow")).toBe("GET");
    await expectProblem(await call("/health/nothing", { method: "POST" }), 404, "not_found");
  });

  it("refuses bodies over the limit with 413, before reading them", async () => {
    const { key } = await provision();
    const res = await call("/v1/api-keys", { key: key.key, body: JSON.stringify({ name: "x".repeat(MAX_BODY_BYTES) }) });
    await expectProblem(res, 413, "payload_too_large");
  });

  it("refuses malformed JSON, non-objects and other media types", async () => {
    const { key } = await provision();
    await expectProblem(await call("/v1/api-keys", { key: key.key, body: "{name:" }), 400, "malformed_json");
    await expectProblem(await call("/v1/api-keys", { key: key.key, body: "[1]" }), 400, "invalid_request");
    const form = await call("/v1/api-keys", {
      key: key.key,
      body: "name=x",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
    });
    await expectProblem(form, 415, "unsupported_media_type");
  });

  it("refuses every Content-Type that is not exactly JSON with well-formed parameters as 415, never a 500", async () => {
    const { key } = await provision();
    for (const type of [
      "application/json;",
      "application/json; charset",
      "application/json ;x=y",
      "application/json;charset=utf-8;",
      "application/json\t;a=b",
      'application/json; a="b;c"',
    ]) {
      const res = await call("/v1/users", {
        key: key.key,
        headers: { "Content-Type": type },
        body: { email: "ct@example.com", role: "member" },
      });
      await expectProblem(res, 415, "unsupported_media_type");
    }
    const fine = await call("/v1/users", {
      key: key.key,
      headers: { "Content-Type": "application/json; charset=utf-8" },
      body: { email: "ct@example.com", role: "member" },
    });
    expect(fine.status).toBe(201);
  });

  it("answers an unexpected failure with a 500 problem that reveals nothing", async () => {
    const { key } = await provision();
    const down = {
      withSession() {
        return this;
      },
      prepare() {
        throw new Error("D1_ERROR: internal storage failure at /srv/db.sqlite");
      },
      batch() {
        throw new Error("D1_ERROR: down");
      },
    } as unknown as D1Database;
    // A route that reads D1 in the worker (a key's own request is judged by its object, which has its own handle).
    const res = await callWith({ DB: down }, "/v1/api-keys", { key: key.key });
    const body = await expectProblem(res, 500, "internal_error");
    expect(JSON.stringify(body)).not.toMatch(/D1|sqlite|stack|\.ts/);
  });

  it("puts a request id on successes too", async () => {
    const res = await call("/health");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
    expect(res.headers.get("X-Request-Id")).toMatch(/^req_/);
  });

  it("refuses a misconfigured deployment clearly", async () => {
    await expectProblem(await callWith({ RESOURCE_TYPES: "mailbox,Bad Type" }, "/health"), 500, "configuration_error");
    expect(env.RESOURCE_TYPES).toBe("mailbox,process,project");
  });
});
