import { mkdirSync } from "node:fs";
import chromiumBinary from "@sparticuz/chromium";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKeygate } from "../../scripts/keygate-server.mjs";

const OPERATOR_TOKEN = "e2e-operator-token-0123456789abcdef0123";
const PORT = 8797;
const PASSWORD = "a dashboard password";

let keygate: Awaited<ReturnType<typeof startKeygate>>;
let browser: Browser;

beforeAll(async () => {
  keygate = await startKeygate({
    port: PORT,
    bindings: {
      OPERATOR_TOKEN,
      ALLOW_HTTP: "true",
      JWT_SIGNING_KEYS: JSON.stringify([{ kid: "e2e", secret: "e2e-signing-secret-0123456789abcdefghij" }]),
    },
  });
  // As in widget.test.ts: the Chromium `npm install` brings, or CHROMIUM_PATH; without the package's own args (they
  // switch off web security).
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? (await chromiumBinary.executablePath()),
    args: [
      "--no-sandbox",
      "--no-zygote",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    headless: true,
  });
});

afterAll(async () => {
  await browser?.close();
  await keygate?.mf.dispose();
});

describe("the dashboard in a real browser", () => {
  it("sets a password from the invitation link, logs in, creates a key shown once, lists it, revokes it; nothing leaves for another origin", async () => {
    const res = await fetch(`${keygate.url}/v1/accounts`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${OPERATOR_TOKEN}` },
      body: JSON.stringify({ name: "Dashboard E2E", admin: { email: "admin@dash.example" } }),
    });
    expect(res.status).toBe(201);
    const { admin } = (await res.json()) as { admin: { email: string; invitation: { url: string } } };

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: keygate.url });
    const requested: string[] = [];
    context.on("request", (r) => requested.push(r.url()));
    const page = await context.newPage();
    const violations: string[] = [];
    page.on("console", (m) => {
      if (m.text().includes("Content Security Policy")) violations.push(m.text());
    });

    // The invitation link: its script moves the token from the fragment into the form and out of the address bar.
    await page.goto(admin.invitation.url);
    await expect.poll(() => page.url()).toBe(`${keygate.url}/dashboard/accept-invitation`);
    expect(await page.isHidden("#token-field")).toBe(true);
    await page.fill("#password", PASSWORD);
    await page.fill("#confirm", PASSWORD);
    await page.click("button[type=submit]");
    await expect.poll(() => page.textContent("main")).toContain("is set");

    // Log in through the form: the session cookie is HttpOnly, Secure, SameSite=Lax and the keys page opens.
    await page.goto(`${keygate.url}/dashboard/login`);
    await page.fill("#email", admin.email);
    await page.fill("#password", PASSWORD);
    await page.click("button[type=submit]");
    await page.waitForURL(`${keygate.url}/dashboard/keys`);
    const [cookie] = await context.cookies();
    expect(cookie).toMatchObject({ name: "__Host-keygate_session", path: "/", httpOnly: true, secure: true, sameSite: "Lax" });
    expect(await page.evaluate(() => document.cookie)).toBe("");

    // Create a key: shown once, with a copy button the script brought to life.
    await page.fill("#name", "browser key");
    await page.click("text=Create key");
    const raw = (await page.textContent("#new-key")) ?? "";
    expect(raw).toMatch(/^sk_[0-9a-f]{64}$/);
    expect(await page.textContent(".secret")).toContain("you won't see it again");
    await page.click("button[data-copy=new-key]");
    await expect.poll(() => page.textContent("button[data-copy=new-key]")).toBe("Copied");
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(raw);
    mkdirSync("test-results", { recursive: true });
    await page.screenshot({ path: "test-results/dashboard-key-created.png", fullPage: true });
    const whoami = await fetch(`${keygate.url}/v1/whoami`, { headers: { Authorization: `Bearer ${raw}` } });
    expect(whoami.status).toBe(200);

    // The list: the key by name, prefix and start, never again in full.
    await page.goto(`${keygate.url}/dashboard/keys`);
    const row = page.locator("tr", { hasText: "browser key" });
    expect(await row.textContent()).toContain(`${raw.slice(0, 11)}…`);
    expect(await page.content()).not.toContain(raw);

    // Revoke it after the confirmation step, reached with the keyboard.
    await page.focus('a[aria-label="Revoke browser key"]');
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/revoke$/);
    await page.click("text=Revoke key");
    await expect.poll(() => page.textContent("main")).toContain("The key is revoked");
    expect(await page.locator("tr", { hasText: "browser key" }).textContent()).toContain("revoked");
    expect((await fetch(`${keygate.url}/v1/whoami`, { headers: { Authorization: `Bearer ${raw}` } })).status).toBe(401);

    // Readable on a phone.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: "test-results/dashboard-keys-phone.png", fullPage: true });

    expect(requested.length).toBeGreaterThan(5);
    expect(requested.filter((url) => !url.startsWith(`${keygate.url}/`))).toEqual([]);
    expect(violations).toEqual([]);
    await context.close();
  });
});
