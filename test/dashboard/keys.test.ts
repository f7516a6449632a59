import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { hashKey } from "../../src/core/ids";
import { call, callWith, createKey, provision, rows } from "../helpers";
import { html, page, person, signIn } from "./helpers";

type KeyRow = { id: string; name: string; hash: string; scopes: string; expires_at: string | null; rate_limit: number | null };

/** The raw key a page shows, if any, of either format. */
const shownKey = (body: string, prefix: string) =>
  new RegExp(`<code id="new-key">(${prefix}_[0-9a-f]{64}|kg_${prefix}_[0-9A-Za-z]{49})</code>`).exec(body)?.[1];

async function admin() {
  const provisioned = await provision();
  const user = await person(provisioned.key.key, "admin");
  return { ...provisioned, user, cookie: await signIn(user.email) };
}

describe("dashboard: API keys", () => {
  it("creates a key and shows it once, with a copy button and the warning; the list after shows it only by prefix and start", async () => {
    const { account, cookie } = await admin();
    const res = await page("/dashboard/keys", { cookie, form: { name: "billing job", access: "full" } });
    const body = await html(res, 201);
    const raw = shownKey(body, account.keyPrefix) as string;
    expect(raw).toBeDefined();
    expect(body).toContain("Copy it now: you won&#39;t see it again.");
    expect(body).toContain('data-copy="new-key"');
    const [row] = await rows<KeyRow>("SELECT * FROM api_keys WHERE name = ? AND account_id = ?", "billing job", account.id);
    expect(row?.hash).toBe(await hashKey(raw));
    expect(JSON.parse(row?.scopes as string)).toEqual(["*"]);
    expect((await call("/v1/whoami", { key: raw })).status).toBe(200);

    const list = await html(await page("/dashboard/keys", { cookie }));
    expect(list).toContain("billing job");
    // Its prefix and start: everything before the random part, and 8 characters of it.
    expect(list).toContain(`${raw.slice(0, raw.lastIndexOf("_") + 9)}…`);
    expect(list).not.toContain(raw);
    expect(list).not.toContain(row?.hash);
    expect(shownKey(list, account.keyPrefix)).toBeUndefined();
  });

  it("creates a resource-scoped key with an expiry and a limit; a bad field shows its message and stores nothing", async () => {
    const { account, cookie } = await admin();
    const created = await page("/dashboard/keys", {
      cookie,
      form: {
        name: "inbox",
        access: "resources",
        mailboxIds: "mbx_1, mbx_2",
        expiresAt: "2099-01-02T03:04",
        limit: "5",
        windowSeconds: "10",
      },
    });
    await html(created, 201);
    const [row] = await rows<KeyRow>("SELECT * FROM api_keys WHERE name = ? AND account_id = ?", "inbox", account.id);
    expect(JSON.parse(row?.scopes as string)).toEqual(["mailbox:mbx_1", "mailbox:mbx_2"]);
    expect(row?.expires_at).toBe("2099-01-02T03:04:00.000Z");
    expect(row?.rate_limit).toBe(5);

    for (const form of [
      { name: "past", access: "full", expiresAt: "2001-01-01T00:00" } as Record<string, string>,
      { name: "none", access: "resources" },
      { name: "", access: "full" },
    ]) {
      const body = await html(await page("/dashboard/keys", { cookie, form }), 400);
      expect(body).toContain('class="alert error"');
      expect(body).toMatch(/must be in the future|name at least one resource id|Invalid fields: name/);
    }
    expect(await rows("SELECT id FROM api_keys WHERE account_id = ? AND name IN ('past', 'none', '')", account.id)).toEqual([]);
  });

  it("revokes after a confirmation page; the key is refused from then on; the account's last lasting key stays", async () => {
    const { account, key, cookie } = await admin();
    const other = await createKey(key.key, { name: "to revoke" });
    const confirm = await html(await page(`/dashboard/keys/${other.id}/revoke`, { cookie }));
    expect(confirm).toContain("to revoke");
    expect(confirm).toContain(`action="/dashboard/keys/${other.id}/revoke"`);
    expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", other.id)).toEqual([{ revoked_at: null }]);

    const res = await page(`/dashboard/keys/${other.id}/revoke`, { cookie, form: {} });
    expect(res.status).toBe(303);
    expect(res.headers.get("Location")).toBe("/dashboard/keys?done=revoked");
    expect(
      (await rows<{ revoked_at: string | null }>("SELECT revoked_at FROM api_keys WHERE id = ?", other.id))[0]?.revoked_at,
    ).not.toBeNull();
    expect((await call("/v1/whoami", { key: other.key })).status).toBe(401);
    expect(await html(await page("/dashboard/keys?done=revoked", { cookie }))).toContain("The key is revoked");

    // The provisioned key is the account's last lasting one: the API's 409, shown in the page, and nothing stored.
    const last = await page(`/dashboard/keys/${key.id}/revoke`, { cookie, form: {} });
    expect(await html(last, 409)).toContain("last lasting admin key");
    expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", key.id)).toEqual([{ revoked_at: null }]);
    expect(account.id).toBeTruthy();
  });

  it("rotates with a grace period: the new key shown once, the old one revoked at the end of the grace", async () => {
    const { account, key, cookie } = await admin();
    const old = await createKey(key.key, { name: "rotating", rateLimit: { limit: 7, windowSeconds: 60 } });
    expect(await html(await page(`/dashboard/keys/${old.id}/rotate`, { cookie }))).toContain('name="gracePeriodSeconds"');
    const before = Date.now();
    const body = await html(await page(`/dashboard/keys/${old.id}/rotate`, { cookie, form: { gracePeriodSeconds: "3600" } }), 201);
    const raw = shownKey(body, account.keyPrefix) as string;
    expect(body).toContain("The old key keeps working until");
    const [fresh] = await rows<KeyRow & { rotated_from: string }>("SELECT * FROM api_keys WHERE hash = ?", await hashKey(raw));
    expect(fresh).toMatchObject({ name: "rotating", rotated_from: old.id, rate_limit: 7 });
    const [stale] = await rows<{ revoked_at: string }>("SELECT revoked_at FROM api_keys WHERE id = ?", old.id);
    expect(Date.parse(stale?.revoked_at as string) - before).toBeGreaterThanOrEqual(3_599_000);
    expect(Date.parse(stale?.revoked_at as string) - before).toBeLessThan(3_700_000);
    expect((await call("/v1/whoami", { key: old.key })).status).toBe(200);
    // Rotated once: a second rotation of the old key is the API's 409, in the page.
    expect(await html(await page(`/dashboard/keys/${old.id}/rotate`, { cookie, form: { gracePeriodSeconds: "0" } }), 409)).toContain(
      "only an active key can be rotated",
    );
  });

  it("shows members their own keys only, and neither another's key nor a form the account does not allow", async () => {
    const { key } = await provision();
    const member = await person(key.key, "member");
    const theirs = await createKey(key.key, { name: "member own", ownerId: member.id });
    const admins = await createKey(key.key, { name: "admin other" });
    const cookie = await signIn(member.email);
    const list = await html(await page("/dashboard/keys", { cookie }));
    expect(list).toContain("member own");
    expect(list).not.toContain("admin other");
    expect(list).not.toContain(key.name);
    expect(list).toContain("Only account admins can create API keys");
    expect(list).not.toContain('href="/dashboard/users"');
    // Another's key is not found for them, as on the API; nothing changes.
    await html(await page(`/dashboard/keys/${admins.id}/revoke`, { cookie }), 404);
    await html(await page(`/dashboard/keys/${admins.id}/revoke`, { cookie, form: {} }), 404);
    expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", admins.id)).toEqual([{ revoked_at: null }]);
    // Creating is the API's 403 for them, shown in the page.
    expect(await html(await page("/dashboard/keys", { cookie, form: { name: "sneaky", access: "full" } }), 403)).toContain(
      "Only account admins can create API keys",
    );
    expect(await rows("SELECT id FROM api_keys WHERE name = 'sneaky'")).toEqual([]);
    // Their own key they may revoke.
    expect((await page(`/dashboard/keys/${theirs.id}/revoke`, { cookie, form: {} })).status).toBe(303);
  });

  it("refuses key changes from another origin or without one, storing nothing", async () => {
    const { account, key, cookie } = await admin();
    const other = await createKey(key.key, { name: "kept" });
    for (const origin of ["https://evil.example", null]) {
      await html(await page("/dashboard/keys", { cookie, form: { name: "forged", access: "full" }, origin }), 403);
      await html(await page(`/dashboard/keys/${other.id}/revoke`, { cookie, form: {}, origin }), 403);
      await html(await page(`/dashboard/keys/${other.id}/rotate`, { cookie, form: { gracePeriodSeconds: "0" }, origin }), 403);
    }
    expect(await rows("SELECT id FROM api_keys WHERE account_id = ? AND name = 'forged'", account.id)).toEqual([]);
    expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", other.id)).toEqual([{ revoked_at: null }]);
    expect(await rows("SELECT id FROM api_keys WHERE rotated_from = ?", other.id)).toEqual([]);
  });

  it("warns of a key reported leaked that still works, naming it with when and how to stop it; not once it is revoked", async () => {
    const { key, cookie } = await admin();
    const pasted = await createKey(key.key, { name: "pasted in a gist" });
    const clean = await createKey(key.key, { name: "never shown" });
    expect(await html(await page("/dashboard/keys", { cookie }))).not.toContain('id="leaked-keys"');
    const reported = await callWith({}, "/v1/leaks", {
      body: { key: pasted.key, url: "https://gist.example/x" },
      headers: { "CF-Connecting-IP": "203.0.113.50" },
    });
    expect(reported.status).toBe(202);
    const [{ leaked_at } = { leaked_at: "" }] = await rows<{ leaked_at: string }>("SELECT leaked_at FROM api_keys WHERE id = ?", pasted.id);
    expect(leaked_at).toMatch(/^\d{4}-/);

    const body = await html(await page("/dashboard/keys", { cookie }));
    const banner = /<div class="alert warning" role="alert" id="leaked-keys">(.*?)<\/div>/s.exec(body)?.[1] ?? "";
    expect(banner).toContain("A key was reported leaked and still works.");
    expect(banner).toContain("pasted in a gist");
    expect(banner).toContain(`${pasted.prefix}_${pasted.start}…`);
    expect(banner).toContain(`reported leaked at <time datetime="${leaked_at}">`);
    expect(banner).toContain(`href="/dashboard/keys/${pasted.id}/rotate"`);
    expect(banner).toContain(`href="/dashboard/keys/${pasted.id}/revoke"`);
    expect(banner).not.toContain("never shown");
    expect(banner).not.toContain(pasted.key);
    expect(body).toContain('<span class="status leaked">leaked</span>');
    expect(body).not.toContain(clean.key);

    // Revoked, it is no danger any more: no banner, no mark.
    expect((await page(`/dashboard/keys/${pasted.id}/revoke`, { cookie, form: {} })).status).toBe(303);
    const after = await html(await page("/dashboard/keys", { cookie }));
    expect(after).not.toContain('id="leaked-keys"');
    expect(after).not.toContain('<span class="status leaked">');
  });

  it("shows the key hygiene counts of GET /v1/account/key-hygiene and tags each key; a member's are their own", async () => {
    const { key, cookie, admin: owner } = await admin();
    const old = await createKey(key.key, { name: "old one" });
    const idle = await createKey(key.key, { name: "idle one", expiresAt: new Date(Date.now() + 86_400_000).toISOString() });
    const day = 86_400_000;
    await env.DB.prepare("UPDATE api_keys SET created_at = ?, last_used_at = ? WHERE id = ?")
      .bind(new Date(Date.now() - 400 * day).toISOString(), new Date(Date.now() - day).toISOString(), old.id)
      .run();
    await env.DB.prepare("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
      .bind(new Date(Date.now() - 100 * day).toISOString(), idle.id)
      .run();

    const body = await html(await page("/dashboard/keys", { cookie }));
    const api = await (await call("/v1/account/key-hygiene", { key: key.key })).json<Record<string, { count: number }>>();
    const counts = Object.fromEntries([...body.matchAll(/<dt data-hygiene="(\w+)">(\d+)<\/dt>/g)].map((m) => [m[1], Number(m[2])]));
    expect(Object.keys(counts).sort()).toEqual(["idle90d", "leakedActive", "neverUsed", "noExpiry", "olderThanYear"]);
    // The page's counts are the API's (the keys' own uses between the two reads aside: none of these keys is used).
    expect(counts.olderThanYear).toBe(1);
    expect(counts.idle90d).toBe(1);
    expect(counts.leakedActive).toBe(0);
    expect(counts.olderThanYear).toBe(api.olderThanYear?.count);
    expect(counts.idle90d).toBe(api.idle90d?.count);
    const row = (name: string) => new RegExp(`<tr><td>${name}</td>(.*?)</tr>`, "s").exec(body)?.[1] ?? "";
    expect(row("old one")).toContain('<span class="tag">over a year old</span>');
    expect(row("old one")).toContain('<span class="tag">no expiry</span>');
    expect(row("old one")).not.toContain("idle 90 days");
    expect(row("idle one")).toContain('<span class="tag">idle 90 days</span>');
    expect(row("idle one")).not.toContain("no expiry");

    // A member's page counts their own keys only.
    const member = await person(key.key, "member");
    await createKey(key.key, { name: "member's", ownerId: member.id });
    const theirs = await html(await page("/dashboard/keys", { cookie: await signIn(member.email) }));
    expect(theirs).toContain("Of your 1 active key;");
    expect(theirs).toContain('<dt data-hygiene="olderThanYear">0</dt>');
    expect(theirs).toContain('<dt data-hygiene="neverUsed">1</dt>');
    expect(owner.id).toBeTruthy();
  });
});
