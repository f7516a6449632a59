import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { hourOf } from "../../src/usage/service";
import { call, createKey, OPERATOR_TOKEN, provision, rows } from "../helpers";
import { seedUsage } from "../usage/seed";
import { html, page, person, signIn } from "./helpers";

const operator = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const MONTHLY = { remaining: 1000, refill: { amount: 1000, interval: "month", mode: "set" } };

type Credits = { remaining: number; refill: unknown; nextRefillAt: string | null } | null;
type Entry = { id: string; delta: number; balanceAfter: number; kind: string; actor: string | null; reason: string | null };

async function admin() {
  const provisioned = await provision();
  const user = await person(provisioned.key.key, "admin");
  return { ...provisioned, user, cookie: await signIn(user.email) };
}

/** The key's own credits as GET /v1/api-keys/{id} reports them. */
async function keyCredits(adminKey: string, id: string): Promise<Credits> {
  const res = await call(`/v1/api-keys/${id}`, { key: adminKey });
  expect(res.status).toBe(200);
  return (await res.json<{ credits: Credits }>()).credits;
}

/** The part of a page between an element's opening tag carrying `attribute` and the end of its row. */
function cell(body: string, attribute: string): string {
  const at = body.indexOf(attribute);
  expect(at, attribute).toBeGreaterThan(-1);
  return body.slice(at, body.indexOf("</tr>", at));
}

/** The adjust form's post, as the page's form sends it. */
const adjust = (cookie: string, keyId: string, form: Record<string, string>) => page(`/dashboard/keys/${keyId}/credits`, { cookie, form });

/** The ledger entries' ids a dashboard page lists, in its order. */
const listed = (body: string) => [...body.matchAll(/<tr data-entry="([^"]+)"/g)].map((m) => m[1]);

describe("dashboard: plan, limits and the credits pool", () => {
  it("shows the account's plan, every limit (shared ones marked) and its pool as GET /v1/account reports them", async () => {
    const { account, key, cookie } = await admin();
    const plan = `pro-${crypto.randomUUID().slice(0, 8)}`;
    const rateLimits = [
      { name: "minute", limit: 10, windowSeconds: 60 },
      { name: "day", limit: 100_000, windowSeconds: 86_400, shared: "account" },
    ];
    expect((await call(`/v1/plans/${plan}`, { method: "PUT", headers: operator, body: { name: "Pro", rateLimits } })).status).toBe(201);
    const patched = await call(`/v1/accounts/${account.id}`, { method: "PATCH", headers: operator, body: { plan, credits: MONTHLY } });
    expect(patched.status).toBe(200);
    // The account's own limits (it was provisioned with one) stand in place of its plan's.
    expect((await call("/v1/account", { method: "PATCH", key: key.key, body: { rateLimits } })).status).toBe(200);
    const api = await (await call("/v1/account", { key: key.key })).json<{ plan: string; rateLimits: unknown; credits: Credits }>();
    expect(api).toMatchObject({ plan, rateLimits, credits: { remaining: 1000 } });

    const body = await html(await page("/dashboard/usage", { cookie }));
    expect(body).toContain(`<code data-plan="${plan}">${plan}</code>`);
    const minute = cell(body, 'data-limit="minute"');
    expect(minute).toContain(">10<");
    expect(minute).toContain("per key");
    const day = cell(body, 'data-limit="day"');
    expect(day).toContain("100,000");
    expect(day).toContain("shared by all keys");
    expect(minute).not.toContain("shared by all keys");
    expect(body).toContain('data-credits-remaining="1000">1,000 left');
    expect(body).toContain("refill: 1,000 every month on day 1, set");
    expect(body).toContain(`<time datetime="${api.credits?.nextRefillAt}">`);
    expect(body).toContain('href="/dashboard/usage/ledger"');

    // A spend moves the pool; the page reads it live from the account's object, as the API does.
    const adjusted = await call(`/v1/accounts/${account.id}/credits`, {
      headers: operator,
      body: { operation: "subtract", amount: 1, reason: "a test spend" },
    });
    expect(adjusted.status).toBe(200);
    expect(await html(await page("/dashboard/usage", { cookie }))).toContain('data-credits-remaining="999">999 left');

    // A member sees the account's plan, limits and pool, but not the pool's ledger (admins only, as in the API).
    const member = await person(key.key, "member");
    const memberCookie = await signIn(member.email);
    const theirs = await html(await page("/dashboard/usage", { cookie: memberCookie }));
    expect(theirs).toContain("999 left");
    expect(theirs).toContain("shared by all keys");
    expect(theirs).not.toContain('href="/dashboard/usage/ledger"');
    expect(await html(await page("/dashboard/usage/ledger", { cookie: memberCookie }), 403)).toContain(
      "This action needs an account admin.",
    );
  });

  it("shows each person their own balance and the limits counted per person, when the account gives them", async () => {
    const provisioned = await provision({
      userCredits: { remaining: 40 },
      rateLimits: [
        { name: "minute", limit: 100, windowSeconds: 60 },
        { name: "person", limit: 500, windowSeconds: 3600, shared: "user" },
      ],
    });
    const member = await person(provisioned.key.key, "member");
    const cookie = await signIn(member.email);
    const taken = await call(`/v1/users/${member.id}/credits`, { key: provisioned.key.key, body: { operation: "subtract", amount: 7 } });
    expect(await taken.json()).toMatchObject({ remaining: 33 });
    const body = await html(await page("/dashboard/usage", { cookie }));
    expect(cell(body, 'data-limit="person"')).toContain("per person, all their keys");
    const mine = body.slice(body.indexOf("data-my-credits"), body.indexOf("</p>", body.indexOf("data-my-credits")));
    expect(mine).toContain('data-credits-remaining="33">33 left');
    // The admin is another person: their own balance, untouched.
    const theirs = await html(await page("/dashboard/usage", { cookie: await signIn((await person(provisioned.key.key, "admin")).email) }));
    expect(theirs).toContain('data-credits-remaining="40">40 left');
  });

  it("an account with no pool shows it unlimited, and no plan", async () => {
    const { cookie } = await admin();
    const body = await html(await page("/dashboard/usage", { cookie }));
    expect(body).toContain("none (the account&#39;s own limits)");
    expect(body).toMatch(/Credits pool \(spent by all keys together\): <span class="muted">unlimited<\/span>/);
    expect(body).not.toContain("data-my-credits");
  });

  it("charts the credits spent per hour beside the requests, and a credits column per key", async () => {
    const { account, key, cookie } = await admin();
    const other = await createKey(key.key, { name: "metered" });
    const hour = hourOf(Date.now());
    await seedUsage(account.id, key.id, [{ hour, admitted: 4, rateLimited: 0, creditsSpent: 12 }]);
    await seedUsage(account.id, other.id, [{ hour, admitted: 9, rateLimited: 1, creditsSpent: 30 }]);
    const body = await html(await page("/dashboard/usage", { cookie }));
    expect(body).toContain("42 credits spent");
    expect(body).toContain('aria-label="All keys of the account: 42 credits spent"');
    expect(body).toMatch(new RegExp(`<rect class="credits"[^>]*data-hour="${hour}"`));
    expect(body).toContain(`data-series="credits-${other.id}"`);
    const row = cell(body, `data-key-usage="${other.id}"`);
    expect(row).toContain("metered");
    expect([...row.matchAll(/<td class="number">([^<]*)<\/td>/g)].map((m) => m[1])).toEqual(["9", "1", "30"]);
    // GET /v1/account/usage says the same.
    const usage = await (await call("/v1/account/usage", { key: key.key })).json<{ keys: { keyId: string; creditsSpent: number }[] }>();
    expect(usage.keys.find((k) => k.keyId === other.id)?.creditsSpent).toBe(30);
  });
});

describe("dashboard: a key's credits", () => {
  it("shows each key's own credits live from its object; none of its own says so", async () => {
    const { key, cookie } = await admin();
    const metered = await createKey(key.key, { name: "metered", credits: MONTHLY });
    const plain = await createKey(key.key, { name: "plain" });
    await call(`/v1/api-keys/${metered.id}/credits`, { key: key.key, body: { operation: "subtract", amount: 250 } });
    const body = await html(await page("/dashboard/keys", { cookie }));
    const shown = cell(body, `data-credits="${metered.id}"`);
    expect(shown).toContain('data-credits-remaining="750">750 left');
    expect(shown).toContain("refill: 1,000 every month on day 1, set");
    expect(shown).toContain(`<time datetime="${(await keyCredits(key.key, metered.id))?.nextRefillAt}">`);
    expect(shown).toContain(`href="/dashboard/keys/${metered.id}/ledger"`);
    expect(cell(body, `data-credits="${plain.id}"`)).toContain("no limit of its own");
  });

  it("adjusts a key's credits exactly as POST /v1/api-keys/{id}/credits does, and shows its refusals with nothing changed", async () => {
    const { account, key, user, cookie } = await admin();
    const metered = await createKey(key.key, { name: "metered", credits: { remaining: 500 } });
    const plain = await createKey(key.key, { name: "plain" });
    const list = await html(await page("/dashboard/keys", { cookie }));
    expect(cell(list, `data-credits="${metered.id}"`)).toContain(`action="/dashboard/keys/${metered.id}/credits"`);
    expect(list).not.toContain(`action="/dashboard/keys/${plain.id}/credits"`);

    const added = await adjust(cookie, metered.id, { operation: "add", amount: "250", reason: "goodwill" });
    expect(added.status).toBe(303);
    expect(added.headers.get("Location")).toBe("/dashboard/keys?done=adjusted");
    expect(await keyCredits(key.key, metered.id)).toMatchObject({ remaining: 750 });
    // The API's own adjustment and the form's move the same balance.
    await call(`/v1/api-keys/${metered.id}/credits`, { key: key.key, body: { operation: "subtract", amount: 50 } });
    expect((await adjust(cookie, metered.id, { operation: "subtract", amount: "600" })).status).toBe(303);
    expect(await keyCredits(key.key, metered.id)).toMatchObject({ remaining: 100 });
    expect((await adjust(cookie, metered.id, { operation: "set", amount: "40", reason: "" })).status).toBe(303);
    expect(await keyCredits(key.key, metered.id)).toMatchObject({ remaining: 40 });
    const after = await html(await page("/dashboard/keys?done=adjusted", { cookie }));
    expect(after).toContain("The key&#39;s credits are adjusted.");
    expect(cell(after, `data-credits="${metered.id}"`)).toContain("40 left");

    // Below zero: the API's 409, its detail shown, the balance unchanged.
    const below = await html(await adjust(cookie, metered.id, { operation: "subtract", amount: "41" }), 409);
    expect(below).toContain('class="alert error"');
    expect(below).toContain("The balance would go below zero: 40 are left.");
    expect(below).toContain("The credits of &quot;metered&quot; were not changed:");
    expect(await keyCredits(key.key, metered.id)).toMatchObject({ remaining: 40 });
    // An unlimited key's balance, and amounts the API refuses.
    expect(await html(await adjust(cookie, plain.id, { operation: "add", amount: "5" }), 409)).toContain("This balance is unlimited");
    expect(await keyCredits(key.key, plain.id)).toBeNull();
    for (const amount of ["-3", "1.5", "abc", ""]) {
      expect(await html(await adjust(cookie, metered.id, { operation: "add", amount }), 400)).toContain("<code>amount</code>");
    }
    expect(await html(await adjust(cookie, metered.id, { operation: "double", amount: "2" }), 400)).toContain("<code>operation</code>");
    expect(await keyCredits(key.key, metered.id)).toMatchObject({ remaining: 40 });

    // Audited as the API's, with the admin as the actor.
    const audited = await rows<{ action: string; actor: string }>(
      "SELECT action, actor FROM audit_events WHERE account_id = ? AND target = ? AND action LIKE 'api_key.credits_%' ORDER BY created_at",
      account.id,
      metered.id,
    );
    expect(audited.filter((e) => e.actor === user.id).map((e) => e.action)).toEqual([
      "api_key.credits_add",
      "api_key.credits_subtract",
      "api_key.credits_set",
    ]);
    // The form's own Idempotency-Key: the same form sent twice applies once.
    const twice = { operation: "add", amount: "10", idempotencyKey: crypto.randomUUID() };
    expect((await adjust(cookie, metered.id, twice)).status).toBe(303);
    expect((await adjust(cookie, metered.id, twice)).status).toBe(303);
    expect(await keyCredits(key.key, metered.id)).toMatchObject({ remaining: 50 });
  });

  it("is no member's: no form, and a member's post is the API's 403 with the balance unchanged", async () => {
    const { key } = await admin();
    const member = await person(key.key, "member");
    const theirs = await createKey(key.key, { name: "theirs", ownerId: member.id, credits: { remaining: 50 } });
    const cookie = await signIn(member.email);
    const body = await html(await page("/dashboard/keys", { cookie }));
    expect(cell(body, `data-credits="${theirs.id}"`)).toContain("50 left");
    expect(body).not.toContain("/credits");
    expect(body).not.toContain('name="amount"');
    const refused = await adjust(cookie, theirs.id, { operation: "add", amount: "1000" });
    expect(await html(refused, 403)).toContain("This action needs an account admin.");
    expect(await keyCredits(key.key, theirs.id)).toMatchObject({ remaining: 50 });
    // As the API answers the member.
    const api = await call(`/v1/api-keys/${theirs.id}/credits`, { key: theirs.key, body: { operation: "add", amount: 1000 } });
    expect(api.status).toBe(403);
    expect(await keyCredits(key.key, theirs.id)).toMatchObject({ remaining: 50 });
  });
});

describe("dashboard: the credits ledger", () => {
  it("lists a key's ledger once its object has flushed it, newest first, paged as GET …/credits/ledger pages it", async () => {
    const { key, user, admin: owner, cookie } = await admin();
    const metered = await createKey(key.key, { name: "metered", credits: { remaining: 100 } });
    const path = `/dashboard/keys/${metered.id}/ledger`;
    await adjust(cookie, metered.id, { operation: "add", amount: "5", reason: "from the dashboard" });
    for (let i = 1; i <= 21; i++) {
      const res = await call(`/v1/api-keys/${metered.id}/credits`, {
        key: key.key,
        body: { operation: "subtract", amount: 1, reason: `r${i}` },
      });
      expect(res.status).toBe(200);
    }
    expect(await html(await page(path, { cookie }))).toContain("No entries yet.");
    await runDurableObjectAlarm(env.KEYS.getByName(`key:${metered.id}`));

    const api = async (cursor?: string) =>
      (await call(`/v1/api-keys/${metered.id}/credits/ledger${cursor ? `?cursor=${cursor}` : ""}`, { key: key.key })).json<{
        data: Entry[];
        nextCursor: string | null;
      }>();
    const first = await html(await page(path, { cookie }));
    const apiFirst = await api();
    expect(apiFirst.data).toHaveLength(20);
    expect(listed(first)).toEqual(apiFirst.data.map((e) => e.id));
    expect(first).toContain('data-credits-remaining="84">84 left');
    // Every column of an entry, as the API reports it.
    const top = apiFirst.data[0] as Entry;
    const newest = cell(first, `data-entry="${top.id}"`);
    expect(newest).toContain("<code>adjust</code>");
    expect([...newest.matchAll(/<td class="number">([^<]*)<\/td>/g)].map((m) => m[1])).toEqual(["-1", String(top.balanceAfter), "1"]);
    expect(newest).toContain(`<td>${top.reason}</td>`);
    // The API's adjustments were made with the key of the account's first admin.
    expect(newest).toContain(owner.email);
    const cursor = /href="\/dashboard\/keys\/[^/]+\/ledger\?cursor=([^"]+)"/.exec(first)?.[1] as string;
    expect(cursor).toBeTruthy();
    const second = await html(await page(`${path}?cursor=${cursor}`, { cookie }));
    const apiSecond = await api(apiFirst.nextCursor as string);
    expect(listed(second)).toEqual(apiSecond.data.map((e) => e.id));
    // Two adjustments and the opening balance.
    expect(listed(second)).toHaveLength(3);
    expect(second).toContain("opening balance");
    // The dashboard's own adjustment: its actor shown by email, its reason, its delta.
    const oldest = cell(second, `data-entry="${apiSecond.data.find((e) => e.reason === "from the dashboard")?.id}"`);
    expect(oldest).toContain(user.email);
    expect(oldest).toContain("from the dashboard");
    expect(oldest).toContain("+5");
    expect(second).not.toContain("?cursor=");
  });

  it("lists the account pool's ledger for admins", async () => {
    const { account, cookie } = await admin();
    await call(`/v1/accounts/${account.id}`, { method: "PATCH", headers: operator, body: { credits: MONTHLY } });
    const bonus = await call(`/v1/accounts/${account.id}/credits`, {
      headers: operator,
      body: { operation: "add", amount: 7, reason: "bonus" },
    });
    expect(bonus.status).toBe(200);
    await runDurableObjectAlarm(env.ACCOUNTS.getByName(`account:${account.id}`));
    const body = await html(await page("/dashboard/usage/ledger", { cookie }));
    expect(body).toContain('data-credits-remaining="1007">1,007 left');
    // The bonus, then the pool's opening balance.
    const ledger = await call(`/v1/accounts/${account.id}/credits/ledger`, { headers: operator });
    const { data } = await ledger.json<{ data: Entry[] }>();
    expect(listed(body)).toEqual(data.map((e) => e.id));
    expect(data.map((e) => e.reason)).toEqual(["bonus", "opening balance"]);
    const entry = cell(body, `data-entry="${data[0]?.id}"`);
    expect(entry).toContain("operator");
    expect(entry).toContain("bonus");
    expect([...entry.matchAll(/<td class="number">([^<]*)<\/td>/g)].map((m) => m[1])).toEqual(["+7", "1,007", "1"]);
  });
});
