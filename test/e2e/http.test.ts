import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKeygate } from "../../scripts/keygate-server.mjs";

let keygate: Awaited<ReturnType<typeof startKeygate>>;

beforeAll(async () => {
  keygate = await startKeygate({ port: 8796, bindings: { ALLOW_HTTP: "true" } });
});

afterAll(async () => {
  await keygate?.mf.dispose();
});

/** A raw HTTP/1.1 request, as a client that fetch() would not let us be can send it. */
function raw(method: string, path: string, headers: Record<string, string>, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${keygate.url}${path}`, { method, headers }, (res) => {
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

describe("requests fetch() cannot send", () => {
  it("answers a GET or HEAD with a chunked body as it answers one without (never a 500)", async () => {
    for (const method of ["GET", "HEAD"]) {
      const res = await raw(method, "/v1/whoami", { "Transfer-Encoding": "chunked" }, "hello");
      expect(res.status, res.body).toBe(401);
    }
  });
});
