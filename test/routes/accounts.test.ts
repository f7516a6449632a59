import { describe, expect, it } from "vitest";
import { call, callWith, expectProblem, expire, OPERATOR_TOKEN, type Provisioned, provision, rows } from "../helpers";

const operator = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

describe("POST /v1/accounts (operator provisioning)", () => {
  it("creates the account, its first admin and a full-access key shown once", async () => {
    const res = await call("/v1/accounts", {
      headers: operator,
      // Robotomail's keys as its documentation describes them: the plain format.
      body: { name: "Robotomail", keyPrefix: "rm", keyFormat: "plain", admin: { email: "Ops@Example.com" } },
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("Cache-Control")).toBe("no-store");
    const body = await res.json<Provisioned>();
    expect(body.account).toMatchObject({ name: "Robotomail", keyPrefix: "rm", keyFormat: "plain", membersCanCreateKeys: false });
    expect(body.account.id).toMatch(/^acc_/);
    expect(body.account.createdAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expect(body.admin).toMatchObject({ email: "ops@example.com", role: "admin", disabled: false });
    expect(body.key).toMatchObject({ name: "default", prefix: "rm", scopes: ["*"], status: "active", ownerId: body.admin.id });
    expect(body.key.key).toMatch(/^rm_[0-9a-f]{64}$/);
    expect(body.key.key).toHaveLength(67);
    expect(body.key.start).toBe(body.key.key.slice(3, 11));

    const who = await call("/v1/whoami", { key: body.key.key });
    expect(await who.json()).toMatchObject({ accountId: body.account.id, userId: body.admin.id, role: "admin", scopes: ["*"] });
    const events = await rows<{ action: string; actor: string }>(
      "SELECT action, actor FROM audit_events WHERE account_id = ? ORDER BY action",
      body.account.id,
    );
    expect(events).toEqual([
      { action: "account.created", actor: "operator" },
      { action: "key.created", actor: "operator" },
      { action: "user.created", actor: "operator" },
    ]);
  });

  it("defaults the key prefix to sk and the format to checksummed, and records who may create keys", async () => {
    const res = await call("/v1/accounts", {
      headers: operator,
      body: { name: "Robohead", membersCanCreateKeys: true, admin: { email: "a@robohead.com" } },
    });
    const body = await res.json<Provisioned>();
    expect(body.account).toMatchObject({ keyPrefix: "sk", keyFormat: "checksummed", membersCanCreateKeys: true });
    expect(body.key.key).toMatch(/^kg_sk_[0-9A-Za-z]{49}$/);
  });

  it("refuses a missing or wrong operator token", async () => {
    const body = { name: "x", admin: { email: "a@b.co" } };
    const missing = await call("/v1/accounts", { body });
    await expectProblem(missing, 401, "missing_credentials");
    expect(missing.headers.get("WWW-Authenticate")).toBe('Bearer realm="keygate"');
    for (const Authorization of [`Bearer ${OPERATOR_TOKEN}x`, `Bearer ${OPERATOR_TOKEN.slice(1)}`, OPERATOR_TOKEN, "Bearer"]) {
      const res = await call("/v1/accounts", { headers: { Authorization }, body });
      await expectProblem(res, 401, "invalid_operator_token");
    }
    expect(await rows("SELECT id FROM accounts WHERE name = 'x'")).toEqual([]);
  });

  it("an account key is not an operator token", async () => {
    const first = await (
      await call("/v1/accounts", { headers: operator, body: { name: "y", admin: { email: "a@b.co" } } })
    ).json<Provisioned>();
    await expectProblem(
      await call("/v1/accounts", { key: first.key.key, body: { name: "z", admin: { email: "a@b.co" } } }),
      401,
      "invalid_operator_token",
    );
  });

  it("lists every invalid field and writes nothing", async () => {
    const before = await rows("SELECT id FROM accounts");
    const res = await call("/v1/accounts", {
      headers: operator,
      body: { name: "", keyPrefix: "Bad_", admin: { email: "nope" }, tier: "pro" },
    });
    const body = await expectProblem(res, 400, "invalid_request");
    expect((body.errors as { field: string }[]).map((e) => e.field).sort()).toEqual(["admin.email", "keyPrefix", "name", "tier"]);
    for (const keyPrefix of ["a", "abcdefghijklm", "1ab", "ab-c"]) {
      const r = await call("/v1/accounts", { headers: operator, body: { name: "n", keyPrefix, admin: { email: "a@b.co" } } });
      await expectProblem(r, 400, "invalid_request");
    }
    await expectProblem(await call("/v1/accounts", { headers: operator, body: { name: "n" } }), 400, "invalid_request");
    expect(await rows("SELECT id FROM accounts")).toEqual(before);
  });

  it("is a configuration error, not an open door, when no operator token is set", async () => {
    const res = await callWith({ OPERATOR_TOKEN: undefined }, "/v1/accounts", {
      headers: operator,
      body: { name: "x", admin: { email: "a@b.co" } },
    });
    await expectProblem(res, 500, "configuration_error");
  });

  it("lets the operator recover an account that lost every admin key, audited", async () => {
    const { account, admin, key } = await provision();
    // Its only admin key had an expiry, and it passed: nothing left to log in with.
    await expire(key.id);
    await expectProblem(await call("/v1/whoami", { key: key.key }), 401, "key_expired");

    const recover = (headers: Record<string, string>, body: unknown = {}) =>
      call(`/v1/accounts/${account.id}/recovery-key`, { headers, body });
    await expectProblem(await recover({}), 401, "missing_credentials");
    await expectProblem(await recover({ Authorization: `Bearer ${key.key}` }), 401, "invalid_operator_token");
    await expectProblem(await recover(operator, { userId: "usr_nope" }), 400, "invalid_request");
    await expectProblem(await call("/v1/accounts/acc_nope/recovery-key", { headers: operator, body: {} }), 404, "not_found");

    const res = await recover(operator);
    expect(res.status).toBe(201);
    expect(res.headers.get("Cache-Control")).toBe("no-store");
    const recovered = await res.json<{ key: string; ownerId: string; scopes: string[]; createdBy: string }>();
    expect(recovered).toMatchObject({ ownerId: admin.id, scopes: ["*"], createdBy: "operator", name: "recovery" });
    expect(await (await call("/v1/whoami", { key: recovered.key })).json()).toMatchObject({ accountId: account.id, role: "admin" });
    expect(await rows("SELECT actor, target FROM audit_events WHERE account_id = ? AND action = 'account.recovered'", account.id)).toEqual([
      { actor: "operator", target: admin.id },
    ]);
  });
});
