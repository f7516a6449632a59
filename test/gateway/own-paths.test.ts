import { describe, expect, it } from "vitest";
import { app } from "../../src/http/app";
import { ORIGIN, through } from "../helpers";
import { UPSTREAM } from "./table";

/**
 * A route that takes every path, without a credential and passing the client's own on: whatever it lets through
 * reaches the upstream, so it shows every path the gateway leaves to the table.
 */
const CATCH_ALL = [{ pattern: "/*", auth: "public", forwardAuthorization: true }];

/**
 * Keygate's chat is the one exception: a gateway route may take its paths for the provider's own chat (Keygate's
 * echo answers where none does, README Gateway).
 */
const UPSTREAM_MAY_TAKE = "/v1/chat/";

/** Every path and method Keygate's app serves, parameters filled in. */
const served = [...new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path.replace(/:\w+/g, "mbx_1")}`))].map(
  (line) => line.split(" ") as [string, string],
);

function send(method: string, path: string) {
  const body =
    method === "GET" || method === "HEAD" ? undefined : JSON.stringify({ email: "a@example.com", password: "a password of twelve" });
  return through(
    { UPSTREAM_URL: UPSTREAM, GATEWAY_ROUTES: JSON.stringify(CATCH_ALL), PUBLIC_ORIGIN: ORIGIN },
    new Request(ORIGIN + path, {
      method,
      headers: { "Content-Type": "application/json", Authorization: `Bearer sk_${"0".repeat(64)}`, "CF-Connecting-IP": "10.99.0.1" },
      body,
    }),
  );
}

describe("the gateway and Keygate's own paths", () => {
  it("serves every route of Keygate's itself, in any spelling, whatever a catch-all route says", async () => {
    expect(served.length).toBeGreaterThan(50);
    const forwarded: string[] = [];
    for (const [method, path] of served) {
      if (path.startsWith(UPSTREAM_MAY_TAKE)) continue;
      for (const spelling of [path, path.toUpperCase(), `${path}/`]) {
        const res = await send(method, spelling);
        if (res.headers.get("X-Upstream") === "yes") forwarded.push(`${method} ${spelling}`);
        await res.body?.cancel();
      }
    }
    expect(forwarded).toEqual([]);
  });

  it("lets a catch-all route take the chat's paths, and a path no route of Keygate's serves", async () => {
    for (const path of ["/v1/chat/messages", "/v1/status", "/v1/keys", "/v1/accounting", "/healthz"]) {
      const res = await send("POST", path);
      expect(res.headers.get("X-Upstream"), path).toBe("yes");
      await res.body?.cancel();
    }
  });
});
