import { mkdirSync } from "node:fs";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKeygate } from "../../scripts/keygate-server.mjs";
import { launchChromium } from "./browser";

/** How a list shows a key: its prefix (everything before the random part) and 8 characters of that part. */
const listed = (raw: string) => `${raw.slice(0, raw.lastIndexOf("_") + 9)}…`;

const OPERATOR_TOKEN = "e2e-operator-token-0123456789abcdef0123";
const PASSWORD = "a dashboard password";
/** How long a wait for the page may take before the test fails (setting a password costs a PBKDF2 derivation). */
const POLL = { timeout: 10_000 };

/**
 * The built worker as deployed, with one addition for this test: the key's object can be asked to run its pending
 * alarm now (as `runDurableObjectAlarm` of the Workers test pool does), so the usage it counted leaves through the
 * usage queue for its account's rollup without waiting the minute its alarm waits. The alarm handler itself is the deployed one.
 */
const ENTRY = `import worker, { AccountObject, Counter, KeygateVerifier, KeyObject as Deployed } from "./index.js";
export { AccountObject, Counter, KeygateVerifier };
export default worker;
export class KeyObject extends Deployed {
  async runAlarmNow() {
    if ((await this.ctx.storage.getAlarm()) === null) return false;
    await this.ctx.storage.deleteAlarm();
    await this.alarm();
    return true;
  }
}`;

let keygate: Awaited<ReturnType<typeof startKeygate>>;
let browser: Browser;

beforeAll(async () => {
  keygate = await startKeygate({
    port: 0,
    entry: ENTRY,
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
  await keygate?.mf.dispose();
});

const BROWSER_CONTEXT = { viewport: { width: 1280, height: 900 } };

/** A browser context whose waits give up after 10 s, so a missing element fails the test rather than stalling it. */
async function newContext() {
  const context = await browser.newContext(BROWSER_CONTEXT);
  context.setDefaultTimeout(10_000);
  return context;
}

/** A new account through the operator API: its first admin's email and invitation link. */
async function provision(name: string, email: string, extra: Record<string, unknown> = {}) {
  const res = await fetch(`${keygate.url}/v1/accounts`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${OPERATOR_TOKEN}` },
    body: JSON.stringify({ name, admin: { email }, ...extra }),
  });
  expect(res.status).toBe(201);
  const { admin } = (await res.json()) as { admin: { email: string; invitation: { url: string } } };
  return { email: admin.email, invitation: admin.invitation.url };
}

/** Sets the password from an invitation link, then logs in through the form: the keys page opens. */
async function acceptAndLogIn(page: Page, invitation: string, email: string, password: string) {
  await page.goto(invitation);
  await expect.poll(() => page.url(), POLL).toBe(`${keygate.url}/dashboard/accept-invitation`);
  await page.fill("#password", password);
  await page.fill("#confirm", password);
  await page.click("button[type=submit]");
  await expect.poll(() => page.textContent("main"), POLL).toContain("is set");
  await page.goto(`${keygate.url}/dashboard/login`);
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await page.waitForURL(`${keygate.url}/dashboard/keys`);
}

/** Creates a key through the keys page's form and answers the raw key it shows once. */
async function createKey(page: Page, name: string, limit?: { requests: number; perSeconds: number }) {
  await page.goto(`${keygate.url}/dashboard/keys`);
  await page.fill("#name", name);
  if (limit) {
    await page.fill("#limit", String(limit.requests));
    await page.fill("#windowSeconds", String(limit.perSeconds));
  }
  const [response] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("text=Create key")]);
  expect(response.status()).toBe(201);
  const raw = (await page.textContent("#new-key")) ?? "";
  expect(raw).toMatch(/^kg_sk_[0-9A-Za-z]{49}$/);
  return raw;
}

/** `GET /v1/whoami` with a key: its status, and who the key is when it works. */
async function whoami(key: string) {
  const res = await fetch(`${keygate.url}/v1/whoami`, { headers: { Authorization: `Bearer ${key}` } });
  const body = res.status === 200 ? ((await res.json()) as { keyId: string; userId: string; role: string }) : null;
  return { status: res.status, body };
}

const shot = (page: Page, name: string) => {
  mkdirSync("test-results", { recursive: true });
  return page.screenshot({ path: `test-results/${name}.png`, fullPage: true });
};

describe("the dashboard in a real browser", () => {
  it("sets a password from the invitation link, logs in, creates a key shown once, lists it, revokes it; nothing leaves for another origin", async () => {
    const res = await fetch(`${keygate.url}/v1/accounts`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${OPERATOR_TOKEN}` },
      body: JSON.stringify({ name: "Dashboard E2E", admin: { email: "admin@dash.example" } }),
    });
    expect(res.status).toBe(201);
    const { admin } = (await res.json()) as { admin: { email: string; invitation: { url: string } } };

    const context = await newContext();
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
    await expect.poll(() => page.url(), POLL).toBe(`${keygate.url}/dashboard/accept-invitation`);
    expect(await page.isHidden("#token-field")).toBe(true);
    await page.fill("#password", PASSWORD);
    await page.fill("#confirm", PASSWORD);
    await page.click("button[type=submit]");
    await expect.poll(() => page.textContent("main"), POLL).toContain("is set");

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
    expect(raw).toMatch(/^kg_sk_[0-9A-Za-z]{49}$/);
    expect(await page.textContent(".secret")).toContain("you won't see it again");
    await page.click("button[data-copy=new-key]");
    await expect.poll(() => page.textContent("button[data-copy=new-key]"), POLL).toBe("Copied");
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(raw);
    mkdirSync("test-results", { recursive: true });
    await page.screenshot({ path: "test-results/dashboard-key-created.png", fullPage: true });
    const whoami = await fetch(`${keygate.url}/v1/whoami`, { headers: { Authorization: `Bearer ${raw}` } });
    expect(whoami.status).toBe(200);

    // The list: the key by name, prefix and start, never again in full.
    await page.goto(`${keygate.url}/dashboard/keys`);
    const row = page.locator("tr", { hasText: "browser key" });
    expect(await row.textContent()).toContain(listed(raw));
    expect(await page.content()).not.toContain(raw);

    // Revoke it after the confirmation step, reached with the keyboard.
    await page.focus('a[aria-label="Revoke browser key"]');
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/revoke$/);
    await page.click("text=Revoke key");
    await expect.poll(() => page.textContent("main"), POLL).toContain("The key is revoked");
    expect(await page.locator("tr", { hasText: "browser key" }).textContent()).toContain("revoked");
    expect((await fetch(`${keygate.url}/v1/whoami`, { headers: { Authorization: `Bearer ${raw}` } })).status).toBe(401);

    // Readable on a phone: nothing wider than the screen, so nothing needs scrolling sideways.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: "test-results/dashboard-keys-phone.png", fullPage: true });
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);

    expect(requested.length).toBeGreaterThan(5);
    expect(requested.filter((url) => !url.startsWith(`${keygate.url}/`))).toEqual([]);
    expect(violations).toEqual([]);
    await context.close();
  });

  it("rotates a key with a grace period: the new key is shown once, both are listed and both work", async () => {
    const admin = await provision("Rotation E2E", "admin@rotate.example");
    const context = await newContext();
    const page = await context.newPage();
    await acceptAndLogIn(page, admin.invitation, admin.email, PASSWORD);
    const old = await createKey(page, "rotating key");
    const before = await whoami(old);
    expect(before.status).toBe(200);

    // The confirmation step, the grace period chosen in its form.
    await page.goto(`${keygate.url}/dashboard/keys`);
    await page.click('a[aria-label="Rotate rotating key"]');
    await page.waitForURL(/\/rotate$/);
    await page.selectOption("#gracePeriodSeconds", "3600");
    const [response] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("text=Rotate key")]);
    expect(response.status()).toBe(201);
    const fresh = (await page.textContent("#new-key")) ?? "";
    expect(fresh).toMatch(/^kg_sk_[0-9A-Za-z]{49}$/);
    expect(fresh).not.toBe(old);
    expect(await page.textContent(".secret")).toContain("you won't see it again");
    expect(await page.textContent(".secret")).toContain("The old key keeps working until");
    await shot(page, "dashboard-key-rotated");

    // The list: both keys by their starts, the old one active until the grace period ends, neither in full.
    await page.goto(`${keygate.url}/dashboard/keys`);
    const rows = page.locator("tbody tr", { hasText: "rotating key" });
    expect(await rows.count()).toBe(2);
    const oldRow = rows.filter({ hasText: listed(old) });
    const newRow = rows.filter({ hasText: listed(fresh) });
    expect(await oldRow.count()).toBe(1);
    expect(await newRow.count()).toBe(1);
    expect(await oldRow.locator(".status").textContent()).toBe("active");
    const until = Date.parse((await oldRow.locator(".hint time").getAttribute("datetime")) ?? "");
    expect(until - Date.now()).toBeGreaterThan(55 * 60_000);
    expect(until - Date.now()).toBeLessThanOrEqual(3_600_000);
    // The old key can no longer be rotated (its successor can); both can still be revoked.
    expect(await oldRow.locator('a[aria-label="Rotate rotating key"]').count()).toBe(0);
    expect(await newRow.locator('a[aria-label="Rotate rotating key"]').count()).toBe(1);
    const content = await page.content();
    expect(content).not.toContain(fresh);
    expect(content).not.toContain(old);
    await shot(page, "dashboard-keys-after-rotation");

    // During the grace period both keys work, and they are two keys.
    const oldNow = await whoami(old);
    const freshNow = await whoami(fresh);
    expect(oldNow.status).toBe(200);
    expect(freshNow.status).toBe(200);
    expect(oldNow.body?.keyId).toBe(before.body?.keyId);
    expect(freshNow.body?.keyId).not.toBe(before.body?.keyId);
    await context.close();
  });

  it("charts a key's admitted and rate-limited requests once its object has sent them", async () => {
    const admin = await provision("Usage E2E", "admin@usage.example");
    const context = await newContext();
    const page = await context.newPage();
    await acceptAndLogIn(page, admin.invitation, admin.email, PASSWORD);
    const raw = await createKey(page, "metered key", { requests: 3, perSeconds: 3600 });

    // Before any traffic the page charts nothing for this account.
    await page.goto(`${keygate.url}/dashboard/usage`);
    expect(await page.textContent("main")).toContain("No key made requests in this period.");

    // Five requests against a limit of three: three admitted, two refused.
    const first = Date.now();
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await whoami(raw));
    const last = Date.now();
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 429, 429]);
    const keyId = answers[0]?.body?.keyId ?? "";
    expect(keyId).not.toBe("");

    // The key's object set its alarm to send the counts; it runs now instead of a minute from now, and the queue brings
    // them to the account's rollup within seconds.
    const keys = await keygate.mf.getDurableObjectNamespace("KEYS");
    const object = keys.getByName(`key:${keyId}`) as unknown as { runAlarmNow(): Promise<boolean> };
    expect(await object.runAlarmNow()).toBe(true);

    await expect
      .poll(async () => {
        await page.goto(`${keygate.url}/dashboard/usage`);
        return page
          .locator('svg[data-series="account"]')
          .getAttribute("aria-label", { timeout: 1_000 })
          .catch(() => null);
      }, POLL)
      .toBe("All keys of the account: 3 admitted, 2 rate limited");
    const chart = page.locator(`svg[data-series="${keyId}"]`);
    expect(await chart.getAttribute("aria-label")).toBe(`metered key (${listed(raw)}): 3 admitted, 2 rate limited`);
    const figure = page.locator("figure", { has: chart });
    expect(await figure.locator(".legend").textContent()).toContain("3 admitted");
    expect(await figure.locator(".legend").textContent()).toContain("2 rate limited");

    // The bars: per hour, what its title says, drawn to one scale (the axis's top value spans the plot's height).
    const drawn = await chart.evaluate((svg) => {
      const bars = [...svg.querySelectorAll(":scope > g")]
        .filter((g) => g.querySelector("rect"))
        .map((g) => ({
          title: g.querySelector("title")?.textContent ?? "",
          admitted: Number(g.querySelector("rect.admitted")?.getAttribute("height") ?? 0),
          limited: Number(g.querySelector("rect.limited")?.getAttribute("height") ?? 0),
          hours: [...g.querySelectorAll("rect")].map((r) => r.getAttribute("data-hour")),
        }));
      const axis = [...svg.querySelectorAll(":scope > g > line.grid + text")].map((t) => Number(t.textContent));
      return { bars, top: Math.max(...axis) };
    });
    const hourOf = (ms: number) => new Date(Math.floor(ms / 3_600_000) * 3_600_000).toISOString();
    const counts = drawn.bars.map((b) => {
      const m = /: (\d+) admitted, (\d+) rate limited$/.exec(b.title);
      return { admitted: Number(m?.[1]), limited: Number(m?.[2]) };
    });
    expect(counts.reduce((n, c) => n + c.admitted, 0)).toBe(3);
    expect(counts.reduce((n, c) => n + c.limited, 0)).toBe(2);
    const plotHeight = 220 - 10 - 26;
    drawn.bars.forEach((b, i) => {
      expect(b.admitted).toBeCloseTo(((counts[i]?.admitted ?? 0) / drawn.top) * plotHeight, 0);
      expect(b.limited).toBeCloseTo(((counts[i]?.limited ?? 0) / drawn.top) * plotHeight, 0);
      for (const hour of b.hours) expect([hourOf(first), hourOf(last)]).toContain(hour);
    });
    expect(drawn.top).toBeGreaterThanOrEqual(Math.max(...counts.map((c) => c.admitted + c.limited)));
    await shot(page, "dashboard-usage");
    await context.close();
  });

  it("adjusts a key's credits with the admin's form: the balance shown and the API's both move", async () => {
    const admin = await provision("Credits E2E", "admin@credits.example");
    const context = await newContext();
    const page = await context.newPage();
    await acceptAndLogIn(page, admin.invitation, admin.email, PASSWORD);
    const adminKey = await createKey(page, "admin key");
    const created = await fetch(`${keygate.url}/v1/api-keys`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${adminKey}` },
      body: JSON.stringify({ name: "metered credits", credits: { remaining: 100 } }),
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };

    await page.goto(`${keygate.url}/dashboard/keys`);
    const row = page.locator("tbody tr", { hasText: "metered credits" });
    expect(await row.locator(`[data-credits="${id}"]`).textContent()).toContain("100 left");
    // Folded until opened; then add 25 with a reason.
    await row.locator("summary", { hasText: "Adjust" }).click();
    await row.locator('select[name="operation"]').selectOption("add");
    await row.locator('input[name="amount"]').fill("25");
    await row.locator('input[name="reason"]').fill("from the browser");
    await row.locator("button", { hasText: "Apply" }).click();
    await page.waitForURL(`${keygate.url}/dashboard/keys?done=adjusted`);
    expect(await page.locator("tbody tr", { hasText: "metered credits" }).locator(`[data-credits="${id}"]`).textContent()).toContain(
      "125 left",
    );
    const read = await fetch(`${keygate.url}/v1/api-keys/${id}`, { headers: { Authorization: `Bearer ${adminKey}` } });
    expect(((await read.json()) as { credits: { remaining: number } }).credits.remaining).toBe(125);
    await shot(page, "dashboard-key-credits-adjusted");
    await context.close();
  });

  it("invites a member who accepts in another browser and sees only their own keys, and no users page", async () => {
    const admin = await provision("People E2E", "admin@people.example", { membersCanCreateKeys: true });
    const adminContext = await newContext();
    const adminPage = await adminContext.newPage();
    await acceptAndLogIn(adminPage, admin.invitation, admin.email, PASSWORD);
    const adminKey = await createKey(adminPage, "admin's own key");

    // The invitation: the link shown once on the users page, then only the user in the list.
    await adminPage.goto(`${keygate.url}/dashboard/users`);
    await adminPage.fill("#email", "member@people.example");
    await adminPage.selectOption("#role", "member");
    const [invited] = await Promise.all([
      adminPage.waitForResponse((r) => r.request().method() === "POST"),
      adminPage.click("button:has-text('Invite')"),
    ]);
    expect(invited.status()).toBe(201);
    const link = (await adminPage.textContent("#invitation-link")) ?? "";
    expect(link).toMatch(new RegExp(`^${keygate.url}/dashboard/accept-invitation#token=[A-Za-z0-9_]+$`));
    await shot(adminPage, "dashboard-user-invited");
    await adminPage.goto(`${keygate.url}/dashboard/users`);
    expect(await adminPage.locator("tbody tr", { hasText: "member@people.example" }).textContent()).toContain("member");
    expect(await adminPage.content()).not.toContain(link.split("#token=")[1]);

    // A second browser, with none of the admin's cookies, opens the link.
    const memberContext = await newContext();
    expect(await memberContext.cookies()).toEqual([]);
    const page = await memberContext.newPage();
    const memberPassword = "the member's own passphrase";
    await acceptAndLogIn(page, link, "member@people.example", memberPassword);
    expect(await page.textContent("#keys-title")).toBe("Your keys");
    expect(await page.textContent("main")).toContain("No keys yet.");
    expect(await page.content()).not.toContain("admin's own key");
    expect(await page.content()).not.toContain(listed(adminKey).slice(0, -1));
    expect(await page.locator('nav a[href="/dashboard/users"]').count()).toBe(0);
    await shot(page, "dashboard-member-keys");

    // The users page is for admins: the member gets the 403 and why.
    const users = await page.goto(`${keygate.url}/dashboard/users`);
    expect(users?.status()).toBe(403);
    expect(await page.textContent("[role=alert]")).toContain("This action needs an account admin.");
    expect(await page.content()).not.toContain("admin@people.example");
    await shot(page, "dashboard-member-users-refused");

    // The account lets members create keys: the member's own, shown once, listed alone.
    const memberKey = await createKey(page, "member's key");
    expect(await page.textContent(".secret")).toContain("you won't see it again");
    await shot(page, "dashboard-member-key-created");
    const who = await whoami(memberKey);
    expect(who.status).toBe(200);
    expect(who.body?.role).toBe("member");
    await page.goto(`${keygate.url}/dashboard/keys`);
    const rows = page.locator("tbody tr");
    expect(await rows.count()).toBe(1);
    expect(await rows.first().textContent()).toContain(listed(memberKey));
    expect(await page.content()).not.toContain(memberKey);

    // The admin sees it among the account's keys, with its owner.
    await adminPage.goto(`${keygate.url}/dashboard/keys`);
    expect(await adminPage.locator("tbody tr", { hasText: "member's key" }).textContent()).toContain("member@people.example");
    expect(who.body?.userId).not.toBe((await whoami(adminKey)).body?.userId);
    await shot(adminPage, "dashboard-admin-sees-member-key");
    await memberContext.close();
    await adminContext.close();
  });
});
