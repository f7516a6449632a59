import { mkdirSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKeygate } from "../../scripts/keygate-server.mjs";
import { launchChromium } from "./browser";

const OPERATOR_TOKEN = "e2e-operator-token-0123456789abcdef0123";

let keygate: Awaited<ReturnType<typeof startKeygate>>;
let browser: Browser;
const servers: Server[] = [];

/** Serves one HTML page on a free 127.0.0.1 port: another origin than the API's. */
async function pageServer(html: string): Promise<string> {
  const server = createServer((_, res) => res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(html));
  servers.push(server);
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function post<T>(path: string, key: string, body: unknown): Promise<T> {
  const res = await fetch(keygate.url + path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json() as Promise<T>;
}

beforeAll(async () => {
  keygate = await startKeygate({
    port: 0,
    bindings: {
      OPERATOR_TOKEN,
      ALLOW_HTTP: "true",
      JWT_SIGNING_KEYS: JSON.stringify([{ kid: "e2e", secret: "e2e-signing-secret-0123456789abcdefghij" }]),
    },
  });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  for (const s of servers) s.close();
  await keygate?.mf.dispose();
});

describe("the widget demo in a real browser", () => {
  it("gets a token across CORS from an allowed origin and shows the streamed reply; another origin gets nothing", async () => {
    // A copy of the page on the customer's site, loading the widget's script and stylesheet from Keygate.
    const html = (await (await fetch(`${keygate.url}/demo/widget`)).text()).replaceAll('"/demo/', `"${keygate.url}/demo/`);
    const allowed = await pageServer(html);
    const otherOrigin = await pageServer(html);
    const { key } = await post<{ key: { key: string } }>("/v1/accounts", OPERATOR_TOKEN, {
      name: "E2E",
      admin: { email: "e2e@example.com" },
    });
    const agent = await post<{ id: string }>("/v1/agents", key.key, { name: "Demo", allowedOrigins: [allowed] });
    // The script talks to the Keygate that served it, so this copy on another origin still talks to it.
    const query = `?agent=${agent.id}`;

    const page = await browser.newPage();
    const chatResponses: number[] = [];
    let handshakes = 0;
    page.on("response", (r) => {
      if (r.url().endsWith("/v1/chat/messages")) chatResponses.push(r.status());
      if (r.url().endsWith("/v1/handshake") && r.status() === 200) handshakes += 1;
    });
    await page.clock.install();
    await page.goto(allowed + query);
    await expect.poll(() => page.textContent("#status")).toContain("Connected: token valid for 3600 s");
    await page.fill("#message", "hello from chromium");
    await page.click("button");
    await page.waitForSelector(".bot[data-done=true]", { timeout: 10_000 });
    expect(await page.textContent(".bot")).toBe("You said: hello from chromium");
    expect(chatResponses).toEqual([200]);
    mkdirSync("test-results", { recursive: true });
    await page.screenshot({ path: "test-results/widget.png" });

    // The page renews its token before it expires: at 80% of expiresIn (3600 s), well before the hour is up.
    expect(handshakes).toBe(1);
    await page.clock.fastForward(2_881_000);
    await expect.poll(() => handshakes).toBe(2);

    // Another origin: Keygate refuses the preflight without any CORS header, so the browser blocks the handshake and
    // the page's fetch fails (Chromium reports the blocked request as failed).
    const other = await browser.newPage();
    const blocked: string[] = [];
    other.on("requestfailed", (r) => {
      if (r.url().endsWith("/v1/handshake")) blocked.push(`${r.method()} ${r.failure()?.errorText}`);
    });
    await other.goto(otherOrigin + query);
    await expect
      .poll(() => other.textContent("#status"))
      .toBe("Handshake refused: this page may not talk to that Keygate, or its origin is not allowed");
    expect(blocked).toEqual(["POST net::ERR_FAILED"]);
    await other.screenshot({ path: "test-results/widget-refused.png" });
  });

  it("served by Keygate, talks only to Keygate: ?api= pointing elsewhere is blocked by its policy", async () => {
    const contacted: string[] = [];
    const lure = createServer((req, res) => {
      contacted.push(`${req.method} ${req.url}`);
      res.writeHead(200, { "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "*" }).end("{}");
    });
    servers.push(lure);
    await new Promise<void>((done) => lure.listen(0, "127.0.0.1", done));
    const elsewhere = `http://127.0.0.1:${(lure.address() as AddressInfo).port}`;
    const { key } = await post<{ key: { key: string } }>("/v1/accounts", OPERATOR_TOKEN, {
      name: "E2E 2",
      admin: { email: "e2e2@example.com" },
    });
    const agent = await post<{ id: string }>("/v1/agents", key.key, { name: "Own", allowedOrigins: [keygate.url] });

    const page = await browser.newPage();
    await page.goto(`${keygate.url}/demo/widget?agent=${agent.id}`);
    await expect.poll(() => page.textContent("#status")).toContain("Connected");
    // Even a script that tries (as an injected one would) cannot reach another host: connect-src 'self'.
    const blocked = await page.evaluate(async (url) => {
      try {
        await fetch(url);
        return false;
      } catch {
        return true;
      }
    }, elsewhere);
    expect(blocked).toBe(true);
    // Nor can a link that points the page's own script elsewhere: connect-src holds it to Keygate.
    const lured = await browser.newPage();
    const violations: string[] = [];
    lured.on("console", (m) => {
      if (m.text().includes("Content Security Policy")) violations.push(m.text());
    });
    await lured.goto(`${keygate.url}/demo/widget?agent=${agent.id}&api=${encodeURIComponent(elsewhere)}`);
    await expect.poll(() => lured.textContent("#status")).toContain("Handshake refused");
    expect(violations.length).toBeGreaterThan(0);
    expect(contacted).toEqual([]);
  });
});
