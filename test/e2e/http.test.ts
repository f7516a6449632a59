import { type ChildProcess, spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
    port: 0,
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

/** Headers a client names in Connection, and others it hopes naming them would let through or take away. */
const NAMING = {
  Connection: "keep-alive, X-Test-Hop, Keygate-Auth-Method, X-API-Key",
  "X-Test-Hop": "1",
  "X-Kept": "1",
  "Keygate-Auth-Method": "forged",
  "X-API-Key": `sk_${"a".repeat(64)}`,
};

describe("requests fetch() cannot send", () => {
  it("answers a GET or HEAD with a chunked body as it answers one without (never a 500)", async () => {
    for (const method of ["GET", "HEAD"]) {
      const res = await raw(keygate.url, method, "/v1/whoami", { "Transfer-Encoding": "chunked" }, "hello");
      expect(res.status, res.body).toBe(401);
    }
  });

  // workerd (behind Miniflare here) passes the request's Connection on to Keygate, which drops what it names.
  it("drops the headers a request's Connection names, and nothing it names slips through", async () => {
    const seen = echoed(await raw(keygate.url, "GET", "/v1/status", NAMING));
    expect(seen.headers["x-test-hop"]).toBeUndefined();
    expect(seen.headers["x-kept"]).toBe("1");
    expect(seen.headers["keygate-auth-method"]).toBe("none");
    expect(seen.headers["x-api-key"]).toBeUndefined();
    expect(seen.headers.connection ?? "").not.toMatch(/x-test-hop|keygate|x-api-key/i);
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

/** A free port on 127.0.0.1, for wrangler dev and its inspector (so they never contend with another run's). */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

describe("under wrangler dev", () => {
  let origin = "";
  let dev: ChildProcess | null = null;
  let state = "";

  beforeAll(async () => {
    state = mkdtempSync(join(tmpdir(), "keygate-wrangler-dev-"));
    const vars = { ALLOW_HTTP: "true", UPSTREAM_URL: upstream, GATEWAY_ROUTES: ROUTES };
    const port = await freePort();
    origin = `http://127.0.0.1:${port}`;
    const args = ["dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort())];
    args.push("--persist-to", state, "--env-file", "/dev/null", "--log-level", "warn", "--show-interactive-dev-session=false");
    for (const [name, value] of Object.entries(vars)) args.push("--var", `${name}:${value}`);
    // Its own process group, so that wrangler and the runtime it starts stop together.
    dev = spawn("sh", ["scripts/wrangler.sh", ...args], { detached: true, stdio: "ignore" });
    for (let started = Date.now(); Date.now() - started < 90_000; await new Promise((r) => setTimeout(r, 500))) {
      if (
        await raw(origin, "GET", "/health", {}).then(
          () => true,
          () => false,
        )
      )
        return;
    }
    throw new Error("wrangler dev did not answer within 90 s");
  });

  afterAll(() => {
    if (dev?.pid) process.kill(-dev.pid, "SIGTERM");
    rmSync(state, { recursive: true, force: true });
  });

  // wrangler dev's local proxy removes Connection before Keygate reads the request: what it named goes on like any other
  // header (README, Gateway), and naming a header still changes nothing else.
  it("forwards the headers a consumed Connection named, and nothing else changes", async () => {
    const seen = echoed(await raw(origin, "GET", "/v1/status", NAMING));
    expect(seen.headers["x-test-hop"]).toBe("1");
    expect(seen.headers["x-kept"]).toBe("1");
    expect(seen.headers["keygate-auth-method"]).toBe("none");
    expect(seen.headers["x-api-key"]).toBeUndefined();
    expect(seen.headers.connection ?? "").not.toMatch(/x-test-hop|keygate|x-api-key/i);
  });
});
