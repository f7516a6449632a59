import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { UNSETTLED_TRUST_MS } from "../src/keys/object";
import { CHANGE_IN_FORCE_MS } from "../src/keys/reload";
import { type Fault, faultyDatabase, faultyObjects } from "./faults";
import { call, callWith, createKey, expectProblem, memberWithKey, provision, rows } from "./helpers";

// A change that removes rights is in force in the key's counter before it is answered, or it answers 503 and a repeat
// completes it. Each fault stands for a counter that cannot be reached: one that throws, and one that never answers.
const unreachable: [string, Fault][] = [
  ["throws", { kind: "throw", error: new Error("Durable Object reset because its code was updated") }],
  ["stalls", { kind: "stall" }],
];
const whoami = (key: string) => call("/v1/whoami", { key });

describe("a change that removes rights, when the key's counter cannot be reached", () => {
  for (const [what, fault] of unreachable) {
    it(`a revocation answers 503 when the counter ${what}, is stored, and a repeat puts it in force`, async () => {
      const { key } = await provision();
      const victim = await createKey(key.key, { name: "leaked" });
      expect((await whoami(victim.key)).status).toBe(200);

      const broken = { KEYS: faultyObjects(env.KEYS, { reload: fault }), RATE_LIMIT_TIMEOUT_MS: "100" };
      const res = await callWith(broken, `/v1/api-keys/${victim.id}`, { method: "DELETE", key: key.key });
      await expectProblem(res, 503, "change_pending");
      expect(res.headers.get("Retry-After")).toBe("1");
      // The counter was asked: a stalled call ends only at the deadline, and a missing deadline fails the test by its
      // own time limit.
      expect(broken.KEYS.calls("reload")).toBeGreaterThan(0);
      expect(await rows("SELECT revoked_by FROM api_keys WHERE id = ?", victim.id)).toEqual([{ revoked_by: expect.any(String) }]);

      const repeat = await call(`/v1/api-keys/${victim.id}`, { method: "DELETE", key: key.key });
      expect(repeat.status).toBe(200);
      expect(await repeat.json()).toMatchObject({ status: "revoked" });
      await expectProblem(await whoami(victim.key), 401, "key_revoked");
    });

    it(`disabling or demoting a user answers 503 when a counter ${what}, and a repeat puts it in force`, async () => {
      const { key } = await provision();
      const member = await memberWithKey(key.key);
      await call(`/v1/users/${member.user.id}`, { method: "PATCH", key: key.key, body: { role: "admin" } });
      expect((await call("/v1/users", { key: member.key.key })).status).toBe(200);

      const broken = { KEYS: faultyObjects(env.KEYS, { reload: fault }), RATE_LIMIT_TIMEOUT_MS: "100" };
      const demote = () => callWith(broken, `/v1/users/${member.user.id}`, { method: "PATCH", key: key.key, body: { role: "member" } });
      await expectProblem(await demote(), 503, "change_pending");
      expect(await rows("SELECT role FROM users WHERE id = ?", member.user.id)).toEqual([{ role: "member" }]);
      const repeat = await call(`/v1/users/${member.user.id}`, { method: "PATCH", key: key.key, body: { role: "member" } });
      expect(await repeat.json()).toMatchObject({ role: "member" });
      await expectProblem(await call("/v1/users", { key: member.key.key }), 403, "insufficient_role");

      const disable = () => callWith(broken, `/v1/users/${member.user.id}`, { method: "PATCH", key: key.key, body: { disabled: true } });
      await expectProblem(await disable(), 503, "change_pending");
      expect((await call(`/v1/users/${member.user.id}`, { method: "PATCH", key: key.key, body: { disabled: true } })).status).toBe(200);
      await expectProblem(await whoami(member.key.key), 401, "key_owner_disabled");
    });

    it(`a rotation whose old key's counter ${what} changes nothing and can be repeated`, async () => {
      const { account, key } = await provision();
      const old = await createKey(key.key, { name: "ci" });
      const broken = { KEYS: faultyObjects(env.KEYS, { reload: fault }), RATE_LIMIT_TIMEOUT_MS: "100" };
      const res = await callWith(broken, `/v1/api-keys/${old.id}/rotate`, { key: key.key, body: {} });
      expect((await expectProblem(res, 503, "change_pending")).detail).toContain("undone");
      // Undone: the old key is untouched and still works; the new one (never shown) is dead and replaces nothing.
      expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", old.id)).toEqual([{ revoked_at: null }]);
      expect(await rows("SELECT id FROM api_keys WHERE rotated_from = ?", old.id)).toEqual([]);
      expect(
        await rows("SELECT count(*) AS n FROM api_keys WHERE account_id = ? AND name = 'ci' AND revoked_at IS NULL", account.id),
      ).toEqual([{ n: 1 }]);
      expect((await whoami(old.key)).status).toBe(200);

      const again = await call(`/v1/api-keys/${old.id}/rotate`, { key: key.key, body: {} });
      expect(again.status).toBe(201);
      await expectProblem(await whoami(old.key), 401, "key_revoked");
      expect((await whoami((await again.json<{ key: string }>()).key)).status).toBe(200);
    });
  }

  it("answers 503 database_unavailable when D1 stalls, within its deadline, and never writes half a change", async () => {
    const { account, key } = await provision();
    const stalled = {
      DB: faultyDatabase(env.DB, { kind: "stall" }, (sql) => sql.includes('insert into "api_keys"')),
      D1_TIMEOUT_MS: "100",
    };
    let stalling = false;
    void stalled.DB.reached().then(() => {
      stalling = true;
    });
    const res = await callWith(stalled, "/v1/api-keys", { key: key.key, body: { name: "slow" } });
    await expectProblem(res, 503, "database_unavailable");
    expect(res.headers.get("Retry-After")).toBe("5");
    // The insert was sent and never answered: only the deadline ended the request (a missing one fails the test by its
    // own time limit).
    expect(stalling).toBe(true);
    expect(await rows("SELECT id FROM api_keys WHERE account_id = ? AND name = 'slow'", account.id)).toEqual([]);
  });

  it("a rotation whose D1 batch lands after the deadline is undone: nothing lost, and it can be repeated", async () => {
    const { account, key } = await provision();
    const old = await createKey(key.key, { name: "ci" });
    const late = faultyDatabase(
      env.DB,
      { kind: "late-answer", ms: 300 },
      (sql) => sql.includes('insert into "api_keys"') && sql.includes('update "api_keys"'),
    );
    await expectProblem(
      await callWith({ DB: late, D1_TIMEOUT_MS: "100" }, `/v1/api-keys/${old.id}/rotate`, { key: key.key, body: {} }),
      503,
      "database_unavailable",
    );
    expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", old.id)).toEqual([{ revoked_at: null }]);
    expect(
      await rows("SELECT count(*) AS n FROM api_keys WHERE account_id = ? AND name = 'ci' AND revoked_at IS NULL", account.id),
    ).toEqual([{ n: 1 }]);
    expect((await whoami(old.key)).status).toBe(200);
    const again = await call(`/v1/api-keys/${old.id}/rotate`, { key: key.key, body: {} });
    expect(again.status).toBe(201);
    expect((await whoami((await again.json<{ key: string }>()).key)).status).toBe(200);
  });

  it("a rotation that cannot be put in force never takes the account's last key with it", async () => {
    const { account, key } = await provision();
    // The only lasting key is rotated with a grace period while its counter stalls; meanwhile the old key is revoked.
    const stalled = { KEYS: faultyObjects(env.KEYS, { reload: { kind: "stall" } }), RATE_LIMIT_TIMEOUT_MS: "500" };
    const rotating = callWith(stalled, `/v1/api-keys/${key.id}/rotate`, { key: key.key, body: { gracePeriodSeconds: 3600 } });
    await stalled.KEYS.reached("reload");
    expect((await call(`/v1/api-keys/${key.id}`, { method: "DELETE", key: key.key })).status).toBe(200);
    const rotated = await rotating;
    // The old key is gone for good, so the rotation stands and its new key is handed over.
    expect(rotated.status).toBe(201);
    const fresh = await rotated.json<{ key: string; id: string }>();
    expect((await whoami(fresh.key)).status).toBe(200);
    expect(await rows("SELECT id FROM api_keys WHERE account_id = ? AND revoked_at IS NULL", account.id)).toEqual([{ id: fresh.id }]);
  });

  it("after an undone rotation the old key works at once, even if its counter heard of the rotation late", async () => {
    const { key } = await provision();
    const old = await createKey(key.key, { name: "ci" });
    const slow = {
      KEYS: faultyObjects(env.KEYS, { reload: { kind: "late-answer", ms: 300 } }),
      RATE_LIMIT_TIMEOUT_MS: "100",
    };
    const rotating = callWith(slow, `/v1/api-keys/${old.id}/rotate`, { key: key.key, body: {} });
    await slow.KEYS.reached("reload");
    await whoami(old.key);
    await expectProblem(await rotating, 503, "change_pending");
    expect((await whoami(old.key)).status).toBe(200);
  });

  it("gives the caller's request back when the change answers 503", async () => {
    const { key } = await provision();
    const caller = await createKey(key.key, { name: "caller", rateLimit: { limit: 5, windowSeconds: 60 } });
    const victim = await createKey(key.key, { name: "victim" });
    const broken = { KEYS: faultyObjects(env.KEYS, { reload: { kind: "throw" } }) };
    await expectProblem(await callWith(broken, `/v1/api-keys/${victim.id}`, { method: "DELETE", key: caller.key }), 503, "change_pending");
    expect((await whoami(caller.key)).headers.get("X-RateLimit-Remaining")).toBe("4");
  });
});

// Nothing depends on the client repeating a change answered 503: the isolate that answered keeps trying in the
// background, and the key's object trusts its record only briefly while a write may still land.
describe("a change answered 503 and never repeated", () => {
  /** Polls `check` until it holds; answers how long that took, failing past `within` ms. */
  async function inForceWithin(within: number, check: () => Promise<boolean>): Promise<number> {
    const started = Date.now();
    while (!(await check())) {
      expect(Date.now() - started, "still not in force").toBeLessThan(within);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return Date.now() - started;
  }
  const refused = (key: string, code: string) => async () => {
    const res = await whoami(key);
    // Still admitted, or over its limit (only a key that is still accepted gets that far).
    if (res.status === 200 || res.status === 429) return false;
    await expectProblem(res, 401, code);
    return true;
  };

  it("a revocation whose reload never reaches the object is in force everywhere within the bound", async () => {
    const { key } = await provision();
    const victim = await createKey(key.key, { name: "leaked" });
    expect((await whoami(victim.key)).status).toBe(200);
    const broken = { KEYS: faultyObjects(env.KEYS, { reload: { kind: "throw" } }), RATE_LIMIT_TIMEOUT_MS: "100" };
    await expectProblem(await callWith(broken, `/v1/api-keys/${victim.id}`, { method: "DELETE", key: key.key }), 503, "change_pending");
    const answered = Date.now();
    await inForceWithin(CHANGE_IN_FORCE_MS, refused(victim.key, "key_revoked"));
    // In the isolate that answered too, through the same broken binding.
    await expectProblem(await callWith(broken, "/v1/whoami", { key: victim.key }), 401, "key_revoked");
    expect(Date.now() - answered).toBeLessThan(CHANGE_IN_FORCE_MS);
  });

  it("disabling a user whose keys' objects miss the reload is in force everywhere within the bound", async () => {
    const { key } = await provision();
    const member = await memberWithKey(key.key);
    expect((await whoami(member.key.key)).status).toBe(200);
    const broken = { KEYS: faultyObjects(env.KEYS, { reload: { kind: "stall" } }), RATE_LIMIT_TIMEOUT_MS: "100" };
    const res = await callWith(broken, `/v1/users/${member.user.id}`, { method: "PATCH", key: key.key, body: { disabled: true } });
    await expectProblem(res, 503, "change_pending");
    await inForceWithin(CHANGE_IN_FORCE_MS, refused(member.key.key, "key_owner_disabled"));
  });

  it("when nothing reaches the object from the isolate that answered, that isolate still refuses the key", async () => {
    const { key } = await provision();
    const victim = await createKey(key.key, { name: "leaked" });
    expect((await whoami(victim.key)).status).toBe(200);
    const cut = { KEYS: faultyObjects(env.KEYS, { reload: { kind: "throw" }, distrust: { kind: "throw" } }), RATE_LIMIT_TIMEOUT_MS: "100" };
    await expectProblem(await callWith(cut, `/v1/api-keys/${victim.id}`, { method: "DELETE", key: key.key }), 503, "change_pending");
    // Its next request for the key reloads it first; that fails too, so the key is judged as when its object is down.
    await expectProblem(await callWith(cut, "/v1/whoami", { key: victim.key }), 503, "rate_limiter_unavailable");
    const open = { ...cut, RATE_LIMIT_FAILURE_MODE: "open" };
    await expectProblem(await callWith(open, "/v1/whoami", { key: victim.key }), 401, "key_revoked");
  });

  it("a revocation whose D1 write landed but answered late is in force everywhere within the bound", async () => {
    const { key } = await provision();
    const victim = await createKey(key.key, { name: "leaked" });
    expect((await whoami(victim.key)).status).toBe(200);
    const late = faultyDatabase(env.DB, { kind: "late-answer", ms: 300 }, (sql) => sql.includes('update "api_keys"'));
    const res = await callWith({ DB: late, D1_TIMEOUT_MS: "100" }, `/v1/api-keys/${victim.id}`, { method: "DELETE", key: key.key });
    await expectProblem(res, 503, "database_unavailable");
    await inForceWithin(CHANGE_IN_FORCE_MS, refused(victim.key, "key_revoked"));
  });

  it("a disable whose D1 write landed but answered late is in force everywhere within the bound", async () => {
    const { key } = await provision();
    const member = await memberWithKey(key.key);
    expect((await whoami(member.key.key)).status).toBe(200);
    const late = faultyDatabase(env.DB, { kind: "late-answer", ms: 300 }, (sql) => sql.includes('update "users"'));
    const res = await callWith({ DB: late, D1_TIMEOUT_MS: "100" }, `/v1/users/${member.user.id}`, {
      method: "PATCH",
      key: key.key,
      body: { disabled: true },
    });
    await expectProblem(res, 503, "database_unavailable");
    await inForceWithin(CHANGE_IN_FORCE_MS, refused(member.key.key, "key_owner_disabled"));
  });

  it("a revocation that lands in D1 after its answer is in force within the short trust of its landing", async () => {
    const { key } = await provision();
    const victim = await createKey(key.key, { name: "leaked" });
    expect((await whoami(victim.key)).status).toBe(200);
    const late = faultyDatabase(env.DB, { kind: "late-call", ms: 1_000 }, (sql) => sql.includes('update "api_keys"'));
    const res = await callWith({ DB: late, D1_TIMEOUT_MS: "100" }, `/v1/api-keys/${victim.id}`, { method: "DELETE", key: key.key });
    await expectProblem(res, 503, "database_unavailable");
    // The objects heard of it before it landed, and read what is stored again at least every UNSETTLED_TRUST_MS.
    const landing = async () => {
      // Meanwhile the key is used: its object reads the row as it is before the write lands.
      await whoami(victim.key);
      return (await rows<{ r: string | null }>("SELECT revoked_at AS r FROM api_keys WHERE id = ?", victim.id))[0]?.r != null;
    };
    await inForceWithin(CHANGE_IN_FORCE_MS, landing);
    await inForceWithin(UNSETTLED_TRUST_MS + 500, refused(victim.key, "key_revoked"));
  });
});
