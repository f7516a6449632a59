import { createExecutionContext, evictDurableObject, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Need } from "../../src/core/principal";
import { Holdings, holdings } from "../../src/counters/held";
import type { SessionClaim } from "../../src/counters/sessions";
import { CHANGE_IN_FORCE_MS } from "../../src/keys/reload";
import { authorizePerson, cookieClaim } from "../../src/people/authorize";
import { makeDeps } from "../../src/platform/deps";
import { PASSWORD, page, signIn } from "../dashboard/helpers";
import { faultyDatabase, faultyObjects, faultyQueue, objectDatabase, objectSessions } from "../faults";
import { call, callWith, expectProblem, provision, rows } from "../helpers";

// A person's session is judged as a key is: by the person's object, which holds it once read, and by an isolate's
// lease of it for a second at most. These tests take the two sides one at a time: "this isolate" is the worker under
// test (its own module's holdings, reached through its fetch handler), "another isolate" is a Holdings of the test's
// own on a clock the test moves, calling the same objects.

type Pair = { access_token: string; refresh_token: string };
type Kind = "token" | "cookie";

/** A hot account: leases come once a session makes 20 requests a second. */
const HOT = { rateLimit: { limit: 100_000, windowSeconds: 60 } };

async function invited(adminKey: string, role: "admin" | "member") {
  const email = `s${crypto.randomUUID().slice(0, 8)}@example.com`;
  const res = await call("/v1/users", { key: adminKey, body: { email, role } });
  expect(res.status).toBe(201);
  const user = await res.json<{ id: string; email: string; invitation: { token: string } }>();
  expect((await call("/v1/auth/accept-invitation", { body: { token: user.invitation.token, password: PASSWORD } })).status).toBe(200);
  return user;
}

async function tokens(email: string): Promise<Pair> {
  const res = await call("/v1/auth/login", { body: { email, password: PASSWORD } });
  expect(res.status).toBe(200);
  return res.json();
}

/** A session of a new person of a hot account, by access token or dashboard cookie, and a second session of theirs. */
async function session(kind: Kind, role: "admin" | "member") {
  const { account, key } = await provision(HOT);
  const user = await invited(key.key, role);
  const other = await tokens(user.email);
  if (kind === "token") {
    const pair = await tokens(user.email);
    const sessionId = pair.refresh_token.split(".")[0] as string;
    return { account, key, user, other, pair, cookie: null, sessionId, claim: { userId: user.id, sessionId, accountId: account.id } };
  }
  const cookie = await signIn(user.email);
  const sessionId = cookie.split(".")[0] as string;
  const claim = await cookieClaim(request().deps, cookie);
  if (!claim) throw new Error("the cookie names no session");
  return { account, key, user, other, pair: null, cookie, sessionId, claim };
}
type Session = Awaited<ReturnType<typeof session>>;

function request(overrides: Partial<Cloudflare.Env> = {}) {
  const ctx = createExecutionContext();
  return { deps: makeDeps({ ...env, ...overrides }, ctx), ctx };
}

/** One request of the session in `isolate` (the worker's own when absent), as the guard makes it: how it went. */
async function judged(claim: SessionClaim, need: Need = "any", isolate?: Holdings) {
  const { deps, ctx } = request();
  try {
    const verdict = await authorizePerson(deps, { ...claim, need }, isolate);
    if (verdict.ok) return verdict.spent[0]?.leased ? "leased" : "counted";
    return "code" in verdict ? verdict.code : verdict.refusal;
  } finally {
    await waitOnExecutionContext(ctx);
  }
}

/** Makes `isolate` hold a lease of the session (it asks its object until one comes). */
async function hot(s: Session, isolate?: Holdings) {
  const name = `person:${s.user.id}:${s.sessionId}`;
  const held = isolate ?? holdings;
  for (let i = 0; held.available(name) === 0; i++) {
    expect(await judged(s.claim, "any", isolate)).toMatch(/leased|counted/);
    expect(i).toBeLessThan(200);
  }
  return name;
}

/** What the person's object itself answers the session now, asked directly (no lease can answer for it). */
async function fromObject(s: Session, need: Need) {
  const tag = { id: crypto.randomUUID(), deadline: Date.now() + 10_000 };
  const answer = await env.ACCOUNTS.getByName(`user:${s.user.id}`).admitSession({ ...s.claim, need, tag, cost: 0 });
  return answer.ok ? "admitted" : "code" in answer ? answer.code : answer.refusal;
}

/** The session's request through the worker: an access token on the API, a cookie on a dashboard page. */
function through(s: Session, need: "any" | "admin" | "full") {
  if (s.pair) return call({ any: "/v1/whoami", admin: "/v1/users", full: "/v1/api-keys" }[need], { key: s.pair.access_token });
  return page({ any: "/dashboard/keys", admin: "/dashboard/users", full: "/dashboard/keys" }[need], { cookie: s.cookie as string });
}

/** Expects the worker to refuse the session: 401 session_ended (a cookie: back to the login page), or the 403 `code`. */
async function expectRefused(s: Session, need: "any" | "admin" | "full", code: string) {
  const res = await through(s, need);
  if (code !== "session_ended") {
    if (s.pair) await expectProblem(res, 403, code);
    else expect(res.status).toBe(403);
    return;
  }
  if (s.pair) await expectProblem(res, 401, "session_ended");
  else expect({ status: res.status, location: res.headers.get("Location") }).toEqual({ status: 303, location: "/dashboard/login" });
}

type Change = {
  what: string;
  role: "admin" | "member";
  /** What the route needs that the change takes away, and the refusal it then gets. */
  need: "any" | "admin" | "full";
  code: string;
  make: (s: Session) => Promise<void>;
};

const changes: Change[] = [
  {
    what: "logging out",
    role: "member",
    need: "any",
    code: "session_ended",
    make: async (s) => {
      if (s.pair) expect((await call("/v1/auth/logout", { method: "POST", key: s.pair.access_token })).status).toBe(204);
      else expect((await page("/dashboard/logout", { cookie: s.cookie as string, form: {} })).status).toBe(303);
    },
  },
  {
    what: "ending the session",
    role: "member",
    need: "any",
    code: "session_ended",
    make: async (s) => {
      expect((await call(`/v1/auth/sessions/${s.sessionId}`, { method: "DELETE", key: s.other.access_token })).status).toBe(204);
    },
  },
  {
    what: "a password change (from another session)",
    role: "member",
    need: "any",
    code: "session_ended",
    make: async (s) => {
      const body = { currentPassword: PASSWORD, newPassword: "a brand new password" };
      expect((await call("/v1/auth/password", { key: s.other.access_token, body })).status).toBe(204);
    },
  },
  {
    what: "disabling the user",
    role: "member",
    need: "any",
    code: "session_ended",
    make: async (s) => {
      const res = await call(`/v1/users/${s.user.id}`, { method: "PATCH", key: s.key.key, body: { disabled: true } });
      expect(res.status).toBe(200);
    },
  },
  {
    what: "demoting the user",
    role: "admin",
    need: "admin",
    code: "insufficient_role",
    make: async (s) => {
      const res = await call(`/v1/users/${s.user.id}`, { method: "PATCH", key: s.key.key, body: { role: "member" } });
      expect(res.status).toBe(200);
    },
  },
  {
    what: "narrowing the user's grants",
    role: "member",
    need: "full",
    code: "insufficient_scope",
    make: async (s) => {
      const res = await call(`/v1/users/${s.user.id}`, { method: "PATCH", key: s.key.key, body: { grants: ["mailbox:mbx_1"] } });
      expect(res.status).toBe(200);
    },
  },
];

describe("a person's session, hot in isolates", () => {
  for (const kind of ["token", "cookie"] as const)
    for (const change of changes)
      it(`${kind}: ${change.what} is refused from the object at once, in this isolate at once, everywhere within 1 second`, async () => {
        const s = await session(kind, change.role);
        // This isolate (the worker's own) and another both hold a lease of the session.
        const clock = { now: Date.now() };
        const other = new Holdings(() => clock.now);
        const name = await hot(s, other);
        await hot(s);
        expect(holdings.available(name)).toBeGreaterThan(0);
        expect((await through(s, change.need)).status).toBe(200);

        await change.make(s);
        expect(await fromObject(s, change.need)).toBe(change.code);
        await expectRefused(s, change.need, change.code);
        expect(await judged(s.claim, change.need)).toBe(change.code);
        // The other isolate may spend the lease it holds until it ends, a second after it asked at most; never after.
        clock.now += 1000;
        expect(await judged(s.claim, change.need, other)).toBe(change.code);
      });

  it("token: a refresh token's reuse ends a hot session at once here and within 1 second everywhere, and tells the account", async () => {
    const s = await session("token", "member");
    const pair = s.pair as Pair;
    const clock = { now: Date.now() };
    const other = new Holdings(() => clock.now);
    await hot(s, other);
    await hot(s);
    // Refreshed twice: the first refresh token is older than the one just replaced, so presenting it is reuse.
    const second = await (await call("/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } })).json<Pair>();
    expect((await call("/v1/auth/refresh", { body: { refresh_token: second.refresh_token } })).status).toBe(200);
    await expectProblem(await call("/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } }), 401, "invalid_refresh_token");
    await expectProblem(await call("/v1/whoami", { key: pair.access_token }), 401, "session_ended");
    clock.now += 1000;
    expect(await judged(s.claim, "any", other)).toBe("session_ended");
    const told = await rows<{ data: string }>(
      "SELECT data FROM webhook_events WHERE account_id = ? AND type = 'session.reuse_detected'",
      s.account.id,
    );
    expect(told.map((e) => JSON.parse(e.data))).toEqual([{ sessionId: s.sessionId, userId: s.user.id }]);
  });
});

describe("a person's request and D1", () => {
  it("reads nothing from D1 once the object knows the session: admitted with D1 down, and refused after a logout", async () => {
    const s = await session("token", "member");
    const pair = s.pair as Pair;
    expect((await call("/v1/whoami", { key: pair.access_token })).status).toBe(200);
    // Every D1 statement fails: the worker's and the person's object's own handle (which keeps what it knows).
    const down = { DB: faultyDatabase(env.DB, { kind: "throw" }) };
    const undo = await objectDatabase(
      env.ACCOUNTS.getByName(`user:${s.user.id}`),
      () => faultyDatabase(env.DB, { kind: "throw" }, () => true),
      { keep: true },
    );
    try {
      for (let i = 0; i < 3; i++) expect((await callWith(down, "/v1/whoami", { key: pair.access_token })).status).toBe(200);
      expect(await fromObject(s, "any")).toBe("admitted");
      // Logged out with D1 up for the worker: the object is told which session ended, and needs no read to refuse it.
      expect((await call("/v1/auth/logout", { method: "POST", key: pair.access_token })).status).toBe(204);
      expect(await fromObject(s, "any")).toBe("session_ended");
      await expectProblem(await callWith(down, "/v1/whoami", { key: pair.access_token }), 401, "session_ended");
    } finally {
      await undo();
    }
  });

  it("a password change, then disabling, tell the object which sessions they ended: refused with no read, D1 down", async () => {
    const s = await session("token", "member");
    const [b, c] = [await tokens(s.user.email), await tokens(s.user.email)];
    const claim = (p: Pair) => ({ ...s.claim, sessionId: p.refresh_token.split(".")[0] as string });
    const stub = env.ACCOUNTS.getByName(`user:${s.user.id}`);
    const asked = async (p: Pair) => {
      const tag = { id: crypto.randomUUID(), deadline: Date.now() + 10_000 };
      const answer = await stub.admitSession({ ...claim(p), need: "any", tag, cost: 0 });
      return answer.ok ? "admitted" : "code" in answer ? answer.code : answer.refusal;
    };
    // The session that changes the password is known to the object; the ones it ends need not be.
    expect((await call("/v1/whoami", { key: s.other.access_token })).status).toBe(200);
    const undo = await objectDatabase(stub, () => faultyDatabase(env.DB, { kind: "throw" }), { keep: true });
    try {
      const body = { currentPassword: PASSWORD, newPassword: "a brand new password" };
      expect((await call("/v1/auth/password", { key: s.other.access_token, body })).status).toBe(204);
      expect(await asked(b)).toBe("session_ended");
      expect(await asked(c)).toBe("session_ended");
      const disabled = await call(`/v1/users/${s.user.id}`, { method: "PATCH", key: s.key.key, body: { disabled: true } });
      expect(disabled.status).toBe(200);
      expect(await asked(s.other)).toBe("session_ended");
    } finally {
      await undo();
    }
  });

  it("once restarted, reads from a copy of D1 caught up with the last change told to it, or the primary while one may land", async () => {
    const s = await session("token", "member");
    const stub = env.ACCOUNTS.getByName(`user:${s.user.id}`);
    const restarted = async () => {
      await evictDurableObject(stub);
      const { asked, restore } = await objectSessions(stub);
      expect(await fromObject(s, "any")).toBe("admitted");
      await restore();
      return asked;
    };
    // A change told with its bookmark: a copy caught up with it, even after a restart.
    const bookmark = "0000000b-00000002-00000000-0123456789abcdef0123456789abcdef";
    await stub.changed([], bookmark);
    expect(new Set(await restarted())).toEqual(new Set([bookmark]));
    // A change of unknown outcome (its write may still land, after any bookmark): the primary, even after a restart.
    await stub.distrust(30_000);
    expect(new Set(await restarted())).toEqual(new Set(["first-primary"]));
  });

  it("sends a session's last use at most once a minute, from the object through the usage queue, to D1", async () => {
    const s = await session("token", "member");
    const pair = s.pair as Pair;
    const lastUsed = async () => (await rows<{ last_used_at: string }>("SELECT last_used_at FROM sessions WHERE id = ?", s.sessionId))[0];
    const before = await lastUsed();
    for (let i = 0; i < 5; i++) expect((await call("/v1/whoami", { key: pair.access_token })).status).toBe(200);
    expect(await lastUsed()).toEqual(before);
    // A minute later (the object's clock), the next request sends it once; the consumer writes it in its batch.
    const stub = env.ACCOUNTS.getByName(`user:${s.user.id}`);
    const at = (ms: number) =>
      runInDurableObject(stub, (instance) => {
        instance.clock = () => ms;
      });
    const later = Date.now() + 61_000;
    await at(later);
    try {
      expect(await fromObject(s, "any")).toBe("admitted");
      await expect.poll(lastUsed, { timeout: 10_000 }).toEqual({ last_used_at: new Date(later).toISOString() });
      // The queue down: nothing is written; the object keeps the use and sends it once the queue is back.
      let own: Queue | undefined;
      await runInDurableObject(stub, (instance) => {
        own = instance.usageQueue;
        instance.usageQueue = faultyQueue(env.USAGE, { kind: "throw", error: new Error("Queue send failed: internal error") });
      });
      const muchLater = later + 61_000;
      await at(muchLater);
      expect(await fromObject(s, "any")).toBe("admitted");
      await new Promise((r) => setTimeout(r, 500));
      expect(await lastUsed()).toEqual({ last_used_at: new Date(later).toISOString() });
      await runInDurableObject(stub, (instance) => {
        instance.usageQueue = own as Queue;
      });
      await expect.poll(lastUsed, { timeout: 10_000 }).toEqual({ last_used_at: new Date(muchLater).toISOString() });
    } finally {
      await runInDurableObject(stub, (instance) => {
        instance.clock = Date.now;
      });
    }
  });
});

describe("a change to a person's account", () => {
  it("reaches their sessions' objects: a new default limit is the next request's, though the object knew the session", async () => {
    const s = await session("token", "member");
    const pair = s.pair as Pair;
    const before = await call("/v1/whoami", { key: pair.access_token });
    expect(before.headers.get("X-RateLimit-Limit")).toBe("100000");
    // Told after the answer (a limit is not a right): callWith waits for that work, as the runtime does.
    const res = await callWith({}, "/v1/account", {
      method: "PATCH",
      key: s.key.key,
      body: { rateLimit: { limit: 500, windowSeconds: 60 } },
    });
    expect(res.status).toBe(200);
    const after = await call("/v1/whoami", { key: pair.access_token });
    expect(after.headers.get("X-RateLimit-Limit")).toBe("500");
    expect(await after.json()).toMatchObject({ rateLimit: { limit: 500, windowSeconds: 60 } });
  });
});

describe("a person's object that is down", () => {
  it("answers 503 in closed mode; open, judges the session in D1 and admits unlimited, refusing an ended one", async () => {
    const s = await session("token", "member");
    const pair = s.pair as Pair;
    const down = { ACCOUNTS: faultyObjects(env.ACCOUNTS, { admitSession: { kind: "throw" } }), RATE_LIMIT_TIMEOUT_MS: "100" };
    await expectProblem(await callWith(down, "/v1/whoami", { key: pair.access_token }), 503, "rate_limiter_unavailable");
    const open = { ...down, RATE_LIMIT_FAILURE_MODE: "open" };
    const admitted = await callWith(open, "/v1/whoami", { key: pair.access_token });
    expect(admitted.status).toBe(200);
    expect(admitted.headers.get("X-RateLimit-Status")).toBe("unavailable");
    expect(await admitted.json()).toMatchObject({ userId: s.user.id, keyId: null });
    expect((await call("/v1/auth/logout", { method: "POST", key: pair.access_token })).status).toBe(204);
    await expectProblem(await callWith(open, "/v1/whoami", { key: pair.access_token }), 401, "session_ended");
  });
});

describe("a change to a person whose object cannot be told", () => {
  it("a logout answers 503 change_pending, is stored, and is in force everywhere within the bound", async () => {
    const s = await session("token", "member");
    const pair = s.pair as Pair;
    expect((await call("/v1/whoami", { key: pair.access_token })).status).toBe(200);
    const broken = { ACCOUNTS: faultyObjects(env.ACCOUNTS, { changed: { kind: "throw" } }), RATE_LIMIT_TIMEOUT_MS: "100" };
    await expectProblem(await callWith(broken, "/v1/auth/logout", { method: "POST", key: pair.access_token }), 503, "change_pending");
    const answered = Date.now();
    expect(broken.ACCOUNTS.calls("changed")).toBeGreaterThan(0);
    expect(await rows("SELECT end_reason FROM sessions WHERE id = ?", s.sessionId)).toEqual([{ end_reason: "logout" }]);
    // Another isolate, and the one that answered: each asks the object, which was told to read again.
    expect(await judged(s.claim, "any", new Holdings())).toBe("session_ended");
    await expectProblem(await call("/v1/whoami", { key: pair.access_token }), 401, "session_ended");
    expect(Date.now() - answered).toBeLessThan(CHANGE_IN_FORCE_MS);
  });

  it("disabling a user whose object stalls answers 503, and a repeat puts it in force", async () => {
    const s = await session("token", "member");
    const pair = s.pair as Pair;
    expect((await call("/v1/whoami", { key: pair.access_token })).status).toBe(200);
    const broken = { ACCOUNTS: faultyObjects(env.ACCOUNTS, { changed: { kind: "stall" } }), RATE_LIMIT_TIMEOUT_MS: "100" };
    const disable = (bindings: Partial<Cloudflare.Env>) =>
      callWith(bindings, `/v1/users/${s.user.id}`, { method: "PATCH", key: s.key.key, body: { disabled: true } });
    await expectProblem(await disable(broken), 503, "change_pending");
    expect(await rows("SELECT disabled FROM users WHERE id = ?", s.user.id)).toEqual([{ disabled: 1 }]);
    expect((await disable({})).status).toBe(200);
    expect(await fromObject(s, "any")).toBe("session_ended");
    await expectProblem(await call("/v1/whoami", { key: pair.access_token }), 401, "session_ended");
  });
});
