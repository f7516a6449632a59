import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { holdings } from "../../src/counters/held";
import { faultyDatabase, faultyObjects } from "../faults";
import { call, callWith, createAgent, createKey, createUser, expectProblem, memberWithKey, provision, rows } from "../helpers";

const patch = (key: string, id: string, body: unknown) => call(`/v1/users/${id}`, { method: "PATCH", key, body });

describe("/v1/users", () => {
  it("creates, lists and reads users of the account", async () => {
    const { account, admin, key } = await provision();
    const res = await call("/v1/users", { key: key.key, body: { email: "Dev@Example.com", role: "member" } });
    expect(res.status).toBe(201);
    expect(res.headers.get("Cache-Control")).toBe("no-store");
    const { invitation, ...user } = await res.json<{ id: string; invitation: { token: string; url: string; expiresAt: string } }>();
    expect(user).toEqual({
      id: expect.stringMatching(/^usr_/),
      email: "dev@example.com",
      role: "member",
      disabled: false,
      grants: ["*"],
      createdAt: expect.any(String),
    });
    // The invitation is shown this once: only its hash is stored, and no view shows it again.
    expect(invitation.url).toBe(`https://keygate.test/dashboard/accept-invitation#token=${invitation.token}`);
    expect(Date.parse(invitation.expiresAt) - Date.now()).toBeGreaterThan(6.9 * 86_400_000);
    expect(JSON.stringify(await rows("SELECT * FROM invitations WHERE user_id = ?", user.id))).not.toContain(invitation.token);
    const list = await (await call("/v1/users", { key: key.key })).json<{ data: { id: string }[]; nextCursor: null }>();
    expect(list.data.map((u) => u.id)).toEqual([user.id, admin.id]);
    expect(list.nextCursor).toBeNull();
    expect(await (await call(`/v1/users/${user.id}`, { key: key.key })).json()).toEqual(user);
    expect(
      await rows("SELECT actor FROM audit_events WHERE account_id = ? AND action = 'user.created' AND target = ?", account.id, user.id),
    ).toEqual([{ actor: admin.id }]);
  });

  it("refuses a taken email without writing anything", async () => {
    const { account, key } = await provision();
    await call("/v1/users", { key: key.key, body: { email: "x@example.com", role: "member" } });
    const before = await rows("SELECT id FROM audit_events WHERE account_id = ?", account.id);
    await expectProblem(await call("/v1/users", { key: key.key, body: { email: "X@example.com", role: "admin" } }), 409, "email_taken");
    expect(await rows("SELECT id FROM users WHERE account_id = ? AND email = 'x@example.com'", account.id)).toHaveLength(1);
    expect(await rows("SELECT id FROM audit_events WHERE account_id = ?", account.id)).toEqual(before);
    // The same email in another account is another user.
    const other = await provision();
    expect((await call("/v1/users", { key: other.key.key, body: { email: "x@example.com", role: "member" } })).status).toBe(201);
  });

  it("lists every invalid field", async () => {
    const { key } = await provision();
    const problem = await expectProblem(
      await call("/v1/users", { key: key.key, body: { email: "no-at-sign", role: "owner", admin: true } }),
      400,
      "invalid_request",
    );
    expect((problem.errors as { field: string }[]).map((e) => e.field)).toEqual(["email", "role", "admin"]);
    await expectProblem(await patch(key.key, "usr_x", { disabled: "yes" }), 400, "invalid_request");
  });

  it("a member's rights follow their role at once: promoted, demoted, disabled", async () => {
    const { key } = await provision();
    const member = await memberWithKey(key.key);
    await expectProblem(await call("/v1/users", { key: member.key.key }), 403, "insufficient_role");

    expect(await (await patch(key.key, member.user.id, { role: "admin" })).json()).toMatchObject({ role: "admin" });
    expect((await call("/v1/users", { key: member.key.key })).status).toBe(200);

    await patch(key.key, member.user.id, { role: "member" });
    await expectProblem(await call("/v1/users", { key: member.key.key }), 403, "insufficient_role");

    expect(await (await patch(key.key, member.user.id, { disabled: true })).json()).toMatchObject({ disabled: true });
    const refused = await call("/v1/whoami", { key: member.key.key });
    await expectProblem(refused, 401, "key_owner_disabled");
    expect(refused.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');

    await patch(key.key, member.user.id, { disabled: false });
    expect((await call("/v1/whoami", { key: member.key.key })).status).toBe(200);
  });

  it("never leaves the account without an enabled admin", async () => {
    const { account, admin, key } = await provision();
    await expectProblem(await patch(key.key, admin.id, { role: "member" }), 409, "last_admin");
    await expectProblem(await patch(key.key, admin.id, { disabled: true }), 409, "last_admin");
    expect(await rows("SELECT role, disabled FROM users WHERE id = ?", admin.id)).toEqual([{ role: "admin", disabled: 0 }]);
    expect(await rows("SELECT id FROM audit_events WHERE account_id = ? AND action = 'user.updated'", account.id)).toEqual([]);

    const second = await createUser(key.key, "admin");
    const secondKey = await createKey(key.key, { ownerId: second.id });
    // Both admins demote each other at the same moment: one of them must remain.
    const results = await Promise.all([patch(key.key, second.id, { role: "member" }), patch(secondKey.key, admin.id, { role: "member" })]);
    // The loser is refused by the guard (409) or, if the winner demoted it first, for lack of the admin role (403).
    const [won, lost] = results.map((r) => r.status).sort();
    expect(won).toBe(200);
    expect([403, 409]).toContain(lost);
    expect(await rows("SELECT id FROM users WHERE account_id = ? AND role = 'admin'", account.id)).toHaveLength(1);
    expect(await rows("SELECT id FROM audit_events WHERE account_id = ? AND action = 'user.updated'", account.id)).toHaveLength(1);
  });

  it("never undoes one concurrent edit with another: disabling and promoting at once both land", async () => {
    const { account, key } = await provision();
    for (let trial = 0; trial < 10; trial++) {
      const member = await memberWithKey(key.key);
      const results = await Promise.all([
        patch(key.key, member.user.id, { disabled: true }),
        patch(key.key, member.user.id, { role: "admin" }),
      ]);
      expect(results.map((r) => r.status)).toEqual([200, 200]);
      expect(await rows("SELECT role, disabled FROM users WHERE id = ?", member.user.id)).toEqual([{ role: "admin", disabled: 1 }]);
      await expectProblem(await call("/v1/whoami", { key: member.key.key }), 401, "key_owner_disabled");
    }
    expect(await rows("SELECT count(*) AS n FROM audit_events WHERE account_id = ? AND action = 'user.updated'", account.id)).toEqual([
      { n: 20 },
    ]);
  });

  it("refuses to disable or demote the owner of the account's last lasting key", async () => {
    const { admin, key } = await provision();
    // A second enabled admin without a key of their own: the account would keep an admin but lose its way in.
    const other = await createUser(key.key, "admin");
    for (const body of [{ disabled: true }, { role: "member" }]) {
      await expectProblem(await patch(key.key, admin.id, body), 409, "last_active_key");
    }
    expect(await rows("SELECT role, disabled FROM users WHERE id = ?", admin.id)).toEqual([{ role: "admin", disabled: 0 }]);
    await createKey(key.key, { ownerId: other.id });
    expect((await patch(key.key, admin.id, { role: "member" })).status).toBe(200);
  });

  it("never touches another account's user, even with nothing to change", async () => {
    const { key } = await provision();
    const other = await provision();
    const broken = { KEYS: faultyObjects(env.KEYS, { reload: { kind: "throw" } }) };
    for (const body of [{}, { disabled: true }]) {
      await expectProblem(await callWith(broken, `/v1/users/${other.admin.id}`, { method: "PATCH", key: key.key, body }), 404, "not_found");
    }
    expect(await rows("SELECT disabled FROM users WHERE id = ?", other.admin.id)).toEqual([{ disabled: 0 }]);
  });
});

describe("concurrent changes of one user's rights", () => {
  type Whoami = { role: string; scopes: string[] };
  const whoami = async (key: string) => {
    const res = await call("/v1/whoami", { key });
    expect(res.status).toBe(200);
    return res.json<Whoami>();
  };
  /**
   * PATCH /v1/users/:id whose write reaches D1 `ms` late: the two writes of a race land in either order, and a change
   * that put itself in force before its write landed would be seen.
   */
  const slowPatch = (key: string, id: string, body: unknown, ms: number) =>
    callWith({ DB: faultyDatabase(env.DB, { kind: "late-call", ms }, (sql) => sql.includes('update "users"')) }, `/v1/users/${id}`, {
      method: "PATCH",
      key,
      body,
    });
  /**
   * Settles `changes` while the key keeps making requests, one after another, until they have all answered. A client's
   * requests reach Keygate over a network, so its event loop waits between two of them; here every part of a request
   * runs in one process with no wait, and the runtime fires timers (the slow writes' delays) only while its loop waits:
   * without the pause, a loop of requests that take no timer themselves held those delays back for as long as it ran.
   */
  const besideTheKey = async (key: string, changes: Promise<Response>[]) => {
    let done = false;
    const settled = Promise.all(changes).finally(() => {
      done = true;
    });
    const requests = (async () => {
      while (!done) {
        expect((await call("/v1/whoami", { key })).status).toBe(200);
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    })();
    await requests;
    return settled;
  };
  const LATE = [0, 40, 10, 25, 5];
  // Enough budget for every change and request of every trial in one minute.
  const roomy = { rateLimit: { limit: 1000, windowSeconds: 60 } };

  it("two grant changes at once: the row holds one of them whole, and the user's key is judged by it on its next request", async () => {
    const { account, key } = await provision(roomy);
    const races: [string[], string[]][] = [
      [["project:alpha", "project:beta"], ["mailbox:mbx_1"]],
      [["*"], ["project:alpha"]],
    ];
    for (let trial = 0; trial < 10; trial++) {
      const writes = races[trial % 2] as [string[], string[]];
      const member = await memberWithKey(key.key);
      // A starting point neither write holds, already in the key's object: each write changes the row, and an object
      // that kept what it held would show it.
      expect((await patch(key.key, member.user.id, { grants: ["process:p0"] })).status).toBe(200);
      expect((await whoami(member.key.key)).scopes).toEqual(["process:p0"]);

      // The key's own requests run beside the two writes, so its object reads the user before, between and after them.
      const [a, b] = await besideTheKey(
        member.key.key,
        writes.map((grants, i) => slowPatch(key.key, member.user.id, { grants }, LATE[(trial + i) % LATE.length] as number)),
      );
      expect([a?.status, b?.status]).toEqual([200, 200]);
      const [row] = await rows<{ grants: string }>("SELECT grants FROM users WHERE id = ?", member.user.id);
      const stored = JSON.parse(row?.grants ?? "null") as string[];
      expect(writes).toContainEqual(stored);
      // The later write's answer reads the row after it: it shows what is stored.
      const answered = await Promise.all([a, b].map(async (r) => (await (r as Response).json<{ grants: string[] }>()).grants));
      expect(answered).toContainEqual(stored);

      expect((await whoami(member.key.key)).scopes).toEqual(stored);
      const fullAccess = await call("/v1/api-keys", { key: member.key.key });
      if (stored.includes("*")) expect(fullAccess.status).toBe(200);
      else await expectProblem(fullAccess, 403, "insufficient_scope");
    }
    expect(await rows("SELECT count(*) AS n FROM audit_events WHERE account_id = ? AND action = 'user.updated'", account.id)).toEqual([
      { n: 30 },
    ]);
  });

  it("a grant change racing a role change: both land whole, neither undoes the other, and the key follows both", async () => {
    const { account, key } = await provision(roomy);
    for (let trial = 0; trial < 10; trial++) {
      // Even trials promote a member, odd ones demote an admin, while the same user's grants change.
      const role = trial % 2 === 0 ? "admin" : "member";
      const member = await memberWithKey(key.key);
      expect((await patch(key.key, member.user.id, { grants: ["process:p0"] })).status).toBe(200);
      if (role === "member") expect((await patch(key.key, member.user.id, { role: "admin" })).status).toBe(200);
      expect((await whoami(member.key.key)).role).toBe(role === "admin" ? "member" : "admin");

      const [a, b] = await besideTheKey(member.key.key, [
        slowPatch(key.key, member.user.id, { grants: ["project:alpha"] }, LATE[trial % LATE.length] as number),
        slowPatch(key.key, member.user.id, { role }, LATE[(trial + 1) % LATE.length] as number),
      ]);
      expect([a?.status, b?.status]).toEqual([200, 200]);
      expect(await rows("SELECT role, grants FROM users WHERE id = ?", member.user.id)).toEqual([{ role, grants: '["project:alpha"]' }]);

      const users = await call("/v1/users", { key: member.key.key });
      if (role === "admin") {
        // An admin holds every grant; the stored grants wait for a demotion, and then bound the key at once.
        expect(await whoami(member.key.key)).toMatchObject({ role: "admin", scopes: ["*"] });
        expect(users.status).toBe(200);
        expect((await patch(key.key, member.user.id, { role: "member" })).status).toBe(200);
      } else {
        await expectProblem(users, 403, "insufficient_scope");
      }
      expect(await whoami(member.key.key)).toMatchObject({ role: "member", scopes: ["project:alpha"] });
    }
    expect(await rows("SELECT count(*) AS n FROM audit_events WHERE account_id = ? AND action = 'user.updated'", account.id)).toEqual([
      { n: 40 },
    ]);
  });
});

describe("a grant change while one of the key's requests is in flight", () => {
  // The change drops what this isolate holds of the key; the answer of a call asked before the drop, arriving after it,
  // must not be trusted again with the record the object had before the change.
  it("leaves this isolate nothing of the old grants: the key's next request is judged by the stored ones", async () => {
    const { key } = await provision({ rateLimit: { limit: 1000, windowSeconds: 60 } });
    const member = await memberWithKey(key.key);
    const name = `key:${member.key.id}`;
    // A hot key: this isolate holds a lease of it, under the member's grants as they are (["*"]).
    for (let i = 0; holdings.available(name) === 0; i++) {
      expect((await call("/v1/whoami", { key: member.key.key })).status).toBe(200);
      expect(i).toBeLessThan(100);
    }
    // Its lease spent, the isolate asks the object again; the object's answer (a new lease, under ["*"]) comes back late.
    holdings.drop([name]);
    const late = faultyObjects(env.KEYS, { authorize: { kind: "late-answer", ms: 300 } });
    const inFlight = callWith({ KEYS: late }, "/v1/whoami", { key: member.key.key });
    await late.reached("authorize");
    // Meanwhile the grants change, answered once in force.
    expect((await patch(key.key, member.user.id, { grants: ["project:alpha"] })).status).toBe(200);
    expect((await inFlight).status).toBe(200);
    const next = await call("/v1/whoami", { key: member.key.key });
    expect((await next.json<{ scopes: string[] }>()).scopes).toEqual(["project:alpha"]);
  });
});

describe("paging", () => {
  it("pages users and agents newest first with a cursor, and refuses a cursor it did not write", async () => {
    const { admin, key } = await provision();
    const users = [admin.id];
    for (let i = 0; i < 4; i++) users.unshift((await createUser(key.key, "member")).id);
    const agents: string[] = [];
    for (let i = 0; i < 5; i++) agents.unshift((await createAgent(key.key)).id);
    for (const [path, expected] of [
      ["/v1/users", users],
      ["/v1/agents", agents],
    ] as const) {
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const res = await call(`${path}?limit=2${cursor ? `&cursor=${cursor}` : ""}`, { key: key.key });
        const page = await res.json<{ data: { id: string }[]; nextCursor: string | null }>();
        expect(page.data.length).toBeLessThanOrEqual(2);
        seen.push(...page.data.map((x) => x.id));
        cursor = page.nextCursor;
      } while (cursor);
      expect(seen).toEqual(expected);
      for (const cursor of ["not-a-cursor", "ImFiIg", btoa(JSON.stringify(["x", "y", "z"])), btoa(JSON.stringify([1, 2]))]) {
        const bad = await expectProblem(await call(`${path}?cursor=${cursor}`, { key: key.key }), 400, "invalid_request");
        expect(bad.errors).toEqual([{ field: "cursor", message: "is not a cursor this API returned" }]);
      }
    }
  });
});
