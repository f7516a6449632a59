import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { faultyDatabase } from "../faults";
import { call, callWith, createKey, provision, rows } from "../helpers";

describe("attack19: a reported leak is acted on", () => {
  it("in revoke mode, a report that met one D1 failure still gets the key refused (202 was answered: no one reports again)", {
    timeout: 30_000,
  }, async () => {
    const { key } = await provision();
    expect((await call("/v1/account", { method: "PATCH", key: key.key, body: { leakResponse: "revoke" } })).status).toBe(200);
    const pasted = await createKey(key.key, { name: "pasted" });
    // D1 drops the connection once, on the lookup of the reported key.
    const flaky = faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: Network connection lost."), times: 1 }, (sql) =>
      /from "api_keys" inner join "accounts"/i.test(sql),
    );
    const res = await callWith({ DB: flaky }, "/v1/leaks", {
      body: { key: pasted.key, url: "https://gist.example/leak" },
      headers: { "CF-Connecting-IP": "203.0.113.77" },
    });
    expect(res.status).toBe(202);
    // README: "a reported leak of a key whose account chose revoke is refused everywhere within a second". Allow far more.
    await expect.poll(async () => (await call("/v1/whoami", { key: pasted.key })).status, { timeout: 10_000, interval: 250 }).toBe(401);
    expect(await rows("SELECT action FROM audit_events WHERE target = ? AND action = 'key.leaked'", pasted.id)).toHaveLength(1);
  });

  it("a key first reported under notify, then again after the account chose revoke, is not revoked without an audit entry or event", async () => {
    const { account, key } = await provision();
    const pasted = await createKey(key.key, { name: "pasted twice" });
    const report = (ip: string) =>
      callWith({}, "/v1/leaks", { body: { key: pasted.key, url: "https://gist.example/twice" }, headers: { "CF-Connecting-IP": ip } });
    expect((await report("203.0.113.78")).status).toBe(202);
    expect((await call("/v1/whoami", { key: pasted.key })).status).toBe(200);
    expect((await call("/v1/account", { method: "PATCH", key: key.key, body: { leakResponse: "revoke" } })).status).toBe(200);
    expect((await report("203.0.113.79")).status).toBe(202);
    // The second report did change something: the key is revoked, by keygate.
    expect((await call("/v1/whoami", { key: pasted.key })).status).toBe(401);
    expect(await rows("SELECT revoked_by FROM api_keys WHERE id = ?", pasted.id)).toEqual([{ revoked_by: "keygate" }]);
    // Every change is audited and told: the revocation must leave a trace beside the first report's.
    const audited = await rows<{ action: string }>("SELECT action FROM audit_events WHERE target = ? AND actor = 'keygate'", pasted.id);
    const told = await rows<{ type: string; data: string }>(
      "SELECT type, data FROM webhook_events WHERE account_id = ? AND type IN ('api_key.leaked', 'api_key.revoked')",
      account.id,
    );
    expect({
      audited: audited.length,
      toldRevoked: told.some((e) => e.type === "api_key.revoked" || JSON.parse(e.data).response === "revoked"),
    }).toEqual({ audited: 2, toldRevoked: true });
  });

  it("a SECRET_SCANNING_KEYS entry that is no usable public key is a configuration problem, not an internal error per alert", async () => {
    const notAKey = "-----BEGIN PUBLIC KEY-----\n!!not base64!!\n-----END PUBLIC KEY-----";
    const res = await callWith({ SECRET_SCANNING_KEYS: JSON.stringify([{ key_identifier: "broken", key: notAKey }]) }, "/v1/leaks/github", {
      method: "POST",
      body: [] as unknown as Record<string, unknown>,
      headers: { "Github-Public-Key-Identifier": "broken", "Github-Public-Key-Signature": "MAYCAQECAQE=" },
    });
    const body = (await res.json()) as { code: string };
    expect(["configuration_error", "invalid_signature"]).toContain(body.code);
  });
});
