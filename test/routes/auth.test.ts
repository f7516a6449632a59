import { env } from "cloudflare:workers";
import { createLocalJWKSet, jwtVerify } from "jose";
import { describe, expect, it, vi } from "vitest";
import { hashPassword } from "../../src/core/password";
import { REFRESH_GRACE_SECONDS } from "../../src/people/sessions";
import { faultyDatabase } from "../faults";
import { gw } from "../gateway/table";
import { call, callWith, createAgent, createKey, expectProblem, OPERATOR_TOKEN, own, provision, rows } from "../helpers";

const PASSWORD = "correct horse battery";

type Invited = { id: string; email: string; invitation: { token: string; url: string; expiresAt: string } };
type Pair = { access_token: string; token_type: string; expires_in: number; refresh_token: string };

/** A new user of the account with a password set through their invitation. */
async function person(adminKey: string, role: "admin" | "member" = "member", email = `p${crypto.randomUUID().slice(0, 8)}@example.com`) {
  const res = await call("/v1/users", { key: adminKey, body: { email, role } });
  expect(res.status).toBe(201);
  const user = await res.json<Invited>();
  const accepted = await call("/v1/auth/accept-invitation", { body: { token: user.invitation.token, password: PASSWORD } });
  expect(accepted.status, await accepted.clone().text()).toBe(200);
  return user;
}

async function login(email: string, password = PASSWORD, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
  return call("/v1/auth/login", { body: { email, password, ...extra }, headers });
}

async function tokens(email: string): Promise<Pair> {
  const res = await login(email);
  expect(res.status, await res.clone().text()).toBe(200);
  expect(res.headers.get("Cache-Control")).toBe("no-store");
  return res.json();
}

const sessionRow = async (id: string) =>
  (await rows<{ ended_at: string | null; end_reason: string | null }>("SELECT ended_at, end_reason FROM sessions WHERE id = ?", id))[0];
const sid = (pair: Pair) => pair.refresh_token.split(".")[0] as string;

describe("invitations and passwords", () => {
  it("sets a password once with an invitation; a used, replaced or expired one is refused", async () => {
    const { account, key } = await provision();
    const res = await call("/v1/users", { key: key.key, body: { email: "new@example.com", role: "member" } });
    const user = await res.json<Invited>();
    const stored = await rows<{ password_hash: string | null }>("SELECT password_hash FROM users WHERE id = ?", user.id);
    expect(stored).toEqual([{ password_hash: null }]);
    await expectProblem(await login("new@example.com"), 401, "invalid_credentials");

    const accepted = await call("/v1/auth/accept-invitation", { body: { token: user.invitation.token, password: PASSWORD } });
    expect(await accepted.json()).toEqual({ userId: user.id, accountId: account.id, email: "new@example.com" });
    const [row] = await rows<{ password_hash: string }>("SELECT password_hash FROM users WHERE id = ?", user.id);
    expect(row?.password_hash).toMatch(/^pbkdf2-sha256\$100000\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    expect(row?.password_hash).not.toContain(PASSWORD);
    // Used once: never again.
    await expectProblem(
      await call("/v1/auth/accept-invitation", { body: { token: user.invitation.token, password: "another good password" } }),
      400,
      "invalid_invitation",
    );
    const before = await tokens("new@example.com");

    // A new invitation (the reset) replaces an unused older one.
    const first = await (await call(`/v1/users/${user.id}/invitation`, { method: "POST", key: key.key })).json<Invited["invitation"]>();
    const second = await call(`/v1/users/${user.id}/invitation`, { method: "POST", key: key.key });
    expect(second.status).toBe(201);
    const latest = await second.json<Invited["invitation"]>();
    await expectProblem(
      await call("/v1/auth/accept-invitation", { body: { token: first.token, password: "reset password one" } }),
      400,
      "invalid_invitation",
    );
    // An expired one is refused, and says so.
    await env.DB.prepare("UPDATE invitations SET expires_at = ? WHERE user_id = ? AND used_at IS NULL")
      .bind("2020-01-01T00:00:00.000Z", user.id)
      .run();
    await expectProblem(
      await call("/v1/auth/accept-invitation", { body: { token: latest.token, password: "reset password two" } }),
      400,
      "invitation_expired",
    );
    expect((await login("new@example.com")).status).toBe(200);
    // A reset that goes through ends every session the user had.
    const reset = await (await call(`/v1/users/${user.id}/invitation`, { method: "POST", key: key.key })).json<Invited["invitation"]>();
    expect((await call("/v1/whoami", { key: before.access_token })).status).toBe(200);
    expect((await call("/v1/auth/accept-invitation", { body: { token: reset.token, password: "reset password three" } })).status).toBe(200);
    await expectProblem(await call("/v1/whoami", { key: before.access_token }), 401, "session_ended");
    expect((await login("new@example.com", "reset password three")).status).toBe(200);
  });

  it("refuses short, long, common and email-equal passwords, setting nothing", async () => {
    const { key } = await provision();
    const user = await (await call("/v1/users", { key: key.key, body: { email: "weak@example.com", role: "member" } })).json<Invited>();
    for (const password of ["short", "x".repeat(257), "Password1234", "weak@example.com", "WEAK@example.com"]) {
      const res = await call("/v1/auth/accept-invitation", { body: { token: user.invitation.token, password } });
      await expectProblem(res, 400, "invalid_request");
    }
    expect(await rows("SELECT password_hash FROM users WHERE id = ? AND password_hash IS NOT NULL", user.id)).toEqual([]);
    expect((await call("/v1/auth/accept-invitation", { body: { token: user.invitation.token, password: "x".repeat(12) } })).status).toBe(
      200,
    );
  });

  it("lets only one of two racing requests use an invitation", async () => {
    const { key } = await provision();
    const user = await (await call("/v1/users", { key: key.key, body: { email: "race@example.com", role: "member" } })).json<Invited>();
    const results = await Promise.all(
      ["first racing password", "second racing password"].map((password) =>
        call("/v1/auth/accept-invitation", { body: { token: user.invitation.token, password } }),
      ),
    );
    expect(results.map((r) => r.status).sort()).toEqual([200, 400]);
    const winner = results[0]?.status === 200 ? "first racing password" : "second racing password";
    expect((await login("race@example.com", winner)).status).toBe(200);
  });
});

describe("login", () => {
  it("answers configuration_error without JWT_SIGNING_KEYS, before a session is stored or a refresh token spent", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const pair = await tokens(user.email);
    const before = await rows("SELECT id FROM sessions WHERE user_id = ?", user.id);
    await expectProblem(
      await callWith({ JWT_SIGNING_KEYS: undefined }, "/v1/auth/login", { body: { email: user.email, password: PASSWORD } }),
      500,
      "configuration_error",
    );
    expect(await rows("SELECT id FROM sessions WHERE user_id = ?", user.id)).toEqual(before);
    await expectProblem(
      await callWith({ JWT_SIGNING_KEYS: undefined }, "/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } }),
      500,
      "configuration_error",
    );
    // The refresh token was not spent: it still answers a new pair.
    expect((await call("/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } })).status).toBe(200);
  });

  it("replaces a hash made with a lower cost by one at today's at the next login", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    await env.DB.prepare("UPDATE users SET password_hash = ? WHERE id = ?")
      .bind(await hashPassword(PASSWORD, 1000), user.id)
      .run();
    expect((await login(user.email)).status).toBe(200);
    const [row] = await rows<{ password_hash: string }>("SELECT password_hash FROM users WHERE id = ?", user.id);
    expect(row?.password_hash).toMatch(/^pbkdf2-sha256\$100000\$/);
    expect((await login(user.email)).status).toBe(200);
  });

  it("answers seed 003's shape, and the same 401 for an unknown email and a wrong password after the same work", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const pair = await tokens(user.email);
    expect(pair).toEqual({
      access_token: expect.any(String),
      token_type: "bearer",
      expires_in: 3600,
      refresh_token: expect.stringMatching(/^ses_[0-9a-f]{24}\.rt_[0-9a-f]{64}$/),
    });
    const derive = vi.spyOn(crypto.subtle, "deriveBits");
    const wrong = await login(user.email, "not the password at all");
    const wrongCalls = derive.mock.calls.length;
    const unknown = await login("nobody-at-all@example.com", "not the password at all");
    const unknownCalls = derive.mock.calls.length - wrongCalls;
    derive.mockRestore();
    expect(wrongCalls).toBe(1);
    expect(unknownCalls).toBe(1);
    const [a, b] = [await wrong.json<Record<string, unknown>>(), await unknown.json<Record<string, unknown>>()];
    expect(wrong.status).toBe(401);
    expect({ ...a, instance: null, requestId: null }).toEqual({ ...b, instance: null, requestId: null });
    expect(a.code).toBe("invalid_credentials");
  });

  it("limits failed logins per email with 429 and retry_after; a success gives its attempt back", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    for (let i = 0; i < 9; i++) expect((await login(user.email)).status).toBe(200);
    for (let i = 0; i < 10; i++) await expectProblem(await login(user.email, "wrong password here"), 401, "invalid_credentials");
    const limited = await login(user.email);
    const body = await expectProblem(limited, 429, "rate_limited");
    expect(body.retry_after).toBeGreaterThan(0);
    expect(Number(limited.headers.get("Retry-After"))).toBeGreaterThan(0);
  });

  it("limits failed logins per client address", async () => {
    const ip = { "CF-Connecting-IP": "10.99.1.1" };
    const statuses: number[] = [];
    for (let i = 0; i < 31; i++) statuses.push((await login(`nobody${i}@example.com`, "wrong password here", {}, ip)).status);
    expect(statuses.slice(0, 30).every((s) => s === 401)).toBe(true);
    expect(statuses[30]).toBe(429);
  });

  it("asks which account when one email with one password belongs to several, naming none", async () => {
    const email = `shared${crypto.randomUUID().slice(0, 8)}@example.com`;
    const a = await provision();
    const b = await provision();
    await person(a.key.key, "member", email);
    await person(b.key.key, "member", email);
    const text = JSON.stringify(await expectProblem(await login(email), 409, "account_required"));
    expect(text).not.toContain(a.account.id);
    expect(text).not.toContain(b.account.id);
    const pair = await (await login(email, PASSWORD, { accountId: b.account.id })).json<Pair>();
    const who = await (await call("/v1/whoami", { key: pair.access_token })).json<{ accountId: string; keyId: null }>();
    expect(who).toMatchObject({ accountId: b.account.id, keyId: null });
  });
});

describe("a login or a password change racing a change to its user", () => {
  /** A database whose session INSERT (or users UPDATE) waits until `release` is called. */
  const heldAt = (pattern: RegExp) => {
    let release = () => {};
    const until = new Promise<void>((resolve) => {
      release = resolve;
    });
    return { db: faultyDatabase(env.DB, { kind: "held", until }, (sql) => pattern.test(sql)), release };
  };
  const live = (userId: string) =>
    rows<{ id: string }>("SELECT id FROM sessions WHERE user_id = ? AND ended_at IS NULL ORDER BY id", userId);
  /** The session of `token` changes the password from PASSWORD, through `db` when given. */
  const changePassword = (token: string, newPassword: string, db?: D1Database) =>
    callWith(db ? { DB: db } : {}, "/v1/auth/password", { key: token, body: { currentPassword: PASSWORD, newPassword } });
  /** A login with PASSWORD whose session is checked but not stored until `release`. */
  const heldLogin = async (email: string) => {
    const held = heldAt(/insert into "?sessions/i);
    const answer = callWith({ DB: held.db }, "/v1/auth/login", { body: { email, password: PASSWORD } });
    await held.db.reached();
    return { answer, release: held.release };
  };

  it("opens no session for a password changed while the login checked it", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const mine = await tokens(user.email);
    // The thief's login has checked the old password; its session is not stored yet.
    const thief = await heldLogin(user.email);
    expect((await changePassword(mine.access_token, "a brand new password")).status).toBe(204);
    thief.release();
    await expectProblem(await thief.answer, 401, "invalid_credentials");
    expect(await live(user.id)).toEqual([{ id: sid(mine) }]);
  });

  it("opens no session for a user disabled while the login checked the password, not even once enabled again", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const racing = await heldLogin(user.email);
    expect((await call(`/v1/users/${user.id}`, { method: "PATCH", key: key.key, body: { disabled: true } })).status).toBe(200);
    racing.release();
    await expectProblem(await racing.answer, 401, "invalid_credentials");
    expect((await call(`/v1/users/${user.id}`, { method: "PATCH", key: key.key, body: { disabled: false } })).status).toBe(200);
    expect(await live(user.id)).toEqual([]);
    expect((await login(user.email)).status).toBe(200);
  });

  it("keeps the first of two password changes made from the same current password; the later one changes nothing", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const [first, second] = [await tokens(user.email), await tokens(user.email)];
    const held = heldAt(/update "users" set "password_hash"/i);
    const late = changePassword(first.access_token, "the thief's new password", held.db);
    await held.db.reached();
    expect((await changePassword(second.access_token, "the owner's new password")).status).toBe(204);
    held.release();
    await expectProblem(await late, 401, "invalid_credentials");
    await expectProblem(await login(user.email, "the thief's new password"), 401, "invalid_credentials");
    expect((await login(user.email, "the owner's new password")).status).toBe(200);
    // The owner's change ended the other session; the late one ended none.
    expect(await sessionRow(sid(first))).toEqual({ ended_at: expect.any(String), end_reason: "password_changed" });
    expect(await sessionRow(sid(second))).toEqual({ ended_at: null, end_reason: null });
  });
});

describe("access and refresh tokens", () => {
  it("work where a full-access key of the user works, with the user's role and grants, and on the gateway as a session", async () => {
    const { account, key } = await provision({ membersCanCreateKeys: true });
    const member = await person(key.key);
    const pair = await tokens(member.email);
    const who = await call("/v1/whoami", { key: pair.access_token });
    expect(await who.json()).toMatchObject({ accountId: account.id, userId: member.id, role: "member", scopes: ["*"], keyId: null });
    // A member: keys of their own, not users.
    expect((await call("/v1/api-keys", { key: pair.access_token, body: { name: "mine" } })).status).toBe(201);
    await expectProblem(await call("/v1/users", { key: pair.access_token }), 403, "insufficient_role");
    // Grants apply at once.
    await call(`/v1/users/${member.id}`, { method: "PATCH", key: key.key, body: { grants: ["mailbox:mbx_s1"] } });
    await own(account.id, "mailbox:mbx_s1");
    const seen = await gw("/v1/mailboxes/mbx_s1/messages", { key: pair.access_token });
    expect(seen.status).toBe(200);
    const echo = await seen.json<{ headers: Record<string, string> }>();
    expect(echo.headers).toMatchObject({
      "keygate-auth-method": "session",
      "keygate-user-id": member.id,
      "keygate-scopes": "mailbox:mbx_s1",
    });
    expect(echo.headers["keygate-key-id"]).toBeUndefined();
    expect(JSON.stringify(echo)).not.toContain(pair.access_token);
    await expectProblem(await gw("/v1/anything", { key: pair.access_token }), 403, "insufficient_scope");
  });

  it("are never taken for a gateway assertion, nor an assertion for one", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const pair = await tokens(user.email);
    const seen = await (await gw("/v1/anything", { key: key.key })).json<{ headers: Record<string, string> }>();
    const assertion = seen.headers["keygate-assertion"] as string;
    expect(assertion).toBeTruthy();
    await expectProblem(await call("/v1/whoami", { key: assertion }), 401, "invalid_token");
    await expectProblem(await call("/v1/auth/refresh", { method: "POST", key: assertion }), 401, "invalid_token");
    // An upstream checking an assertion as README shows refuses an access token in its place.
    const keys = createLocalJWKSet(await (await call("/.well-known/jwks.json")).json());
    await expect(jwtVerify(pair.access_token, keys, { typ: "keygate-assertion+jwt", algorithms: ["ES256"] })).rejects.toThrow();
  });

  it("end 30 days after login, whatever the refreshes", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const pair = await tokens(user.email);
    const [row] = await rows<{ created_at: string; expires_at: string }>(
      "SELECT created_at, expires_at FROM sessions WHERE id = ?",
      sid(pair),
    );
    expect(Date.parse(row?.expires_at as string) - Date.parse(row?.created_at as string)).toBe(30 * 86_400_000);
    const next = await (await call("/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } })).json<Pair>();
    await env.DB.prepare("UPDATE sessions SET expires_at = ? WHERE id = ?")
      .bind(new Date(Date.now() - 1000).toISOString(), sid(pair))
      .run();
    await expectProblem(await call("/v1/whoami", { key: next.access_token }), 401, "session_ended");
    await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: next.refresh_token } }), 401, "invalid_refresh_token");
  });

  it("are limited per user, at the account's default rate", async () => {
    const { key } = await provision({ rateLimit: { limit: 2, windowSeconds: 60 } });
    const user = await person(key.key);
    const [a, b] = [await tokens(user.email), await tokens(user.email)];
    expect((await call("/v1/whoami", { key: a.access_token })).status).toBe(200);
    expect((await call("/v1/whoami", { key: b.access_token })).status).toBe(200);
    const body = await expectProblem(await call("/v1/whoami", { key: a.access_token }), 429, "rate_limited");
    expect(body.retry_after).toBeGreaterThan(0);
    // The admin's key has a budget of its own.
    expect((await call("/v1/whoami", { key: key.key })).status).toBe(200);
  });

  it("rotates the refresh token; presenting a used one after the grace ends the whole session", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const first = await tokens(user.email);
    const second = await (await call("/v1/auth/refresh", { body: { refresh_token: first.refresh_token } })).json<Pair>();
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect(second.access_token).not.toBe(first.access_token);
    expect(sid(second)).toBe(sid(first));
    vi.useFakeTimers({ now: Date.now() + (REFRESH_GRACE_SECONDS + 1) * 1000, toFake: ["Date"] });
    try {
      await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: first.refresh_token } }), 401, "invalid_refresh_token");
    } finally {
      vi.useRealTimers();
    }
    expect(await sessionRow(sid(first))).toEqual({ ended_at: expect.any(String), end_reason: "refresh_reused" });
    await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: second.refresh_token } }), 401, "invalid_refresh_token");
    await expectProblem(await call("/v1/whoami", { key: second.access_token }), 401, "session_ended");
    // The account's endpoints are told, once, and never with a token.
    const told = await rows<{ data: string }>(
      "SELECT data FROM webhook_events WHERE type = 'session.reuse_detected' AND data LIKE ?",
      `%${sid(first)}%`,
    );
    expect(told.map((e) => JSON.parse(e.data))).toEqual([{ sessionId: sid(first), userId: user.id }]);
    expect(told[0]?.data).not.toContain(first.refresh_token.split(".")[1]);
  });

  it("answers two refreshes racing with one refresh token the same new pair, and the session goes on", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const pair = await tokens(user.email);
    const answers = await Promise.all([0, 1].map(() => call("/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } })));
    expect(answers.map((r) => r.status)).toEqual([200, 200]);
    const [a, b] = (await Promise.all(answers.map((r) => r.json<Pair>()))) as [Pair, Pair];
    expect(b).toEqual(a);
    expect(a.refresh_token).not.toBe(pair.refresh_token);
    expect(await sessionRow(sid(pair))).toEqual({ ended_at: null, end_reason: null });
    expect((await call("/v1/whoami", { key: a.access_token })).status).toBe(200);
    expect((await call("/v1/auth/refresh", { body: { refresh_token: a.refresh_token } })).status).toBe(200);
  });

  it("answers a refresh repeated after a late 503 with the pair its stored write made, within the grace", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const pair = await tokens(user.email);
    // The rotation lands in D1, but its answer comes after the deadline: the client gets 503 and is told to retry.
    const late = faultyDatabase(env.DB, { kind: "late-answer", ms: 300 }, (sql) => sql.includes('update "sessions"'));
    const res = await callWith({ DB: late, D1_TIMEOUT_MS: "100" }, "/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } });
    await expectProblem(res, 503, "database_unavailable");
    expect(Number(res.headers.get("Retry-After"))).toBeGreaterThan(0);
    const retried = await call("/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } });
    expect(retried.status).toBe(200);
    const next = await retried.json<Pair>();
    // Asked again, the same pair: the answer depends on the token presented, not on how often it came.
    expect(await (await call("/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } })).json()).toEqual(next);
    expect(await sessionRow(sid(pair))).toEqual({ ended_at: null, end_reason: null });
    expect((await call("/v1/whoami", { key: next.access_token })).status).toBe(200);
    const after = await call("/v1/auth/refresh", { body: { refresh_token: next.refresh_token } });
    expect(after.status).toBe(200);
    expect((await after.json<Pair>()).refresh_token).not.toBe(next.refresh_token);
  });

  // A thief who refreshes a stolen token twice leaves the owner's token older than the previous one: it must still be
  // known as used, or the owner is refused while the thief keeps the session for its 30 days.
  it("ends the session when a token used two or more refreshes ago comes back, however the thief refreshed", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    for (const by of ["refresh token", "access token"] as const) {
      const owner = await tokens(user.email);
      let thief = owner;
      for (let i = 0; i < 2; i++) {
        const res =
          by === "refresh token"
            ? await call("/v1/auth/refresh", { body: { refresh_token: thief.refresh_token } })
            : await call("/v1/auth/refresh", { method: "POST", key: thief.access_token });
        expect(res.status, by).toBe(200);
        thief = await res.json<Pair>();
      }
      await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: owner.refresh_token } }), 401, "invalid_refresh_token");
      expect(await sessionRow(sid(owner)), by).toEqual({ ended_at: expect.any(String), end_reason: "refresh_reused" });
      await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: thief.refresh_token } }), 401, "invalid_refresh_token");
      await expectProblem(await call("/v1/whoami", { key: thief.access_token }), 401, "session_ended");
    }
  });

  it("never ends a session for a refresh secret it never issued, even with the session's id", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const pair = await tokens(user.email);
    for (const made of [`${sid(pair)}.rt_${"0".repeat(64)}`, `${sid(pair)}.rt_${"f".repeat(64)}`]) {
      await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: made } }), 401, "invalid_refresh_token");
    }
    expect(await sessionRow(sid(pair))).toEqual({ ended_at: null, end_reason: null });
    expect((await call("/v1/whoami", { key: pair.access_token })).status).toBe(200);
    expect((await call("/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } })).status).toBe(200);
  });

  it("refreshes with a current access token (seed 003), and refuses an expired one or another kind of token", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const pair = await tokens(user.email);
    const res = await call("/v1/auth/refresh", { method: "POST", key: pair.access_token });
    expect(res.status).toBe(200);
    const next = await res.json<Pair>();
    expect((await call("/v1/whoami", { key: next.access_token })).status).toBe(200);
    const agent = await createAgent(key.key);
    const minted = await call("/v1/handshake", { key: key.key, body: { agentId: agent.id, userId: "end-user-1" } });
    const { token } = await minted.json<{ token: string }>();
    await expectProblem(await call("/v1/auth/refresh", { method: "POST", key: token }), 401, "invalid_token");
    // A handshake token is not an access token, nor the reverse.
    await expectProblem(await call("/v1/whoami", { key: token }), 403, "insufficient_scope");
    vi.useFakeTimers({ now: Date.now() + 3610_000, toFake: ["Date"] });
    try {
      // Past the hour and the few seconds of clock skew a token is allowed.
      await expectProblem(await call("/v1/auth/refresh", { method: "POST", key: next.access_token }), 401, "token_expired");
      await expectProblem(await call("/v1/whoami", { key: next.access_token }), 401, "token_expired");
    } finally {
      vi.useRealTimers();
    }
    // The previous refresh token was spent by that refresh: presented again, it ends the session.
    await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } }), 401, "invalid_refresh_token");
    await expectProblem(await call("/v1/whoami", { key: next.access_token }), 401, "session_ended");
  });

  it("ends on logout, when the user is disabled, and (the others) when the password changes", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const a = await (await login(user.email, PASSWORD, {}, { "User-Agent": "Roboticks CLI/2.1" })).json<Pair>();
    const [b, c] = [await tokens(user.email), await tokens(user.email)];
    const sessions = await (await call("/v1/auth/sessions", { key: a.access_token })).json<{ data: { id: string; current: boolean }[] }>();
    expect(sessions.data.map((s) => s.id).sort()).toEqual([sid(a), sid(b), sid(c)].sort());
    expect(sessions.data.find((s) => s.current)).toMatchObject({
      id: sid(a),
      userAgent: "Roboticks CLI/2.1",
      createdAt: expect.any(String),
      lastUsedAt: expect.any(String),
    });
    expect(JSON.stringify(sessions)).not.toMatch(/rt_|refresh/);

    expect((await call("/v1/auth/logout", { method: "POST", key: c.access_token })).status).toBe(204);
    await expectProblem(await call("/v1/whoami", { key: c.access_token }), 401, "session_ended");
    await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: c.refresh_token } }), 401, "invalid_refresh_token");

    const changed = await call("/v1/auth/password", {
      key: a.access_token,
      body: { currentPassword: PASSWORD, newPassword: "a brand new password" },
    });
    expect(changed.status).toBe(204);
    expect((await call("/v1/whoami", { key: a.access_token })).status).toBe(200);
    await expectProblem(await call("/v1/whoami", { key: b.access_token }), 401, "session_ended");
    expect(await sessionRow(sid(b))).toEqual({ ended_at: expect.any(String), end_reason: "password_changed" });
    await expectProblem(await login(user.email), 401, "invalid_credentials");
    const wrong = await call("/v1/auth/password", {
      key: a.access_token,
      body: { currentPassword: "not my password", newPassword: "another new password" },
    });
    await expectProblem(wrong, 401, "invalid_credentials");

    await call(`/v1/users/${user.id}`, { method: "PATCH", key: key.key, body: { disabled: true } });
    await expectProblem(await call("/v1/whoami", { key: a.access_token }), 401, "session_ended");
    expect(await sessionRow(sid(a))).toEqual({ ended_at: expect.any(String), end_reason: "user_disabled" });
    await call(`/v1/users/${user.id}`, { method: "PATCH", key: key.key, body: { disabled: false } });
    await expectProblem(await call("/v1/whoami", { key: a.access_token }), 401, "session_ended");
  });

  it("limits current-password guesses per user, from any address, in the same budget as login", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const { access_token } = await tokens(user.email);
    const stored = await rows("SELECT password_hash FROM users WHERE id = ?", user.id);
    const change = (currentPassword: string) =>
      call("/v1/auth/password", { key: access_token, body: { currentPassword, newPassword: "a brand new password" } });
    // Each guess comes from another address: only a limit per user can stop them.
    for (let i = 0; i < 10; i++) await expectProblem(await change(`wrong guess number ${i}`), 401, "invalid_credentials");
    const limited = await change(PASSWORD);
    expect((await expectProblem(limited, 429, "rate_limited")).retry_after).toBeGreaterThan(0);
    expect(Number(limited.headers.get("Retry-After"))).toBeGreaterThan(0);
    expect(await rows("SELECT password_hash FROM users WHERE id = ?", user.id)).toEqual(stored);
    await expectProblem(await login(user.email), 429, "rate_limited");
  });

  it("ends one of your own sessions by id, never another user's", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const other = await person(key.key);
    const [mine, theirs] = [await tokens(user.email), await tokens(other.email)];
    await expectProblem(await call(`/v1/auth/sessions/${sid(theirs)}`, { method: "DELETE", key: mine.access_token }), 404, "not_found");
    expect((await call("/v1/whoami", { key: theirs.access_token })).status).toBe(200);
    const second = await tokens(user.email);
    expect((await call(`/v1/auth/sessions/${sid(second)}`, { method: "DELETE", key: mine.access_token })).status).toBe(204);
    await expectProblem(await call("/v1/whoami", { key: second.access_token }), 401, "session_ended");
    // Logging out and changing a password are a person's acts: an API key cannot.
    await expectProblem(await call("/v1/auth/logout", { method: "POST", key: key.key }), 403, "insufficient_scope");
  });

  it("lets a member whose grants were narrowed end their own sessions and change their password; a narrow key may not", async () => {
    const { key } = await provision();
    const user = await person(key.key);
    const patched = await call(`/v1/users/${user.id}`, { method: "PATCH", key: key.key, body: { grants: ["project:alpha"] } });
    expect(patched.status).toBe(200);
    const [a, b, c] = [await tokens(user.email), await tokens(user.email), await tokens(user.email)];
    // Their sessions are theirs whatever their grants: a stolen one can be ended by its owner.
    const listed = await call("/v1/auth/sessions", { key: a.access_token });
    expect(listed.status).toBe(200);
    expect((await listed.json<{ data: { id: string }[] }>()).data.map((s) => s.id).sort()).toEqual([sid(a), sid(b), sid(c)].sort());
    expect((await call(`/v1/auth/sessions/${sid(b)}`, { method: "DELETE", key: a.access_token })).status).toBe(204);
    await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: b.refresh_token } }), 401, "invalid_refresh_token");
    const changed = await call("/v1/auth/password", {
      key: a.access_token,
      body: { currentPassword: PASSWORD, newPassword: "a brand new password" },
    });
    expect(changed.status).toBe(204);
    await expectProblem(await call("/v1/whoami", { key: c.access_token }), 401, "session_ended");
    expect((await call("/v1/auth/logout", { method: "POST", key: a.access_token })).status).toBe(204);
    await expectProblem(await call("/v1/whoami", { key: a.access_token }), 401, "session_ended");
    // A key scoped to resources is not its owner: it still needs full access to read or end the owner's sessions.
    const scoped = await createKey(key.key, { scopes: ["project:alpha"] });
    await expectProblem(await call("/v1/auth/sessions", { key: scoped.key }), 403, "insufficient_scope");
    const other = await tokens((await person(key.key)).email);
    await expectProblem(await call(`/v1/auth/sessions/${sid(other)}`, { method: "DELETE", key: scoped.key }), 403, "insufficient_scope");
  });

  it("gives the provisioned admin an invitation too", async () => {
    const res = await call("/v1/accounts", {
      headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` },
      body: { name: "With admin", admin: { email: `boss${crypto.randomUUID().slice(0, 6)}@example.com` } },
    });
    const body = await res.json<{ admin: Invited; key: { key: string } }>();
    await call("/v1/auth/accept-invitation", { body: { token: body.admin.invitation.token, password: PASSWORD } });
    const pair = await tokens(body.admin.email);
    expect(await (await call("/v1/whoami", { key: pair.access_token })).json()).toMatchObject({ role: "admin" });
    expect((await createKey(pair.access_token)).key).toMatch(/^kg_sk_/);
  });
});
