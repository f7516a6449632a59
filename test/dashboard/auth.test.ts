import { describe, expect, it } from "vitest";
import { hashKey } from "../../src/core/ids";
import { POLICY } from "../../src/http/dashboard/layout";
import { call, expectProblem, provision, rows } from "../helpers";
import { COOKIE, html, PASSWORD, page, person, signIn } from "./helpers";

const sessionOf = (cookie: string) => cookie.split(".")[0] as string;

describe("dashboard login", () => {
  it("answers a form it cannot read with 400, never a 500", async () => {
    for (const path of ["/dashboard/login", "/dashboard/accept-invitation"]) {
      // A multipart body cut off before its closing boundary.
      const res = await call(path, {
        headers: { "Content-Type": "multipart/form-data; boundary=zzz", Origin: "https://keygate.test" },
        body: '--zzz\r\nContent-Disposition: form-data; name="email"\r\n\r\nx\r\n--zz',
      });
      await expectProblem(res, 400, "invalid_request");
    }
  });

  it("sets the session cookie with exactly HttpOnly, Secure, SameSite=Lax, Path=/ and a cookie secret whose hash is stored", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const res = await page("/dashboard/login", { form: { email: user.email, password: PASSWORD } });
    expect(res.status).toBe(303);
    expect(res.headers.get("Location")).toBe("/dashboard/keys");
    const [pair, ...attributes] = (res.headers.get("Set-Cookie") ?? "").split(";").map((s) => s.trim());
    expect(pair).toMatch(new RegExp(`^${COOKIE}=ses_[0-9a-f]{24}\\.cs_[0-9a-f]{64}$`));
    expect(attributes.sort()).toEqual(["HttpOnly", "Path=/", "SameSite=Lax", "Secure"]);
    const value = (pair as string).slice(COOKIE.length + 1);
    const [session] = await rows<{ user_id: string; refresh_hash: string; ended_at: string | null }>(
      "SELECT user_id, refresh_hash, ended_at FROM sessions WHERE id = ?",
      sessionOf(value),
    );
    expect(session).toEqual({ user_id: user.id, refresh_hash: await hashKey(value.split(".")[1] as string), ended_at: null });
    // The cookie is the session: the keys page opens with it, and only with it.
    expect(await html(await page("/dashboard/keys", { cookie: value }))).toContain(user.email);
    expect((await page("/dashboard/keys")).headers.get("Location")).toBe("/dashboard/login");
  });

  it("shows the problem's detail for a wrong password, sets no cookie and stores no session", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const res = await page("/dashboard/login", { form: { email: user.email, password: "not the password at all" } });
    const body = await html(res, 401);
    expect(body).toContain("The email or password is not right.");
    expect(body).not.toMatch(/at .*\.(ts|js):\d+/);
    expect(res.headers.get("Set-Cookie")).toBeNull();
    expect(res.headers.get("Content-Security-Policy")).toBe(POLICY);
    expect(await rows("SELECT id FROM sessions WHERE user_id = ?", user.id)).toEqual([]);
  });

  it("asks for the account id when one email with one password belongs to several accounts", async () => {
    const email = `multi${crypto.randomUUID().slice(0, 8)}@example.com`;
    const accounts = [await provision(), await provision()];
    for (const { key } of accounts) {
      const created = await (await call("/v1/users", { key: key.key, body: { email, role: "member" } })).json<{
        invitation: { token: string };
      }>();
      expect((await call("/v1/auth/accept-invitation", { body: { token: created.invitation.token, password: PASSWORD } })).status).toBe(
        200,
      );
    }
    const asked = await html(await page("/dashboard/login", { form: { email, password: PASSWORD } }), 409);
    expect(asked).toContain('name="accountId"');
    expect(asked).not.toContain(accounts[0]?.account.id);
    const res = await page("/dashboard/login", { form: { email, password: PASSWORD, accountId: accounts[1]?.account.id as string } });
    expect(res.status).toBe(303);
  });

  it("logs out: the session ends, the cookie is cleared and stops working", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const cookie = await signIn(user.email);
    const res = await page("/dashboard/logout", { cookie, form: {} });
    expect(res.status).toBe(303);
    expect(res.headers.get("Location")).toBe("/dashboard/login?done=logout");
    expect(res.headers.get("Set-Cookie")).toMatch(new RegExp(`^${COOKIE}=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Lax`));
    expect(await rows("SELECT end_reason FROM sessions WHERE id = ?", sessionOf(cookie))).toEqual([{ end_reason: "logout" }]);
    const after = await page("/dashboard/keys", { cookie });
    expect(after.status).toBe(303);
    expect(after.headers.get("Location")).toBe("/dashboard/login");
  });

  it("ends with the user: a disabled user's cookie stops working at once", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const cookie = await signIn(user.email);
    expect((await page("/dashboard/keys", { cookie })).status).toBe(200);
    expect((await call(`/v1/users/${user.id}`, { method: "PATCH", key: key.key, body: { disabled: true } })).status).toBe(200);
    expect((await page("/dashboard/keys", { cookie })).headers.get("Location")).toBe("/dashboard/login");
  });

  it("never takes a cookie for a refresh token, nor a refresh token or access token for a cookie", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const cookie = await signIn(user.email);
    const refreshed = await call("/v1/auth/refresh", { body: { refresh_token: cookie } });
    expect(refreshed.status).toBe(401);
    expect((await page("/dashboard/keys", { cookie })).status).toBe(200);
    const pair = await (await call("/v1/auth/login", { body: { email: user.email, password: PASSWORD } })).json<{
      access_token: string;
      refresh_token: string;
    }>();
    // The session's id with another secret is no cookie of it.
    const forged = `${sessionOf(cookie)}.cs_${"0".repeat(64)}`;
    for (const other of [pair.refresh_token, pair.access_token, forged]) {
      expect((await page("/dashboard/keys", { cookie: other })).headers.get("Location")).toBe("/dashboard/login");
    }
  });
});

describe("dashboard CSRF", () => {
  it("refuses a login post from another origin or without one, storing no session", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    for (const origin of ["https://evil.example", null, "null", "https://keygate.test.evil.example"]) {
      const res = await page("/dashboard/login", { form: { email: user.email, password: PASSWORD }, origin });
      expect(await html(res, 403)).toContain("nothing was changed");
      expect(res.headers.get("Set-Cookie")).toBeNull();
    }
    expect(await rows("SELECT id FROM sessions WHERE user_id = ?", user.id)).toEqual([]);
  });

  it("refuses a logout from another origin: the session lives on", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const cookie = await signIn(user.email);
    await html(await page("/dashboard/logout", { cookie, form: {}, origin: "https://evil.example" }), 403);
    await html(await page("/dashboard/logout", { cookie, form: {}, origin: null }), 403);
    expect(await rows("SELECT ended_at FROM sessions WHERE id = ?", sessionOf(cookie))).toEqual([{ ended_at: null }]);
    expect((await page("/dashboard/keys", { cookie })).status).toBe(200);
  });
});

describe("accepting an invitation in the dashboard", () => {
  it("sets the password as the API does: once, with the rules, the token moved in from the fragment by the script", async () => {
    const { key } = await provision();
    const email = `inv${crypto.randomUUID().slice(0, 8)}@example.com`;
    const created = await (await call("/v1/users", { key: key.key, body: { email, role: "member" } })).json<{
      invitation: { token: string; url: string };
    }>();
    expect(created.invitation.url).toBe(`https://keygate.test/dashboard/accept-invitation#token=${created.invitation.token}`);
    const form = await html(await page("/dashboard/accept-invitation"));
    expect(form).toContain('id="token"');
    expect(form).toContain('<script src="/dashboard/dashboard.js" defer="">');

    const token = created.invitation.token;
    expect(
      await html(await page("/dashboard/accept-invitation", { form: { token, password: PASSWORD, confirm: "other" } }), 400),
    ).toContain("is not the same password");
    expect(await html(await page("/dashboard/accept-invitation", { form: { token, password: email, confirm: email } }), 400)).toContain(
      "password",
    );
    const done = await html(await page("/dashboard/accept-invitation", { form: { token, password: PASSWORD, confirm: PASSWORD } }));
    expect(done).toContain(email);
    expect(await signIn(email)).toMatch(/^ses_/);
    const again = await page("/dashboard/accept-invitation", {
      form: { token, password: "another password here", confirm: "another password here" },
    });
    expect(await html(again, 400)).toContain("This invitation is not valid");
    // Refused from another origin before the token is even read.
    const other = await (
      await call(`/v1/users/${(await rows<{ id: string }>("SELECT id FROM users WHERE email = ?", email))[0]?.id}/invitation`, {
        method: "POST",
        key: key.key,
      })
    ).json<{ token: string }>();
    await html(
      await page("/dashboard/accept-invitation", {
        form: { token: other.token, password: "x".repeat(20), confirm: "x".repeat(20) },
        origin: null,
      }),
      403,
    );
    expect(await rows("SELECT used_at FROM invitations WHERE token_hash = ?", await hashKey(other.token))).toEqual([{ used_at: null }]);
  });
});

describe("dashboard pages and files", () => {
  it("sends the strict policy and no-store on every page, and serves its own stylesheet and script", async () => {
    const { key } = await provision();
    const user = await person(key.key, "admin");
    const cookie = await signIn(user.email);
    for (const path of ["/dashboard/login", "/dashboard/accept-invitation", "/dashboard/keys", "/dashboard/nothing-here"]) {
      const res = await page(path, { cookie });
      expect(res.headers.get("Content-Security-Policy"), path).toBe(POLICY);
      expect(res.headers.get("Cache-Control"), path).toBe("no-store");
      expect(res.headers.get("X-Frame-Options"), path).toBe("DENY");
    }
    expect(POLICY).toContain("script-src 'self'");
    expect(POLICY).toContain("form-action 'self'");
    expect(POLICY).toContain("frame-ancestors 'none'");
    const css = await page("/dashboard/dashboard.css");
    expect(css.status).toBe(200);
    expect(css.headers.get("Content-Type")).toMatch(/^text\/css/);
    const js = await page("/dashboard/dashboard.js");
    expect(js.status).toBe(200);
    expect(js.headers.get("Content-Type")).toMatch(/javascript/);
    expect(await js.text()).toContain("data-copy");
  });
});

describe("dashboard errors for clients that are not browsers", () => {
  it("answer the API's problem+json, and HTML only to a client that asks for it", async () => {
    const refused = await page("/dashboard/login", {
      form: { email: "x@example.com", password: "y" },
      origin: null,
      headers: { Accept: "application/json" },
    });
    await expectProblem(refused, 403, "origin_not_allowed");
    expect(refused.headers.get("Content-Security-Policy")).toBe(POLICY);
    await expectProblem(await page("/dashboard/nowhere", { headers: { Accept: "*/*" } }), 404, "not_found");
    const browser = await page("/dashboard/nowhere");
    expect(browser.status).toBe(404);
    expect(browser.headers.get("Content-Type")).toContain("text/html");
  });

  it("answer a refused form with the problem+json of the API, not the page showing it", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const json = { Accept: "application/json" };
    const wrong = await page("/dashboard/login", { form: { email: user.email, password: "not the password at all" }, headers: json });
    await expectProblem(wrong, 401, "invalid_credentials");
    expect(wrong.headers.get("Set-Cookie")).toBeNull();
    const invalid = await expectProblem(
      await page("/dashboard/login", { form: { email: "nobody", password: "x" }, headers: json }),
      400,
      "invalid_request",
    );
    expect(invalid.errors).toEqual([{ field: "email", message: "must be an email address" }]);
    const cookie = await signIn(user.email);
    const bad = await page("/dashboard/keys", { cookie, form: { name: "" }, headers: json });
    await expectProblem(bad, 400, "invalid_request");
  });
});

describe("dashboard rate limit", () => {
  it("spends the user's own limit, shared with their access tokens", async () => {
    const { key } = await provision({ rateLimit: { limit: 3, windowSeconds: 60 } });
    const user = await person(key.key);
    const cookie = await signIn(user.email);
    for (let i = 0; i < 2; i++) expect((await page("/dashboard/keys", { cookie })).status).toBe(200);
    const pair = await (await call("/v1/auth/login", { body: { email: user.email, password: PASSWORD } })).json<{ access_token: string }>();
    expect((await call("/v1/whoami", { key: pair.access_token })).status).toBe(200);
    const limited = await page("/dashboard/keys", { cookie });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("Retry-After"))).toBeGreaterThan(0);
    expect(await limited.text()).toContain("Rate limit exceeded");
  });
});
