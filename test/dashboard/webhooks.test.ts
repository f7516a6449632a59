import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, provision, rows } from "../helpers";
import { html, page, person, signIn } from "./helpers";

type WebhookRow = { id: string; url: string; events: string; description: string | null; secret: string; previous_secret: string | null };

const local = { ALLOW_HTTP: "true" };
const poll = <T>(fn: () => Promise<T>) => expect.poll(fn, { timeout: 10_000, interval: 100 });

/** The signing secret a page shows, if any. */
const shownSecret = (body: string) => /<code id="webhook-secret">(whsec_[A-Za-z0-9+/=]+)<\/code>/.exec(body)?.[1];

async function admin() {
  const provisioned = await provision();
  const user = await person(provisioned.key.key, "admin");
  return { ...provisioned, user, cookie: await signIn(user.email) };
}

/** A fresh endpoint of the test receiver (test/receiver.mjs), which verifies each delivery with the secrets it is given. */
async function receiver() {
  const url = `${env.TEST_UPSTREAM_URL}/hooks/dash-${crypto.randomUUID().slice(0, 8)}`;
  const configure = (c: Record<string, unknown>) => fetch(`${url}/config`, { method: "POST", body: JSON.stringify(c) });
  await configure({});
  const received = async () =>
    (await (await fetch(`${url}/received`)).json()) as { verdict: string; status: number; body: { type: string } }[];
  return { url, configure, received };
}

describe("dashboard: webhooks", () => {
  it("adds an endpoint with the secret shown once and a copy button; the list after shows it without the secret", async () => {
    const { account, key, cookie } = await admin();
    const res = await page("/dashboard/webhooks", {
      cookie,
      form: { url: "https://hooks.example.com/keygate", events: ["api_key.revoked", "api_key.leaked"], description: "billing" },
    });
    const body = await html(res, 201);
    const secret = shownSecret(body) as string;
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(body).toContain("Copy it now: you won&#39;t see it again.");
    expect(body).toContain('data-copy="webhook-secret"');
    // Unlike a key, the secret is kept as it is (it signs every delivery): the page does not claim a hash.
    expect(body).toContain("Keygate keeps it to sign deliveries and never shows it again.");
    expect(body).not.toContain("only a hash");
    const [row] = await rows<WebhookRow>("SELECT * FROM webhooks WHERE account_id = ?", account.id);
    expect(row).toMatchObject({ url: "https://hooks.example.com/keygate", description: "billing", secret });
    expect(JSON.parse(row?.events as string)).toEqual(["api_key.revoked", "api_key.leaked"]);
    // The API reads what the page stored.
    const read = await (await call(`/v1/webhooks/${row?.id}`, { key: key.key })).json();
    expect(read).toMatchObject({ events: ["api_key.revoked", "api_key.leaked"], disabled: false, description: "billing" });

    for (const path of ["/dashboard/webhooks", `/dashboard/webhooks/${row?.id}`]) {
      const later = await html(await page(path, { cookie }));
      expect(later).toContain("https://hooks.example.com/keygate");
      expect(later).toContain("api_key.leaked");
      expect(later).not.toContain(secret);
      expect(shownSecret(later)).toBeUndefined();
    }

    // "All events" is every type, those added later too.
    await html(
      await page("/dashboard/webhooks", { cookie, form: { url: "https://hooks.example.com/all", events: ["*", "api_key.created"] } }),
      201,
    );
    const [all] = await rows<WebhookRow>("SELECT events FROM webhooks WHERE account_id = ? AND url LIKE '%/all'", account.id);
    expect(JSON.parse(all?.events as string)).toEqual(["*"]);
    expect(await html(await page("/dashboard/webhooks", { cookie }))).toContain("All events");
  });

  it("refuses what the API refuses, shows why, keeps the form and stores nothing", async () => {
    const { account, cookie } = await admin();
    const cases: [Record<string, string | string[]>, string][] = [
      [{ url: "https://hooks.example.com/none" }, "<code>events</code>"],
      [{ url: "http://hooks.example.com/plain", events: "api_key.created" }, "must be an https URL"],
      [{ url: "https://keygate.test/v1/leaks", events: "api_key.created" }, "must not be Keygate&#39;s own origin"],
      [{ url: "https://user:pw@hooks.example.com/x", events: "api_key.created" }, "must not carry credentials"],
      [{ url: "https://hooks.example.com/eaten", events: "api_key.eaten" }, "<code>events[0]</code>"],
    ];
    for (const [form, message] of cases) {
      const body = await html(await page("/dashboard/webhooks", { cookie, form }), 400);
      expect(body).toContain('class="alert error"');
      expect(body).toContain(message);
      expect(body).toContain(`value="${(form.url as string).replace("&", "&amp;")}"`);
      expect(shownSecret(body)).toBeUndefined();
    }
    expect(await rows("SELECT id FROM webhooks WHERE account_id = ?", account.id)).toEqual([]);
  });

  it("disables and enables an endpoint as the API reads it, shows why an endpoint is disabled and since when it fails", async () => {
    const { key, cookie } = await admin();
    await html(await page("/dashboard/webhooks", { cookie, form: { url: "https://hooks.example.com/d", events: "api_key.created" } }), 201);
    const { data } = await (await call("/v1/webhooks", { key: key.key })).json<{ data: { id: string }[] }>();
    const id = data[0]?.id as string;
    const read = async () =>
      (await call(`/v1/webhooks/${id}`, { key: key.key })).json<{ disabled: boolean; disabledReason: string | null }>();

    const off = await page(`/dashboard/webhooks/${id}/disable`, { cookie, form: {} });
    expect(off.status).toBe(303);
    expect(off.headers.get("Location")).toBe(`/dashboard/webhooks/${id}?done=disabled`);
    expect(await read()).toMatchObject({ disabled: true, disabledReason: "by_admin" });
    const shown = await html(await page(`/dashboard/webhooks/${id}?done=disabled`, { cookie }));
    expect(shown).toContain("The endpoint is disabled");
    expect(shown).toContain("disabled by an admin");
    expect(shown).toContain(`action="/dashboard/webhooks/${id}/enable"`);

    expect((await page(`/dashboard/webhooks/${id}/enable`, { cookie, form: {} })).status).toBe(303);
    expect(await read()).toMatchObject({ disabled: false, disabledReason: null });

    // What the deliveries did to it, as the list and its page show it.
    await env.DB.prepare("UPDATE webhooks SET failing_since = ? WHERE id = ?").bind("2026-01-02T03:04:05.000Z", id).run();
    expect(await html(await page("/dashboard/webhooks", { cookie }))).toContain('failing since <time datetime="2026-01-02T03:04:05.000Z">');
    await env.DB.prepare("UPDATE webhooks SET disabled_at = ?, disabled_reason = 'gone' WHERE id = ?")
      .bind("2026-01-03T00:00:00.000Z", id)
      .run();
    const gone = await html(await page(`/dashboard/webhooks/${id}`, { cookie }));
    expect(gone).toContain("the endpoint answered 410 Gone");
    expect(gone).not.toContain("failing since");
  });

  it("rotates the secret, shown once; deletes after a confirmation page", async () => {
    const { account, key, cookie } = await admin();
    const created = await html(
      await page("/dashboard/webhooks", { cookie, form: { url: "https://hooks.example.com/r", events: "api_key.created" } }),
      201,
    );
    const first = shownSecret(created) as string;
    const [{ id } = { id: "" }] = await rows<{ id: string }>("SELECT id FROM webhooks WHERE account_id = ?", account.id);

    const rotated = await html(await page(`/dashboard/webhooks/${id}/secret`, { cookie, form: {} }), 201);
    const second = shownSecret(rotated) as string;
    expect(second).toMatch(/^whsec_/);
    expect(second).not.toBe(first);
    expect(rotated).toContain("For 24 hours the old secret signs beside it");
    expect(await rows("SELECT secret, previous_secret FROM webhooks WHERE id = ?", id)).toEqual([
      { secret: second, previous_secret: first },
    ]);
    const later = await html(await page(`/dashboard/webhooks/${id}`, { cookie }));
    expect(later).not.toContain(second);
    expect(later).not.toContain(first);

    const confirm = await html(await page(`/dashboard/webhooks/${id}/delete`, { cookie }));
    expect(confirm).toContain("https://hooks.example.com/r");
    expect(confirm).toContain(`action="/dashboard/webhooks/${id}/delete"`);
    expect(await rows("SELECT id FROM webhooks WHERE id = ?", id)).toEqual([{ id }]);
    // From another site, nothing is deleted.
    await html(await page(`/dashboard/webhooks/${id}/delete`, { cookie, form: {}, origin: "https://evil.example" }), 403);
    expect(await rows("SELECT id FROM webhooks WHERE id = ?", id)).toEqual([{ id }]);

    const deleted = await page(`/dashboard/webhooks/${id}/delete`, { cookie, form: {} });
    expect(deleted.status).toBe(303);
    expect(deleted.headers.get("Location")).toBe("/dashboard/webhooks?done=deleted");
    expect(await rows("SELECT id FROM webhooks WHERE id = ?", id)).toEqual([]);
    expect((await call(`/v1/webhooks/${id}`, { key: key.key })).status).toBe(404);
    expect(await html(await page("/dashboard/webhooks?done=deleted", { cookie }))).toContain("The endpoint is deleted");
    await html(await page(`/dashboard/webhooks/${id}`, { cookie }), 404);
  });

  it("sends a test event the receiver verifies with the secret the page showed; shows each attempt; retries a delivery", async () => {
    const { account, cookie } = await admin();
    const r = await receiver();
    const created = await page("/dashboard/webhooks", { cookie, form: { url: r.url, events: "api_key.created" }, bindings: local });
    const secret = shownSecret(await html(created, 201)) as string;
    await r.configure({ secrets: [secret] });
    const [{ id } = { id: "" }] = await rows<{ id: string }>("SELECT id FROM webhooks WHERE account_id = ?", account.id);

    const tested = await page(`/dashboard/webhooks/${id}/test`, { cookie, form: {} });
    expect(tested.status).toBe(303);
    expect(tested.headers.get("Location")).toBe(`/dashboard/webhooks/${id}?done=tested`);
    await poll(async () => (await r.received()).map((d) => [d.body.type, d.verdict, d.status])).toEqual([["webhook.test", "ok", 204]]);
    await poll(
      async () =>
        (await rows("SELECT id FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = ?)", id))
          .length,
    ).toBe(1);
    const [delivery] = await rows<{ id: string; event_id: string }>("SELECT id, event_id FROM webhook_deliveries WHERE webhook_id = ?", id);
    const shown = await html(await page(`/dashboard/webhooks/${id}?done=tested`, { cookie }));
    expect(shown).toContain("A webhook.test event is on its way");
    expect(shown).toContain(`data-delivery="${delivery?.id}"`);
    expect(shown).toContain(delivery?.event_id);
    expect(shown).toMatch(/HTTP 204, \d+ ms/);
    expect(shown).toContain('<span class="status succeeded">succeeded</span>');

    const retried = await page(`/dashboard/webhooks/${id}/deliveries/${delivery?.id}/retry`, { cookie, form: {} });
    expect(retried.status).toBe(303);
    expect(retried.headers.get("Location")).toBe(`/dashboard/webhooks/${id}?done=retried`);
    await poll(async () => (await r.received()).length).toBe(2);
    await poll(async () => (await rows("SELECT id FROM webhook_attempts WHERE delivery_id = ?", delivery?.id)).length).toBe(2);
    const after = await html(await page(`/dashboard/webhooks/${id}`, { cookie }));
    expect(after.match(/HTTP 204, \d+ ms/g)).toHaveLength(2);
    // A delivery of another endpoint is not found through this one.
    await html(await page(`/dashboard/webhooks/${id}/deliveries/dlv_nope/retry`, { cookie, form: {} }), 404);
  });

  it("is for admins only: a member gets the API's 403, no list, no link, and nothing is stored", async () => {
    const { account, key } = await provision();
    const adminCookie = await signIn((await person(key.key, "admin")).email);
    await html(
      await page("/dashboard/webhooks", { cookie: adminCookie, form: { url: "https://hooks.example.com/m", events: "api_key.leaked" } }),
      201,
    );
    expect(await html(await page("/dashboard/keys", { cookie: adminCookie }))).toContain('href="/dashboard/webhooks"');
    const [{ id } = { id: "" }] = await rows<{ id: string }>("SELECT id FROM webhooks WHERE account_id = ?", account.id);

    const cookie = await signIn((await person(key.key, "member")).email);
    expect(await html(await page("/dashboard/keys", { cookie }))).not.toContain('href="/dashboard/webhooks"');
    for (const path of ["/dashboard/webhooks", `/dashboard/webhooks/${id}`, `/dashboard/webhooks/${id}/delete`]) {
      const body = await html(await page(path, { cookie }), 403);
      expect(body).toContain("This action needs an account admin.");
      expect(body).not.toContain("https://hooks.example.com/m");
    }
    await html(await page("/dashboard/webhooks", { cookie, form: { url: "https://hooks.example.com/x", events: "*" } }), 403);
    await html(await page(`/dashboard/webhooks/${id}/delete`, { cookie, form: {} }), 403);
    await html(await page(`/dashboard/webhooks/${id}/secret`, { cookie, form: {} }), 403);
    expect(await rows<{ url: string }>("SELECT url FROM webhooks WHERE account_id = ?", account.id)).toEqual([
      { url: "https://hooks.example.com/m" },
    ]);
  });
});
