import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { hashKey } from "../../src/core/ids";
import { hourOf } from "../../src/usage/service";
import { faultyDatabase } from "../faults";
import { call, createAgent, createKey, provision, rows } from "../helpers";
import { seedUsage } from "../usage/seed";
import { html, page, person, signIn } from "./helpers";

async function admin() {
  const provisioned = await provision();
  const user = await person(provisioned.key.key, "admin");
  return { ...provisioned, user, cookie: await signIn(user.email) };
}

describe("dashboard: users", () => {
  it("invites a user and shows the link once; the page after never shows it; the link sets the password", async () => {
    const { account, cookie } = await admin();
    const email = `new${crypto.randomUUID().slice(0, 8)}@example.com`;
    const body = await html(await page("/dashboard/users", { cookie, form: { email, role: "member" } }), 201);
    const url = /<code id="invitation-link">(https:\/\/keygate\.test\/dashboard\/accept-invitation#token=(inv_[0-9a-f]{64}))<\/code>/.exec(
      body,
    );
    expect(url).not.toBeNull();
    const token = url?.[2] as string;
    expect(body).toContain("Copy it now: you won&#39;t see it again.");
    const [user] = await rows<{ id: string; role: string }>(
      "SELECT id, role FROM users WHERE email = ? AND account_id = ?",
      email,
      account.id,
    );
    expect(user?.role).toBe("member");
    expect(await rows("SELECT used_at FROM invitations WHERE token_hash = ?", await hashKey(token))).toEqual([{ used_at: null }]);
    const list = await html(await page("/dashboard/users", { cookie }));
    expect(list).toContain(email);
    expect(list).not.toContain(token);
    expect((await call("/v1/auth/accept-invitation", { body: { token, password: "a long enough password" } })).status).toBe(200);
    // A taken email: the API's 409, in the page.
    expect(await html(await page("/dashboard/users", { cookie, form: { email, role: "member" } }), 409)).toContain("already exists");
  });

  it("changes role and grants, disables (ending the user's sessions) and enables, reissues the invitation; all stored", async () => {
    const { key, cookie } = await admin();
    const member = await person(key.key, "member");
    const memberCookie = await signIn(member.email);
    const manage = await html(await page(`/dashboard/users/${member.id}`, { cookie }));
    expect(manage).toContain('name="grants"');

    const saved = await page(`/dashboard/users/${member.id}`, {
      cookie,
      form: { role: "member", grants: "project:warehouse, mailbox:mbx_1" },
    });
    expect(saved.status).toBe(303);
    expect(await rows("SELECT role, grants FROM users WHERE id = ?", member.id)).toEqual([
      { role: "member", grants: '["project:warehouse","mailbox:mbx_1"]' },
    ]);
    const bad = await page(`/dashboard/users/${member.id}`, { cookie, form: { role: "member", grants: "nothing:here" } });
    expect(await html(bad, 400)).toContain("grants[0]");

    expect((await page(`/dashboard/users/${member.id}/disable`, { cookie, form: {} })).status).toBe(303);
    expect(await rows("SELECT disabled FROM users WHERE id = ?", member.id)).toEqual([{ disabled: 1 }]);
    expect((await page("/dashboard/keys", { cookie: memberCookie })).headers.get("Location")).toBe("/dashboard/login");
    expect((await page(`/dashboard/users/${member.id}/enable`, { cookie, form: {} })).status).toBe(303);
    expect(await rows("SELECT disabled FROM users WHERE id = ?", member.id)).toEqual([{ disabled: 0 }]);

    const reissued = await html(await page(`/dashboard/users/${member.id}/invitation`, { cookie, form: {} }), 201);
    const token = /#token=(inv_[0-9a-f]{64})/.exec(reissued)?.[1] as string;
    expect(await rows("SELECT used_at FROM invitations WHERE token_hash = ?", await hashKey(token))).toEqual([{ used_at: null }]);
  });

  it("keeps the account reachable: disabling the owner of its last lasting key is the API's 409, shown, and nothing changes", async () => {
    const { admin: owner, cookie } = await admin();
    const refused = await page(`/dashboard/users/${owner.id}/disable`, { cookie, form: {} });
    const body = await html(refused, 409);
    expect(body).toContain("last lasting admin key");
    expect(body).toContain(owner.email);
    expect(await rows("SELECT disabled FROM users WHERE id = ?", owner.id)).toEqual([{ disabled: 0 }]);
  });

  it("is for admins only: a member gets the API's 403 and no list", async () => {
    const { key, admin: owner } = await provision();
    const member = await person(key.key, "member");
    const cookie = await signIn(member.email);
    for (const path of ["/dashboard/users", `/dashboard/users/${owner.id}`, "/dashboard/agents"]) {
      const body = await html(await page(path, { cookie }), 403);
      expect(body).toContain("This action needs an account admin.");
      expect(body).not.toContain(owner.email);
    }
    await html(await page("/dashboard/users", { cookie, form: { email: "x@example.com", role: "admin" } }), 403);
    expect(await rows("SELECT id FROM users WHERE email = 'x@example.com'")).toEqual([]);
  });
});

describe("dashboard: agents", () => {
  it("registers an agent with its identity secret shown once, edits origins and token lifetime, disables it", async () => {
    const { account, cookie } = await admin();
    const body = await html(
      await page("/dashboard/agents", {
        cookie,
        form: { name: "Shop chat", allowedOrigins: "https://shop.example\nhttps://www.shop.example", tokenTtlSeconds: "600" },
      }),
      201,
    );
    const secret = /<code id="identity-secret">([^<]+)<\/code>/.exec(body)?.[1] as string;
    expect(secret).toBeTruthy();
    const [agent] = await rows<{ id: string; allowed_origins: string; token_ttl_seconds: number; identity_secret: string }>(
      "SELECT * FROM agents WHERE account_id = ?",
      account.id,
    );
    expect(agent).toMatchObject({
      allowed_origins: '["https://shop.example","https://www.shop.example"]',
      token_ttl_seconds: 600,
      identity_secret: secret,
    });
    const list = await html(await page("/dashboard/agents", { cookie }));
    expect(list).toContain("https://www.shop.example");
    expect(list).not.toContain(secret);

    const edited = await page(`/dashboard/agents/${agent?.id}`, {
      cookie,
      form: { name: "Shop chat", allowedOrigins: "https://shop.example", tokenTtlSeconds: "120" },
    });
    expect(edited.status).toBe(303);
    expect(await rows("SELECT origin FROM agent_origins WHERE agent_id = ?", agent?.id)).toEqual([{ origin: "https://shop.example" }]);
    expect(await rows("SELECT token_ttl_seconds FROM agents WHERE id = ?", agent?.id)).toEqual([{ token_ttl_seconds: 120 }]);
    const wrong = await page(`/dashboard/agents/${agent?.id}`, {
      cookie,
      form: { name: "x", allowedOrigins: "http://shop.example", tokenTtlSeconds: "120" },
    });
    expect(await html(wrong, 400)).toContain("must use https");

    expect((await page(`/dashboard/agents/${agent?.id}/disable`, { cookie, form: {} })).status).toBe(303);
    expect(await rows("SELECT disabled FROM agents WHERE id = ?", agent?.id)).toEqual([{ disabled: 1 }]);
    expect(await html(await page(`/dashboard/agents/${agent?.id}`, { cookie }))).not.toContain(secret);
  });
});

describe("dashboard: activity", () => {
  it("pages through the audit events; a member sees only their own actions and their keys' events", async () => {
    const { key, cookie } = await admin();
    const member = await person(key.key, "member");
    const theirs = await createKey(key.key, { name: "theirs", ownerId: member.id });
    for (let i = 0; i < 22; i++) await createKey(key.key, { name: `k${i}` });
    const first = await html(await page("/dashboard/activity", { cookie }));
    expect(first.match(/<tr>/g)?.length).toBe(21); // the header and 20 events
    const next = /href="\/dashboard\/activity\?cursor=([^"]+)"/.exec(first)?.[1] as string;
    expect(next).toBeTruthy();
    const second = await html(await page(`/dashboard/activity?cursor=${next}`, { cookie }));
    expect(second).toContain("account.created");
    expect(second).not.toContain(/<code>(evt_[0-9a-f]+)/.exec(first)?.[1] ?? "none");

    const memberPage = await html(await page("/dashboard/activity", { cookie: await signIn(member.email) }));
    expect(memberPage).toContain(theirs.id);
    expect(memberPage).not.toContain("account.created");
    expect(memberPage.match(/key\.created/g)?.length).toBe(1);
    // A cursor this dashboard did not write is the API's 400, shown.
    expect(await html(await page("/dashboard/activity?cursor=nonsense", { cookie }), 400)).toContain("cursor");
  });
});

describe("dashboard: usage", () => {
  it("charts requests per hour for the account and each key, rate-limited ones as a second series; members see their own keys", async () => {
    const { account, key, cookie } = await admin();
    const member = await person(key.key, "member");
    const memberKey = await createKey(key.key, { name: "member traffic", ownerId: member.id });
    // A key of the admin's that sends nothing itself: its counts are only those given here.
    const traffic = await createKey(key.key, { name: "traffic" });
    const now = hourOf(Date.now());
    const earlier = hourOf(Date.now() - 3 * 3_600_000);
    const old = hourOf(Date.now() - 30 * 3_600_000);
    await seedUsage(account.id, traffic.id, [
      { hour: now, admitted: 40, rateLimited: 7 },
      { hour: earlier, admitted: 10, rateLimited: 0 },
      { hour: old, admitted: 1000, rateLimited: 0 },
    ]);
    await seedUsage(account.id, memberKey.id, [{ hour: now, admitted: 5, rateLimited: 2 }]);
    const body = await html(await page("/dashboard/usage", { cookie }));
    expect(body).toContain('aria-label="All keys of the account: 55 admitted, 9 rate limited"');
    expect(body).toContain(`data-series="${traffic.id}"`);
    expect(body).toContain(`data-series="${memberKey.id}"`);
    expect(body).toMatch(new RegExp(`<rect class="limited"[^>]*data-hour="${now}"`));
    expect(body.match(/<rect class="admitted"/g)?.length).toBe(2 + 2 + 1);
    // A week shows the older hour too.
    expect(await html(await page("/dashboard/usage?hours=168", { cookie }))).toContain("1,055 admitted");

    const mine = await html(await page("/dashboard/usage", { cookie: await signIn(member.email) }));
    expect(mine).toContain('aria-label="All your keys: 5 admitted, 2 rate limited"');
    expect(mine).toContain(`data-series="${memberKey.id}"`);
    expect(mine).not.toContain(`data-series="${traffic.id}"`);
    expect(mine).not.toContain("55 admitted");
  });
});

describe("dashboard: usage reads", () => {
  /** The usage page as `cookie` sees it, and how many D1 statements (and batches) it took to answer. */
  async function usagePage(cookie: string): Promise<{ statements: number; body: string }> {
    let statements = 0;
    // No statement suffers the fault: `when` only counts them on their way to the real D1.
    const counting = faultyDatabase(env.DB, { kind: "throw" }, () => {
      statements += 1;
      return false;
    });
    const body = await html(await page("/dashboard/usage", { cookie, bindings: { DB: counting } }));
    return { statements, body };
  }

  /** GET /v1/account/usage with `key` over the page's hours (the 24 up to the end of the current one), summed. */
  async function apiTotals(key: string): Promise<string> {
    const to = new Date(Date.parse(hourOf(Date.now())) + 3_600_000).toISOString();
    const from = new Date(Date.parse(to) - 24 * 3_600_000).toISOString();
    const res = await call(`/v1/account/usage?from=${from}&to=${to}`, { key });
    const { series } = await res.json<{ series: { admitted: number; rateLimited: number }[] }>();
    const sum = (f: "admitted" | "rateLimited") => String(series.reduce((n, h) => n + h[f], 0));
    return `${sum("admitted")} admitted, ${sum("rateLimited")} rate limited`;
  }

  it("takes as many D1 reads for twelve busy keys as for one, and shows GET /v1/account/usage's totals (members: theirs)", async () => {
    const { account, key, cookie } = await admin();
    const member = await person(key.key, "member");
    const memberCookie = await signIn(member.email);
    const hour = hourOf(Date.now());
    /** Keys of `owner` (undefined: the admin) whose hour this is counted `admitted` each, and one rate limited. */
    const busy = async (owner: string | undefined, ...admitted: number[]) => {
      const made = [];
      for (const _ of admitted) made.push(await createKey(key.key, owner === undefined ? {} : { ownerId: owner }));
      await Promise.all(made.map((k, i) => seedUsage(account.id, k.id, [{ hour, admitted: admitted[i] as number, rateLimited: 1 }])));
      return made[0] as (typeof made)[number];
    };

    await busy(undefined, 5);
    // An isolate reads whose session a cookie names once, on its first page: not what this counts.
    await usagePage(cookie);
    await usagePage(memberCookie);
    const one = await usagePage(cookie);
    await busy(undefined, ...Array.from({ length: 11 }, (_, i) => 10 + i));
    const twelve = await usagePage(cookie);
    expect(twelve.body.match(/data-series="key_/g)?.length).toBe(10);
    expect(twelve.statements).toBe(one.statements);
    expect(twelve.body).toContain(`All keys of the account: ${await apiTotals(key.key)}"`);

    const memberKey = await busy(member.id, 3);
    const mineOne = await usagePage(memberCookie);
    await busy(member.id, 4, 6);
    const mineThree = await usagePage(memberCookie);
    expect(mineThree.body.match(/data-series="key_/g)?.length).toBe(3);
    expect(mineThree.statements).toBe(mineOne.statements);
    expect(mineThree.body).toContain(`All your keys: ${await apiTotals(memberKey.key)}"`);
    expect(mineThree.body).toContain("All your keys: 13 admitted, 3 rate limited");
  });
});

describe("dashboard: secrets", () => {
  it("never puts a key hash, password hash, session or invitation hash, identity secret or cookie in a page", async () => {
    const { account, key, user, cookie } = await admin();
    await createAgent(key.key);
    await person(key.key, "member");
    const hook = await call("/v1/webhooks", { key: key.key, body: { url: "https://hooks.example.com/s", events: ["api_key.leaked"] } });
    const { id: webhookId } = await hook.json<{ id: string }>();
    expect((await call(`/v1/webhooks/${webhookId}/secret`, { method: "POST", key: key.key })).status).toBe(200);
    const pages = [
      "/dashboard/keys",
      "/dashboard/usage",
      "/dashboard/usage/ledger",
      "/dashboard/users",
      "/dashboard/agents",
      "/dashboard/activity",
      "/dashboard/webhooks",
      `/dashboard/webhooks/${webhookId}`,
    ];
    const users = await rows<{ id: string }>("SELECT id FROM users WHERE account_id = ?", account.id);
    const agents = await rows<{ id: string }>("SELECT id FROM agents WHERE account_id = ?", account.id);
    pages.push(...users.map((u) => `/dashboard/users/${u.id}`), ...agents.map((a) => `/dashboard/agents/${a.id}`));
    const text = (await Promise.all(pages.map(async (path) => html(await page(path, { cookie }))))).join("\n");
    const secrets = [
      ...(await rows<{ s: string }>("SELECT hash AS s FROM api_keys WHERE account_id = ?", account.id)),
      ...(await rows<{ s: string }>("SELECT password_hash AS s FROM users WHERE account_id = ? AND password_hash IS NOT NULL", account.id)),
      ...(await rows<{ s: string }>("SELECT refresh_hash AS s FROM sessions WHERE account_id = ?", account.id)),
      ...(await rows<{ s: string }>(
        "SELECT token_hash AS s FROM invitations WHERE user_id IN (SELECT id FROM users WHERE account_id = ?)",
        account.id,
      )),
      ...(await rows<{ s: string }>("SELECT identity_secret AS s FROM agents WHERE account_id = ?", account.id)),
      ...(await rows<{ s: string }>("SELECT secret AS s FROM webhooks WHERE account_id = ?", account.id)),
      ...(await rows<{ s: string }>("SELECT previous_secret AS s FROM webhooks WHERE account_id = ?", account.id)),
    ].map((r) => r.s);
    expect(secrets.length).toBeGreaterThanOrEqual(10);
    for (const secret of [...secrets, cookie, cookie.split(".")[1] as string, key.key]) expect(text).not.toContain(secret);
    expect(text).toContain(user.email);
  });
});

describe("dashboard: every input has a label", () => {
  it("names each field of every page, by a <label for> or an aria-label", async () => {
    const { key, cookie } = await admin();
    // With credits of its own, so the keys page has its adjust form.
    const k = await createKey(key.key, { name: "labelled", credits: { remaining: 10 } });
    const agent = await createAgent(key.key);
    const member = await person(key.key);
    const hook = await call("/v1/webhooks", { key: key.key, body: { url: "https://hooks.example.com/l", events: ["api_key.leaked"] } });
    const { id: webhookId } = await hook.json<{ id: string }>();
    const paths = [
      "/dashboard/login",
      "/dashboard/accept-invitation",
      "/dashboard/keys",
      `/dashboard/keys/${k.id}/rotate`,
      `/dashboard/keys/${k.id}/revoke`,
      `/dashboard/keys/${k.id}/ledger`,
      "/dashboard/usage",
      "/dashboard/usage/ledger",
      "/dashboard/users",
      `/dashboard/users/${member.id}`,
      "/dashboard/agents",
      `/dashboard/agents/${agent.id}`,
      "/dashboard/activity",
      "/dashboard/webhooks",
      `/dashboard/webhooks/${webhookId}`,
      `/dashboard/webhooks/${webhookId}/delete`,
    ];
    let fields = 0;
    for (const path of paths) {
      const signedOut = path === "/dashboard/login" || path === "/dashboard/accept-invitation";
      const body = await html(await page(path, signedOut ? {} : { cookie }));
      const labelled = new Set([...body.matchAll(/<label[^>]*\sfor="([^"]+)"/g)].map((m) => m[1]));
      // A label around the field names it too.
      const wrapping = [...body.matchAll(/<label\b[^>]*>.*?<\/label>/gs)].map((m) => [m.index, m.index + m[0].length]);
      for (const m of body.matchAll(/<(input|select|textarea)\b[^>]*>/g)) {
        const [tag] = m;
        if (/type="(hidden|submit)"/.test(tag)) continue;
        fields++;
        const id = /\sid="([^"]+)"/.exec(tag)?.[1];
        const wrapped = wrapping.some(([from, to]) => m.index > (from as number) && m.index < (to as number));
        expect(labelled.has(id) || wrapped || /\saria-label="[^"]+"/.test(tag), `${path}: ${tag}`).toBe(true);
      }
    }
    expect(fields).toBeGreaterThan(10);
  });
});
