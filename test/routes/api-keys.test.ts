import { describe, expect, it } from "vitest";
import { call, createKey, createUser, expectProblem, expire, type KeyBody, memberWithKey, provision, rows, setKeyColumn } from "../helpers";
import { lastUseSent } from "../usage/seed";

const revoke = (key: string, id: string) => call(`/v1/api-keys/${id}`, { method: "DELETE", key });
const rotate = (key: string, id: string, body: unknown = {}) => call(`/v1/api-keys/${id}/rotate`, { key, body });
const whoami = (key: string) => call("/v1/whoami", { key });

/** Every text value stored in D1, to prove what is not there. */
async function everythingStored(): Promise<string> {
  const tables = await rows<{ name: string }>(
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%'",
  );
  const dumps = await Promise.all(tables.map((t) => rows(`SELECT * FROM "${t.name}"`)));
  return JSON.stringify(dumps);
}

describe("POST /v1/api-keys", () => {
  it("creates a full-access key by default and shows it once", async () => {
    const { account, admin, key } = await provision({ keyPrefix: "rbtk" });
    const res = await call("/v1/api-keys", { key: key.key, body: { name: "CI pipeline" } });
    expect(res.status).toBe(201);
    expect(res.headers.get("Cache-Control")).toBe("no-store");
    const body = await res.json<KeyBody>();
    expect(Object.keys(body).sort()).toEqual(
      [
        "allowedIps",
        "createdAt",
        "createdBy",
        "credits",
        "expiresAt",
        "externalId",
        "id",
        "key",
        "lastAuthMethod",
        "lastUsedAt",
        "leakedAt",
        "meta",
        "name",
        "ownerId",
        "prefix",
        "revokedAt",
        "revokedBy",
        "rateLimit",
        "rateLimits",
        "rotatedFrom",
        "scopes",
        "start",
        "status",
      ].sort(),
    );
    expect(body).toMatchObject({
      name: "CI pipeline",
      // A new account's keys are checksummed: the prefix shown is everything before the random part.
      prefix: "kg_rbtk",
      scopes: ["*"],
      status: "active",
      ownerId: admin.id,
      createdBy: admin.id,
      expiresAt: null,
      lastUsedAt: null,
      credits: null,
    });
    expect(body.key).toMatch(/^kg_rbtk_[0-9A-Za-z]{49}$/);
    expect(body.start).toBe(body.key.slice(8, 16));
    expect((await whoami(body.key)).status).toBe(200);
    const [stored] = await rows<{ hash: string; account_id: string }>("SELECT hash, account_id FROM api_keys WHERE id = ?", body.id);
    expect(stored?.account_id).toBe(account.id);
    expect(stored?.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(stored?.hash).not.toContain(body.key.slice(8));
    expect(await rows("SELECT action FROM audit_events WHERE target = ?", body.id)).toEqual([{ action: "key.created" }]);
  });

  it("accepts Robotomail's documented request for a mailbox-scoped key", async () => {
    const { key } = await provision({ keyPrefix: "rm" });
    const scoped = await createKey(key.key, { name: "agent-inbox", mailboxIds: ["mbx_8a1c", "mbx_77"] });
    expect(scoped.scopes).toEqual(["mailbox:mbx_8a1c", "mailbox:mbx_77"]);
    expect(await (await whoami(scoped.key)).json()).toMatchObject({ scopes: ["mailbox:mbx_8a1c", "mailbox:mbx_77"] });
  });

  it("accepts grants in scopes and per-type id lists together", async () => {
    const { key } = await provision();
    const scoped = await createKey(key.key, { scopes: ["process:4de713a3"], projectIds: ["warehouse"] });
    expect(scoped.scopes).toEqual(["process:4de713a3", "project:warehouse"]);
  });

  it("refuses invalid fields without writing anything", async () => {
    const { account, key } = await provision();
    const before = await rows("SELECT id FROM api_keys WHERE account_id = ?", account.id);
    const cases: [unknown, string[]][] = [
      [{}, ["name"]],
      [{ name: "x".repeat(101) }, ["name"]],
      [{ name: "x", mailboxId: "mbx_1" }, ["mailboxId"]],
      [{ name: "x", scopes: ["*", "mailbox:mbx_1"] }, ["scopes"]],
      [{ name: "x", scopes: ["*"], mailboxIds: ["mbx_1"] }, ["scopes"]],
      [{ name: "x", scopes: ["invoice:1"] }, ["scopes[0]"]],
      [{ name: "x", scopes: [] }, ["scopes"]],
      [{ name: "x", scopes: "*" }, ["scopes"]],
      [{ name: "x", mailboxIds: ["has space"] }, ["mailboxIds[0]"]],
      [{ name: "x", expiresAt: "2020-01-01T00:00:00Z" }, ["expiresAt"]],
      [{ name: "x", expiresAt: "tomorrow" }, ["expiresAt"]],
      [{ name: "x", expiresAt: "2099-01-01" }, ["expiresAt"]],
      [{ name: "x", expiresAt: "2027-02-30T00:00:00Z" }, ["expiresAt"]],
      [{ name: "x", expiresAt: "2027-04-31T00:00:00Z" }, ["expiresAt"]],
      [{ name: "x", expiresAt: "2027-01-01T24:00:00Z" }, ["expiresAt"]],
      [{ name: "x", expiresAt: "2027-01-01T00:00:00+24:00" }, ["expiresAt"]],
      [{ name: "x", expiresAt: "9999-12-31T23:59:59-05:00" }, ["expiresAt"]],
      [{ name: "x", expiresAt: "+010000-01-01T00:00:00Z" }, ["expiresAt"]],
      [{ name: 5, ownerId: 7 }, ["name", "ownerId"]],
      [JSON.parse('{"name": "x", "__proto__": ["mbx_1"]}'), ["__proto__"]],
      [JSON.parse('{"name": "x", "constructor": ["mbx_1"]}'), ["constructor"]],
    ];
    for (const [body, fields] of cases) {
      const res = await call("/v1/api-keys", { key: key.key, body });
      const problem = await expectProblem(res, 400, "invalid_request");
      expect(
        (problem.errors as { field: string }[]).map((e) => e.field),
        JSON.stringify(body),
      ).toEqual(fields);
    }
    expect(await rows("SELECT id FROM api_keys WHERE account_id = ?", account.id)).toEqual(before);
  });

  it("keeps a key with an expiry at the end of the range active: instants, not strings, are compared", async () => {
    const { key } = await provision();
    const far = await createKey(key.key, { expiresAt: "9999-12-31T18:59:59-05:00" });
    expect(far).toMatchObject({ expiresAt: "9999-12-31T23:59:59.000Z", status: "active" });
    expect((await whoami(far.key)).status).toBe(200);
    const leap = await createKey(key.key, { expiresAt: "2028-02-29T12:00:00Z" });
    expect(leap.expiresAt).toBe("2028-02-29T12:00:00.000Z");
  });

  it("stores an expiry in UTC and refuses the key once it has passed", async () => {
    const { key } = await provision();
    const expiring = await createKey(key.key, { expiresAt: "2099-06-01T12:00:00+02:00" });
    expect(expiring.expiresAt).toBe("2099-06-01T10:00:00.000Z");
    await expire(expiring.id);
    await expectProblem(await whoami(expiring.key), 401, "key_expired");
    expect(await (await call(`/v1/api-keys/${expiring.id}`, { key: key.key })).json()).toMatchObject({ status: "expired" });
  });

  it("lets an admin create a key for a member, which has member rights only", async () => {
    const { key } = await provision();
    const member = await memberWithKey(key.key);
    expect(member.key).toMatchObject({ ownerId: member.user.id });
    expect(await (await whoami(member.key.key)).json()).toMatchObject({ userId: member.user.id, role: "member" });
    await expectProblem(await call("/v1/users", { key: member.key.key }), 403, "insufficient_role");
  });

  it("refuses an owner outside the account, or a disabled one", async () => {
    const { key } = await provision();
    const other = await provision();
    const res = await call("/v1/api-keys", { key: key.key, body: { name: "x", ownerId: other.admin.id } });
    expect((await expectProblem(res, 400, "invalid_request")).errors).toEqual([
      { field: "ownerId", message: "is not a user of this account" },
    ]);
    const member = await memberWithKey(key.key);
    await call(`/v1/users/${member.user.id}`, { method: "PATCH", key: key.key, body: { disabled: true } });
    await expectProblem(await call("/v1/api-keys", { key: key.key, body: { name: "x", ownerId: member.user.id } }), 400, "invalid_request");
  });

  it("lets members create keys only where the account allows it, and only for themselves", async () => {
    const strict = await provision();
    const m1 = await memberWithKey(strict.key.key);
    await expectProblem(await call("/v1/api-keys", { key: m1.key.key, body: { name: "mine" } }), 403, "insufficient_role");

    const open = await provision({ membersCanCreateKeys: true });
    const m2 = await memberWithKey(open.key.key);
    const own = await createKey(m2.key.key, { name: "mine" });
    expect(own).toMatchObject({ ownerId: m2.user.id, createdBy: m2.user.id });
    const forAdmin = await call("/v1/api-keys", { key: m2.key.key, body: { name: "x", ownerId: open.admin.id } });
    await expectProblem(forAdmin, 403, "insufficient_role");
  });

  it("lets members rotate only their own keys, and only where the account lets them create keys", async () => {
    const open = await provision({ membersCanCreateKeys: true });
    const member = await memberWithKey(open.key.key);
    const own = await createKey(member.key.key, { name: "mine" });
    const rotated = await rotate(member.key.key, own.id);
    expect(rotated.status).toBe(201);
    expect(await rotated.json()).toMatchObject({ ownerId: member.user.id, createdBy: member.user.id, rotatedFrom: own.id });
    // Someone else's key does not exist for a member.
    await expectProblem(await rotate(member.key.key, open.key.id), 404, "not_found");
    expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", open.key.id)).toEqual([{ revoked_at: null }]);
    // Once the account stops members creating keys, they cannot rotate either (a rotation creates a key).
    await call("/v1/account", { method: "PATCH", key: open.key.key, body: { membersCanCreateKeys: false } });
    await expectProblem(await rotate(member.key.key, member.key.id), 403, "insufficient_role");
  });
});

describe("GET /v1/api-keys", () => {
  it("lists newest first with a cursor, never the raw key or its hash", async () => {
    const { key } = await provision();
    const created = [key];
    for (let i = 0; i < 4; i++) created.push(await createKey(key.key, { name: `k${i}` }));
    const seen: Record<string, unknown>[] = [];
    let cursor: string | null = null;
    do {
      const res = await call(`/v1/api-keys?limit=2${cursor ? `&cursor=${cursor}` : ""}`, { key: key.key });
      expect(res.status).toBe(200);
      const page = await res.json<{ data: Record<string, unknown>[]; nextCursor: string | null }>();
      expect(page.data.length).toBeLessThanOrEqual(2);
      seen.push(...page.data);
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen.map((k) => k.id)).toEqual(created.map((k) => k.id).reverse());
    const text = JSON.stringify(seen);
    for (const k of created) expect(text).not.toContain(k.key);
    expect(seen.every((k) => !("key" in k) && !("hash" in k))).toBe(true);
  });

  it("shows each key's status", async () => {
    const { key } = await provision();
    const revoked = await createKey(key.key);
    await revoke(key.key, revoked.id);
    const expired = await createKey(key.key, { expiresAt: "2099-01-01T00:00:00Z" });
    await expire(expired.id);
    const { data } = await (await call("/v1/api-keys", { key: key.key })).json<{ data: KeyBody[] }>();
    expect(Object.fromEntries(data.map((k) => [k.id, k.status]))).toEqual({
      [key.id]: "active",
      [revoked.id]: "revoked",
      [expired.id]: "expired",
    });
  });

  it("shows members only their own keys", async () => {
    const { key } = await provision();
    const member = await memberWithKey(key.key);
    const { data } = await (await call("/v1/api-keys", { key: member.key.key })).json<{ data: KeyBody[] }>();
    expect(data.map((k) => k.id)).toEqual([member.key.id]);
    await expectProblem(await call(`/v1/api-keys/${key.id}`, { key: member.key.key }), 404, "not_found");
    await expectProblem(await revoke(member.key.key, key.id), 404, "not_found");
  });

  it("refuses a bad limit or cursor", async () => {
    const { key } = await provision();
    for (const q of ["limit=0", "limit=101", "limit=abc", "cursor=garbage"]) {
      await expectProblem(await call(`/v1/api-keys?${q}`, { key: key.key }), 400, "invalid_request");
    }
  });
});

describe("GET /v1/api-keys/:id", () => {
  it("returns one key of the account, and 404 for anything else", async () => {
    const { key } = await provision();
    // Its last use reaches D1 with its usage (the object's alarm, through the queue), and reads show it.
    expect((await call("/v1/whoami", { key: key.key })).status).toBe(200);
    await lastUseSent(key.id);
    const res = await call(`/v1/api-keys/${key.id}`, { key: key.key });
    const { key: _raw, ...expected } = key;
    expect(await res.json()).toEqual({ ...expected, lastUsedAt: expect.any(String), lastAuthMethod: "bearer" });
    await expectProblem(await call("/v1/api-keys/key_doesnotexist", { key: key.key }), 404, "not_found");
  });
});

describe("DELETE /v1/api-keys/:id", () => {
  it("revokes for good: the key stops working at once and its row stays", async () => {
    const { admin, key } = await provision();
    const victim = await createKey(key.key);
    expect((await whoami(victim.key)).status).toBe(200);
    const res = await revoke(key.key, victim.id);
    expect(res.status).toBe(200);
    const body = await res.json<KeyBody>();
    expect(body).toMatchObject({ id: victim.id, status: "revoked", revokedBy: admin.id });
    expect(body).not.toHaveProperty("key");
    await expectProblem(await whoami(victim.key), 401, "key_revoked");
    expect(await rows("SELECT id FROM api_keys WHERE id = ?", victim.id)).toHaveLength(1);
    expect(await rows("SELECT action, actor FROM audit_events WHERE target = ? ORDER BY created_at", victim.id)).toEqual([
      { action: "key.created", actor: admin.id },
      { action: "key.revoked", actor: admin.id },
    ]);
    // Deleting again changes nothing; no field reactivates a key.
    const again = await revoke(key.key, victim.id);
    expect(await again.json()).toEqual(body);
    await expectProblem(
      await call(`/v1/api-keys/${victim.id}`, { method: "PATCH", key: key.key, body: { status: "active", revokedAt: null } }),
      400,
      "invalid_request",
    );
    expect(await (await call(`/v1/api-keys/${victim.id}`, { key: key.key })).json()).toEqual(body);
    await expectProblem(await rotate(key.key, victim.id), 409, "key_not_active");
  });

  it("refuses to revoke the account's last active key", async () => {
    const { key } = await provision();
    const res = await revoke(key.key, key.id);
    await expectProblem(res, 409, "last_active_key");
    expect((await whoami(key.key)).status).toBe(200);
    expect(await rows("SELECT action FROM audit_events WHERE target = ? AND action = 'key.revoked'", key.id)).toEqual([]);
    // Expired keys do not count as active ones.
    const expired = await createKey(key.key, { expiresAt: "2099-01-01T00:00:00Z" });
    await expire(expired.id);
    await expectProblem(await revoke(key.key, key.id), 409, "last_active_key");
    expect((await revoke(key.key, expired.id)).status).toBe(200);
  });

  it("counts only lasting keys: none that is expiring, scoped, or of a disabled admin or a member", async () => {
    // Each case leaves the admin's key K beside one key that is about to die or cannot administer the account.
    const cases: [string, (adminKey: string) => Promise<unknown>][] = [
      ["a key that expires in seconds", (k) => createKey(k, { expiresAt: new Date(Date.now() + 5_000).toISOString() })],
      ["a resource-scoped key", (k) => createKey(k, { mailboxIds: ["mbx_1"] })],
      [
        "a key whose admin owner is disabled",
        async (k) => {
          const other = await createUser(k, "admin");
          await createKey(k, { ownerId: other.id });
          await call(`/v1/users/${other.id}`, { method: "PATCH", key: k, body: { disabled: true } });
        },
      ],
      ["a member's key", async (k) => memberWithKey(k)],
    ];
    for (const [what, setUp] of cases) {
      const { key } = await provision();
      await setUp(key.key);
      const res = await revoke(key.key, key.id);
      expect({ what, status: res.status }).toEqual({ what, status: 409 });
      await expectProblem(res, 409, "last_active_key");
      expect((await whoami(key.key)).status).toBe(200);
    }
  });

  it("rotating with a grace period, then revoking the new key, is refused: the account keeps a key past the grace", async () => {
    const { account, key } = await provision();
    const k1 = await createKey(key.key, { name: "k1" });
    expect((await revoke(key.key, key.id)).status).toBe(200);
    const k2 = await (await rotate(k1.key, k1.id, { gracePeriodSeconds: 3 })).json<KeyBody>();
    await expectProblem(await revoke(k2.key, k2.id), 409, "last_active_key");
    const lasting = await rows(
      "SELECT id FROM api_keys WHERE account_id = ? AND revoked_at IS NULL AND expires_at IS NULL AND scopes = '[\"*\"]'",
      account.id,
    );
    expect(lasting).toEqual([{ id: k2.id }]);
    // Revoking a key that is not the account's lifeline is always possible: a leaked key can always be stopped.
    expect((await revoke(k2.key, k1.id)).status).toBe(200);
  });

  it("keeps one key active when the last two are revoked at the same moment", async () => {
    const { account, key } = await provision();
    const second = await createKey(key.key);
    const results = await Promise.all([revoke(key.key, second.id), revoke(second.key, key.id)]);
    // The loser is refused either by the guard (409) or, if the winner revoked its key first, as revoked (401).
    const [won, lost] = results.map((r) => r.status).sort();
    expect(won).toBe(200);
    expect([401, 409]).toContain(lost);
    const active = await rows("SELECT id FROM api_keys WHERE account_id = ? AND revoked_at IS NULL", account.id);
    expect(active).toHaveLength(1);
    expect(await rows("SELECT id FROM audit_events WHERE account_id = ? AND action = 'key.revoked'", account.id)).toHaveLength(1);
  });
});

describe("POST /v1/api-keys/:id/rotate", () => {
  it("without grace: the new key inherits name, scopes, owner and expiry; the old one stops at once", async () => {
    const { key } = await provision();
    const member = await memberWithKey(key.key);
    const old = await createKey(key.key, {
      name: "agent",
      ownerId: member.user.id,
      mailboxIds: ["mbx_1"],
      expiresAt: "2099-01-01T00:00:00Z",
    });
    const res = await rotate(key.key, old.id);
    expect(res.status).toBe(201);
    const fresh = await res.json<KeyBody>();
    expect(fresh).toMatchObject({
      name: "agent",
      ownerId: member.user.id,
      scopes: ["mailbox:mbx_1"],
      expiresAt: old.expiresAt,
      rotatedFrom: old.id,
      status: "active",
    });
    expect(fresh.key).not.toBe(old.key);
    await expectProblem(await whoami(old.key), 401, "key_revoked");
    expect(await (await whoami(fresh.key)).json()).toMatchObject({ userId: member.user.id, role: "member" });
    expect(await rows("SELECT action FROM audit_events WHERE target = ? ORDER BY action", old.id)).toEqual([
      { action: "key.created" },
      { action: "key.rotated" },
    ]);
  });

  it("with grace: the old key works until the grace period ends, never past its own expiry", async () => {
    const { key } = await provision();
    const old = await createKey(key.key, { expiresAt: "2099-01-01T00:00:00Z" });
    const fresh = await (await rotate(key.key, old.id, { gracePeriodSeconds: 3600 })).json<KeyBody>();
    expect((await whoami(old.key)).status).toBe(200);
    expect((await whoami(fresh.key)).status).toBe(200);
    const listed = await (await call(`/v1/api-keys/${old.id}`, { key: key.key })).json<KeyBody>();
    expect(listed.status).toBe("active");
    const graceEnd = Date.parse(listed.revokedAt as string) - Date.parse(fresh.createdAt);
    expect(graceEnd).toBe(3_600_000);
    await expectProblem(await rotate(key.key, old.id), 409, "key_not_active");

    await expire(old.id);
    await expectProblem(await whoami(old.key), 401, "key_expired");
    await setKeyColumn(old.id, "revoked_at", new Date(Date.now() - 1000).toISOString());
    await expectProblem(await whoami(old.key), 401, "key_revoked");
  });

  it("revoking a key in its grace period ends the grace at once", async () => {
    const { key } = await provision();
    const old = await createKey(key.key);
    await rotate(key.key, old.id, { gracePeriodSeconds: 600 });
    expect((await revoke(key.key, old.id)).status).toBe(200);
    await expectProblem(await whoami(old.key), 401, "key_revoked");
  });

  it("rotates a key only once, even when asked twice at the same moment", async () => {
    const { account, key } = await provision();
    const old = await createKey(key.key);
    const results = await Promise.all([
      rotate(key.key, old.id, { gracePeriodSeconds: 60 }),
      rotate(key.key, old.id, { gracePeriodSeconds: 60 }),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual([201, 409]);
    expect(await rows("SELECT id FROM api_keys WHERE account_id = ? AND rotated_from = ?", account.id, old.id)).toHaveLength(1);
  });

  it("refuses a bad grace period", async () => {
    const { key } = await provision();
    for (const gracePeriodSeconds of [-1, 1.5, "60", 7 * 24 * 3600 + 1]) {
      await expectProblem(await rotate(key.key, key.id, { gracePeriodSeconds }), 400, "invalid_request");
    }
    expect((await whoami(key.key)).status).toBe(200);
  });
});

describe("secrets at rest", () => {
  it("no raw key, nor its random part, is stored anywhere after create, list, rotate and revoke", async () => {
    const { key } = await provision();
    const a = await createKey(key.key, { name: "a" });
    await call("/v1/api-keys", { key: a.key });
    const b = await (await rotate(key.key, a.id, { gracePeriodSeconds: 60 })).json<KeyBody>();
    await revoke(key.key, a.id);
    await call("/v1/whoami", { headers: { "X-API-Key": b.key } });
    const stored = await everythingStored();
    for (const raw of [key.key, a.key, b.key]) {
      expect(stored).not.toContain(raw);
      expect(stored).not.toContain(raw.slice(raw.indexOf("_") + 1));
    }
  });
});
