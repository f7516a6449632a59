import { describe, expect, it } from "vitest";
import { call, callWith, ORIGIN } from "../helpers";

describe("GET /demo/widget", () => {
  it("is held by a Content-Security-Policy to its own Keygate: no other host, no injected script", async () => {
    const res = await call("/demo/widget?agent=agt_x&api=https://evil.example");
    expect(res.status).toBe(200);
    const csp = res.headers.get("Content-Security-Policy") ?? "";
    const nonce = /script-src 'nonce-([0-9a-f]{32})'/.exec(csp)?.[1];
    expect(nonce).toBeDefined();
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("connect-src 'self';");
    expect(csp).not.toContain("evil");
    const html = await res.text();
    expect(html).toContain(`<script nonce="${nonce}">`);
    // The page's API is the Keygate that served it; ?api= counts only for origins the operator listed.
    expect(html).toContain(`const others = [];`);
    expect(html).toContain(`: "${ORIGIN}";`);
  });

  it("lets the operator name other Keygates the page may talk to", async () => {
    const res = await callWith({ DEMO_API_ORIGINS: "https://api.example.com, https://eu.api.example.com" }, "/demo/widget");
    expect(res.headers.get("Content-Security-Policy")).toContain("connect-src 'self' https://api.example.com https://eu.api.example.com;");
    expect(await res.text()).toContain('const others = ["https://api.example.com","https://eu.api.example.com"];');
    const bad = await callWith({ DEMO_API_ORIGINS: "https://api.example.com/path" }, "/demo/widget");
    expect(bad.status).toBe(500);
  });
});
