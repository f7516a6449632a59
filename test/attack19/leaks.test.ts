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
});
