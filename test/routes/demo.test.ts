import { describe, expect, it } from "vitest";
import { call, callWith, expectProblem } from "../helpers";

describe("GET /demo/widget", () => {
  it("serves the static page, held by a Content-Security-Policy to its own Keygate: no other host, no inline script", async () => {
    const res = await call("/demo/widget?agent=agt_x&api=https://evil.example");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toMatch(/^text\/html/);
    expect(res.headers.get("X-Content-Type-Options")).toBe("nosniff");
    const csp = (res.headers.get("Content-Security-Policy") ?? "").split("; ");
    expect(csp).toEqual([
      "default-src 'none'",
      "script-src 'self'",
      "style-src 'self'",
      "connect-src 'self'",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ]);
    const html = await res.text();
    expect(html).toContain('<script src="/demo/widget.js" defer></script>');
    // Nothing of the request is written into the page.
    expect(html).not.toContain("evil");
    expect(html).not.toContain("agt_x");
  });

  it("serves the page's script and stylesheet from the same static files, and nothing else", async () => {
    const script = await call("/demo/widget.js");
    expect(script.status).toBe(200);
    expect(script.headers.get("Content-Type")).toMatch(/^(text|application)\/javascript/);
    expect(script.headers.get("X-Content-Type-Options")).toBe("nosniff");
    expect(await script.text()).toContain("/v1/handshake");
    const style = await call("/demo/widget.css");
    expect(style.status).toBe(200);
    expect(style.headers.get("Content-Type")).toMatch(/^text\/css/);
    await expectProblem(await call("/demo/other.js"), 404, "not_found");
    await expectProblem(await call("/demo/widget.html"), 404, "not_found");
  });

  it("lets the operator name other Keygates the page may talk to", async () => {
    const res = await callWith({ DEMO_API_ORIGINS: "https://api.example.com, https://eu.api.example.com" }, "/demo/widget");
    expect(res.headers.get("Content-Security-Policy")).toContain("connect-src 'self' https://api.example.com https://eu.api.example.com;");
    const bad = await callWith({ DEMO_API_ORIGINS: "https://api.example.com/path" }, "/demo/widget");
    await expectProblem(bad, 500, "configuration_error");
  });
});
