import { generateKeyPairSync } from "node:crypto";
import { request } from "node:http";
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKeygate } from "../../scripts/keygate-server.mjs";
import { startUpstream } from "../upstream.mjs";

const OPERATOR_TOKEN = "e2e-operator-token-0123456789abcdef0123";
const ROUTES = JSON.stringify([
  { pattern: "/v1/status", auth: "public" },
  { pattern: "/*", access: "full" },
]);

let keygate: Awaited<ReturnType<typeof startKeygate>>;
let upstream = "";

beforeAll(async () => {
  upstream = await startUpstream();
  keygate = await startKeygate({
    port: 8796,
    bindings: {
      ALLOW_HTTP: "true",
      OPERATOR_TOKEN,
      UPSTREAM_URL: upstream,
      GATEWAY_ROUTES: ROUTES,
      ASSERTION_SIGNING_KEYS: JSON.stringify([
        { kid: "e2e", ...generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" }) },
      ]),
    },
  });
});

afterAll(async () => {
  await keygate?.mf.dispose();
});

type Answer = { status: number; body: string };

/** A raw HTTP/1.1 request, as a client that fetch() would not let us be can send it. */
function raw(origin: string, method: string, path: string, headers: Record<string, string>, body = ""): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${origin}${path}`, { method, headers }, (res) => {
      let text = "";
      res.on("data", (chunk) => {
        text += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** What the test upstream received (it echoes it), expecting a forwarded answer. */
function echoed(res: Answer): { url: string; headers: Record<string, string> } {
  expect(res.status, res.body).toBe(200);
  return JSON.parse(res.body);
}

describe("requests fetch() cannot send", () => {
  it("answers a GET or HEAD with a chunked body as it answers one without (never a 500)", async () => {
    for (const method of ["GET", "HEAD"]) {
      const res = await raw(keygate.url, method, "/v1/whoami", { "Transfer-Encoding": "chunked" }, "hello");
      expect(res.status, res.body).toBe(401);
    }
  });

  // `Host: 127.0.0.1:8822@evil.example` is a URL whose host is evil.example: it never becomes the assertion's issuer.
  it("never takes the assertion's issuer from a hostile Host", async () => {
    const provisioned = await raw(
      keygate.url,
      "POST",
      "/v1/accounts",
      { Authorization: `Bearer ${OPERATOR_TOKEN}`, "Content-Type": "application/json" },
      JSON.stringify({ name: "E2E", admin: { email: "e2e@example.com" } }),
    );
    expect(provisioned.status, provisioned.body).toBe(201);
    const key = (JSON.parse(provisioned.body) as { key: { key: string } }).key.key;
    const seen = echoed(await raw(keygate.url, "GET", "/v1/anything", { "X-API-Key": key }));
    expect(decodeJwt(seen.headers["keygate-assertion"] as string).iss).toBe(keygate.url);
    for (const host of ["127.0.0.1:8822@evil.example", "evil.example", `evil.example:${new URL(keygate.url).port}`]) {
      const res = await raw(keygate.url, "GET", "/v1/anything", { "X-API-Key": key, Host: host });
      expect(res.status, `${host}: ${res.body}`).toBe(500);
      expect(JSON.parse(res.body).code).toBe("configuration_error");
    }
  });
});
