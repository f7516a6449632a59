import { env } from "cloudflare:workers";
import { createLocalJWKSet, jwtVerify } from "jose";
import { describe, expect, it } from "vitest";
import { type Echo, gw, UPSTREAM } from "../gateway/table";
import {
  call,
  createKey,
  expectProblem,
  type KeyBody,
  memberWithKey,
  OPERATOR_TOKEN,
  ORIGIN,
  type Provisioned,
  provision,
  rows,
  VERIFY_TOKEN,
} from "../helpers";

const operator = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const unique = (label: string) => `${label}-${crypto.randomUUID()}`;
/** A meta of exactly `bytes` bytes as JSON: `{"p":"xx…"}`. */
const metaOf = (bytes: number) => ({ p: "x".repeat(bytes - 8) });

type External = { externalId: string | null; meta: Record<string, unknown> | null };
type Stored = { external_id: string | null; meta: string | null };

const keyRow = async (id: string) => (await rows<Stored>("SELECT external_id, meta FROM api_keys WHERE id = ?", id))[0];
const accountRow = async (id: string) => (await rows<Stored>("SELECT external_id, meta FROM accounts WHERE id = ?", id))[0];

function patchKey(key: string, id: string, body: unknown) {
  return call(`/v1/api-keys/${id}`, { method: "PATCH", key, body });
}

function patchAccount(id: string, body: unknown) {
  return call(`/v1/accounts/${id}`, { method: "PATCH", headers: operator, body });
}

function provisioning(body: Record<string, unknown>) {
  return call("/v1/accounts", { headers: operator, body: { name: "Billing", admin: { email: "billing@example.com" }, ...body } });
}

/** The invalid values of either field, each with the field it names: none may be stored. */
const INVALID: [string, Record<string, unknown>, string][] = [
  ["a meta of 1025 bytes", { meta: metaOf(1025) }, "meta"],
  ["a meta of 1025 bytes in 1024 characters", { meta: { p: `${"x".repeat(1015)}é` } }, "meta"],
  ["an array as meta", { meta: [1, 2] }, "meta"],
  ["a string as meta", { meta: "plan=pro" }, "meta"],
  ["an externalId of 129 characters", { externalId: "a".repeat(129) }, "externalId"],
  ["an empty externalId", { externalId: "" }, "externalId"],
  ["a control character", { externalId: "cus_1\u0000" }, "externalId"],
  ["a line break", { externalId: "cus_1\r\nKeygate-Role: admin" }, "externalId"],
  ["a space", { externalId: "cus 1" }, "externalId"],
  ["a character outside ASCII", { externalId: "cüs_1" }, "externalId"],
  ["a number as externalId", { externalId: 7 }, "externalId"],
];

describe("externalId and meta on keys", () => {
  it("are set on creation and come back from every read, lists included, never with a secret", async () => {
    const { key } = await provision();
    const externalId = unique("si");
    const meta = { plan: "pro", seats: 3, tags: ["a", "b"], nested: { ok: true, none: null } };
    const created = await createKey(key.key, { externalId, meta });
    expect(created).toMatchObject({ externalId, meta });
    expect(await keyRow(created.id)).toEqual({ external_id: externalId, meta: JSON.stringify(meta) });

    const read = await call(`/v1/api-keys/${created.id}`, { key: key.key });
    expect(await read.json()).toMatchObject({ externalId, meta });
    const list = await (await call("/v1/api-keys", { key: key.key })).json<{ data: (KeyBody & External)[] }>();
    expect(list.data.find((k) => k.id === created.id)).toMatchObject({ externalId, meta });
    // A key without them shows both as null.
    expect(list.data.find((k) => k.id !== created.id)).toMatchObject({ externalId: null, meta: null });
    const hash = (await rows<{ hash: string }>("SELECT hash FROM api_keys WHERE id = ?", created.id))[0]?.hash as string;
    expect(JSON.stringify(list)).not.toContain(hash);
    expect(JSON.stringify(list)).not.toContain(created.key);
  });

  it("are changed with PATCH, one at a time, cleared with null, and audited", async () => {
    const { account, key } = await provision();
    const created = await createKey(key.key, { meta: { plan: "free" } });
    const externalId = unique("si");
    const res = await patchKey(key.key, created.id, { externalId });
    expect(res.status).toBe(200);
    const body = await res.json<KeyBody & External>();
    expect(body).toMatchObject({ id: created.id, externalId, meta: { plan: "free" }, status: "active" });
    expect(body).not.toHaveProperty("key");
    expect(await keyRow(created.id)).toEqual({ external_id: externalId, meta: '{"plan":"free"}' });

    expect(await (await patchKey(key.key, created.id, { meta: { plan: "pro" } })).json()).toMatchObject({
      externalId,
      meta: { plan: "pro" },
    });
    expect(await (await patchKey(key.key, created.id, { externalId: null, meta: null })).json()).toMatchObject({
      externalId: null,
      meta: null,
    });
    expect(await keyRow(created.id)).toEqual({ external_id: null, meta: null });
    const events = await rows(
      "SELECT actor FROM audit_events WHERE account_id = ? AND action = 'key.updated' AND target = ?",
      account.id,
      created.id,
    );
    expect(events).toHaveLength(3);
    // Nothing to change changes nothing, and is no event.
    expect((await patchKey(key.key, created.id, {})).status).toBe(200);
    await expectProblem(await patchKey(key.key, created.id, { name: "renamed" }), 400, "invalid_request");
    await expectProblem(await patchKey(key.key, "key_nope", { externalId: "x" }), 404, "not_found");
  });

  it("are unique within the account: a clash is 409 external_id_taken with nothing stored; another account may use the same", async () => {
    const { account, key } = await provision();
    const externalId = unique("si");
    const first = await createKey(key.key, { externalId });
    const count = async () => (await rows("SELECT id FROM api_keys WHERE account_id = ?", account.id)).length;
    const before = await count();
    await expectProblem(await call("/v1/api-keys", { key: key.key, body: { name: "again", externalId } }), 409, "external_id_taken");
    expect(await count()).toBe(before);

    const second = await createKey(key.key, { meta: { a: 1 } });
    await expectProblem(await patchKey(key.key, second.id, { externalId, meta: { a: 2 } }), 409, "external_id_taken");
    expect(await keyRow(second.id)).toEqual({ external_id: null, meta: '{"a":1}' });
    expect(await keyRow(first.id)).toMatchObject({ external_id: externalId });
    // Setting a key's own id again is no clash.
    expect((await patchKey(key.key, first.id, { externalId })).status).toBe(200);

    const other = await provision();
    expect(await createKey(other.key.key, { externalId })).toMatchObject({ externalId });
  });

  it("lets exactly one of two concurrent creates with the same externalId win", async () => {
    const { account, key } = await provision();
    const externalId = unique("si");
    const answers = await Promise.all([1, 2].map((n) => call("/v1/api-keys", { key: key.key, body: { name: `racer ${n}`, externalId } })));
    expect(answers.map((r) => r.status).sort()).toEqual([201, 409]);
    await expectProblem(answers.find((r) => r.status === 409) as Response, 409, "external_id_taken");
    expect(await rows("SELECT id FROM api_keys WHERE account_id = ? AND external_id = ?", account.id, externalId)).toHaveLength(1);
  });

  it.each(INVALID)("refuses %s with 400 naming the field, storing nothing", async (_, fields, field) => {
    const { account, key } = await provision();
    const before = await rows("SELECT id FROM api_keys WHERE account_id = ?", account.id);
    const created = await call("/v1/api-keys", { key: key.key, body: { name: "bad", ...fields } });
    expect((await expectProblem(created, 400, "invalid_request")).errors).toEqual([{ field, message: expect.any(String) }]);
    expect(await rows("SELECT id FROM api_keys WHERE account_id = ?", account.id)).toEqual(before);
    const patched = await patchKey(key.key, key.id, fields);
    expect((await expectProblem(patched, 400, "invalid_request")).errors).toEqual([{ field, message: expect.any(String) }]);
    expect(await keyRow(key.id)).toEqual({ external_id: null, meta: null });
  });

  it("takes a meta of exactly 1024 bytes and ids of 1 and 128 printable characters", async () => {
    const { key } = await provision();
    // Stored as sent: a `__proto__` field is a field like any other.
    const sent = '{"name":"proto","meta":{"__proto__":{"admin":true},"plan":"pro"}}';
    const proto = await call("/v1/api-keys", { key: key.key, body: sent });
    expect(proto.status).toBe(201);
    const { id } = await proto.json<KeyBody>();
    expect(await keyRow(id)).toEqual({ external_id: null, meta: '{"__proto__":{"admin":true},"plan":"pro"}' });
    expect(await createKey(key.key, { meta: metaOf(1024) })).toMatchObject({ meta: metaOf(1024) });
    expect(await createKey(key.key, { externalId: "!" })).toMatchObject({ externalId: "!" });
    const longest = `~${"Z".repeat(126)}#`;
    expect(await createKey(key.key, { externalId: longest })).toMatchObject({ externalId: longest });
  });

  it("are changed by members on their own keys only, as they revoke them", async () => {
    const { key } = await provision();
    const member = await memberWithKey(key.key);
    const other = await memberWithKey(key.key);
    const mine = unique("mine");
    expect(await (await patchKey(member.key.key, member.key.id, { externalId: mine })).json()).toMatchObject({ externalId: mine });
    // Another member's key and the admin's are not the member's to see: 404, unchanged.
    for (const target of [other.key.id, key.id]) {
      await expectProblem(await patchKey(member.key.key, target, { externalId: unique("theirs"), meta: { x: 1 } }), 404, "not_found");
      expect(await keyRow(target)).toEqual({ external_id: null, meta: null });
    }
    // The admin changes any key of the account.
    expect((await patchKey(key.key, other.key.id, { meta: { by: "admin" } })).status).toBe(200);
  });

  it("carry the meta to a rotation's new key; the externalId stays with the old key, unique", async () => {
    const { key } = await provision();
    const externalId = unique("si");
    const old = await createKey(key.key, { externalId, meta: { plan: "pro" } });
    const res = await call(`/v1/api-keys/${old.id}/rotate`, { key: key.key, body: { gracePeriodSeconds: 60 } });
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ rotatedFrom: old.id, externalId: null, meta: { plan: "pro" } });
    expect(await keyRow(old.id)).toEqual({ external_id: externalId, meta: '{"plan":"pro"}' });
  });
});

describe("externalId and meta on accounts", () => {
  it("are set on provisioning and by the operator's PATCH, cleared with null, and come back from every read", async () => {
    const externalId = unique("cus");
    const res = await provisioning({ externalId, meta: { plan: "pro" } });
    expect(res.status).toBe(201);
    const { account, key } = await res.json<Provisioned>();
    expect(account).toMatchObject({ externalId, meta: { plan: "pro" } });
    expect(await accountRow(account.id)).toEqual({ external_id: externalId, meta: '{"plan":"pro"}' });
    expect(await (await call("/v1/account", { key: key.key })).json()).toMatchObject({ externalId, meta: { plan: "pro" } });

    const renamed = unique("cus");
    const patched = await patchAccount(account.id, { externalId: renamed });
    expect(patched.status).toBe(200);
    expect(await patched.json()).toMatchObject({ id: account.id, externalId: renamed, meta: { plan: "pro" } });
    expect(await (await call("/v1/account", { key: key.key })).json()).toMatchObject({ externalId: renamed });

    // The provider's ids are the provider's: an account's admin cannot change them (its billing joins on them).
    const byAdmin = await call("/v1/account", { method: "PATCH", key: key.key, body: { meta: { plan: "team" } } });
    await expectProblem(byAdmin, 400, "invalid_request");
    expect(await accountRow(account.id)).toEqual({ external_id: renamed, meta: '{"plan":"pro"}' });
    expect(await (await patchAccount(account.id, { externalId: null, meta: null })).json()).toMatchObject({ externalId: null, meta: null });
    expect(await accountRow(account.id)).toEqual({ external_id: null, meta: null });
    const actors = await rows<{ actor: string }>(
      "SELECT actor FROM audit_events WHERE account_id = ? AND action = 'account.updated' ORDER BY created_at, id",
      account.id,
    );
    expect(actors.filter((a) => a.actor === "operator")).toHaveLength(2);
    expect(actors.filter((a) => a.actor.startsWith("usr_"))).toHaveLength(0);
  });

  it("are unique across the deployment: provisioning and the operator's PATCH answer 409 external_id_taken, storing nothing", async () => {
    const externalId = unique("cus");
    const first = await provision({ externalId });
    const accounts = async () => (await rows("SELECT id FROM accounts")).length;
    const before = await accounts();
    await expectProblem(await provisioning({ externalId }), 409, "external_id_taken");
    expect(await accounts()).toBe(before);

    const second = await provision({ meta: { a: 1 } });
    await expectProblem(await patchAccount(second.account.id, { externalId, meta: { a: 2 } }), 409, "external_id_taken");
    // An admin cannot claim another account's id, nor learn that one is taken.
    const byAdmin = await call("/v1/account", { method: "PATCH", key: second.key.key, body: { externalId, membersCanCreateKeys: true } });
    await expectProblem(byAdmin, 400, "invalid_request");
    expect(await rows("SELECT external_id, meta, members_can_create_keys FROM accounts WHERE id = ?", second.account.id)).toEqual([
      { external_id: null, meta: '{"a":1}', members_can_create_keys: 0 },
    ]);
    expect(await accountRow(first.account.id)).toMatchObject({ external_id: externalId });
  });

  it("lets exactly one of two concurrent provisionings with the same externalId win", async () => {
    const externalId = unique("cus");
    const answers = await Promise.all([1, 2].map((n) => provisioning({ name: `racer ${n}`, externalId })));
    expect(answers.map((r) => r.status).sort()).toEqual([201, 409]);
    await expectProblem(answers.find((r) => r.status === 409) as Response, 409, "external_id_taken");
    expect(await rows("SELECT id FROM accounts WHERE external_id = ?", externalId)).toHaveLength(1);
  });

  it("lets exactly one of two concurrent operator PATCHes to the same externalId win", async () => {
    const [a, b] = await Promise.all([provision(), provision()]);
    const externalId = unique("cus");
    const answers = await Promise.all([a, b].map((p) => patchAccount(p.account.id, { externalId })));
    expect(answers.map((r) => r.status).sort()).toEqual([200, 409]);
    expect(await rows("SELECT id FROM accounts WHERE external_id = ?", externalId)).toHaveLength(1);
  });

  it.each(INVALID)("refuses %s with 400 naming the field, storing nothing", async (_, fields, field) => {
    const { account } = await provision();
    const before = await rows("SELECT id FROM accounts");
    const created = await provisioning(fields);
    expect((await expectProblem(created, 400, "invalid_request")).errors).toEqual([{ field, message: expect.any(String) }]);
    expect(await rows("SELECT id FROM accounts")).toHaveLength(before.length);
    expect((await expectProblem(await patchAccount(account.id, fields), 400, "invalid_request")).errors).toEqual([
      { field, message: expect.any(String) },
    ]);
    expect(await accountRow(account.id)).toEqual({ external_id: null, meta: null });
  });

  it("are changed by the operator only; an unknown account is 404, a member cannot touch the account", async () => {
    const { account, key } = await provision();
    await expectProblem(await patchAccount("acc_nope", { externalId: "x" }), 404, "not_found");
    const asKey = await call(`/v1/accounts/${account.id}`, { method: "PATCH", key: key.key, body: { externalId: "x" } });
    await expectProblem(asKey, 401, "invalid_operator_token");
    const member = await memberWithKey(key.key);
    await expectProblem(
      await call("/v1/account", { method: "PATCH", key: member.key.key, body: { externalId: unique("cus") } }),
      403,
      "insufficient_role",
    );
    expect(await accountRow(account.id)).toEqual({ external_id: null, meta: null });
  });
});

type Verdict = Record<string, unknown>;

const ways: [string, (body: unknown) => Promise<Verdict>][] = [
  [
    "POST /v1/keys/verify",
    async (body) => {
      const res = await call("/v1/keys/verify", { headers: { Authorization: `Bearer ${VERIFY_TOKEN}` }, body });
      expect(res.status).toBe(200);
      return res.json();
    },
  ],
  [
    "the service binding",
    async (body) => (await env.CALLER.fetch("http://caller/", { method: "POST", body: JSON.stringify(body) })).json(),
  ],
];

describe.each(ways)("verify through %s", (_, verify) => {
  it("answers the key's externalId and meta and the account's, and a change of either right after its answer", async () => {
    const accountId = unique("cus");
    const { account, key } = await provision({ externalId: accountId, meta: { plan: "pro" } });
    const keyId = unique("si");
    const created = await createKey(key.key, { externalId: keyId, meta: { seat: 1 } });
    expect(await verify({ key: created.key })).toMatchObject({
      valid: true,
      accountId: account.id,
      keyId: created.id,
      externalId: keyId,
      meta: { seat: 1 },
      account: { externalId: accountId, meta: { plan: "pro" } },
    });
    // The key's object holds its record now: the changes must reach it before their answers.
    expect((await patchKey(key.key, created.id, { externalId: null, meta: { seat: 2 } })).status).toBe(200);
    expect(await verify({ key: created.key })).toMatchObject({ externalId: null, meta: { seat: 2 } });
    const moved = unique("cus");
    expect((await patchAccount(account.id, { externalId: moved })).status).toBe(200);
    expect(await verify({ key: created.key })).toMatchObject({ account: { externalId: moved, meta: { plan: "pro" } } });
    expect((await patchAccount(account.id, { meta: null })).status).toBe(200);
    expect(await verify({ key: created.key })).toMatchObject({ account: { externalId: moved, meta: null } });
    // A key without them: nulls, never absent.
    expect(await verify({ key: key.key })).toMatchObject({ externalId: null, meta: null, account: { externalId: moved, meta: null } });
  });
});

async function echo(res: Response): Promise<Echo> {
  expect(res.status, await res.clone().text()).toBe(200);
  return res.json();
}

async function verifiedClaims(assertion: string) {
  const keys = createLocalJWKSet(await (await call("/.well-known/jwks.json")).json());
  const { payload } = await jwtVerify(assertion, keys, { issuer: ORIGIN, audience: new URL(UPSTREAM).origin, algorithms: ["ES256"] });
  return payload;
}

describe("the gateway", () => {
  it("sends the upstream the account's and the key's externalId and both metas in the assertion, never a client's", async () => {
    const accountId = unique("cus");
    const { account, key } = await provision({ externalId: accountId, meta: { plan: "pro" } });
    const keyId = unique("si");
    const created = await createKey(key.key, { externalId: keyId, meta: { seat: 1 } });
    const forged = { "Keygate-External-Id": "cus_forged", keygate_key_external_id: "si_forged", "X-Keygate-External-Id": "x" };
    const seen = await echo(await gw("/v1/anything", { key: created.key, headers: forged }));
    expect(seen.headers["keygate-external-id"]).toBe(accountId);
    expect(seen.headers["keygate-key-external-id"]).toBe(keyId);
    expect(JSON.stringify(seen.headers)).not.toContain("forged");
    expect(seen.headers).not.toHaveProperty("x-keygate-external-id");
    expect(await verifiedClaims(seen.headers["keygate-assertion"] as string)).toMatchObject({
      acc: account.id,
      key: created.id,
      ext: { account: { id: accountId, meta: { plan: "pro" } }, key: { id: keyId, meta: { seat: 1 } } },
    });

    // Changed, the next request carries the change.
    expect((await patchKey(key.key, created.id, { externalId: null })).status).toBe(200);
    const moved = unique("cus");
    expect((await patchAccount(account.id, { externalId: moved, meta: null })).status).toBe(200);
    const after = await echo(await gw("/v1/anything", { key: created.key, headers: forged }));
    expect(after.headers["keygate-external-id"]).toBe(moved);
    // Unset: absent, whatever the client sent under its name.
    expect(after.headers).not.toHaveProperty("keygate-key-external-id");
    expect(JSON.stringify(after.headers)).not.toContain("forged");
    expect(await verifiedClaims(after.headers["keygate-assertion"] as string)).toMatchObject({
      ext: { account: { id: moved, meta: null }, key: { id: null, meta: { seat: 1 } } },
    });
  });

  it("sends neither header for a key and an account without externalIds, and drops a client's on public routes too", async () => {
    const { key } = await provision();
    const forged = { "Keygate-External-Id": "cus_forged", "Keygate-Key-External-Id": "si_forged" };
    const seen = await echo(await gw("/v1/anything", { key: key.key, headers: forged }));
    expect(seen.headers).not.toHaveProperty("keygate-external-id");
    expect(seen.headers).not.toHaveProperty("keygate-key-external-id");
    const open = await echo(await gw("/v1/status", { headers: forged }));
    expect(JSON.stringify(open.headers)).not.toContain("forged");
  });
});
