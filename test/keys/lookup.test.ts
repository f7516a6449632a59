import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { hashKey, keyIdOf } from "../../src/core/ids";
import { faultyDatabase } from "../faults";
import { call, callWith, createKey, expectProblem, provision, rows } from "../helpers";

/** The worker's own D1 down: every statement it sends fails (a key's object reads D1 through its own handle). */
const workerD1Down = () => ({ DB: faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: Network connection lost.") }) });

describe("a key's object named by the key's hash", () => {
  it("gives a new key the id its hash works out to", async () => {
    const { key } = await provision();
    const made = await createKey(key.key);
    expect(made.id).toBe(await keyIdOf(await hashKey(made.key)));
    expect(made.id).toMatch(/^key_[0-9a-f]{24}$/);
    // A different key, a different id.
    expect(made.id).not.toBe(key.id);
  });

  it("judges a key this isolate has never seen with no D1 read in the worker", async () => {
    const { key } = await provision();
    const made = await createKey(key.key);
    // Its first request ever, with the worker's D1 down: no lookup of its id, its object reads the key itself.
    const res = await callWith(workerD1Down(), "/v1/whoami", { key: made.key });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ keyId: made.id });
  });

  it("refuses a made-up key of a known shape as invalid, and spends the address's failure budget", async () => {
    const { key } = await provision({ keyFormat: "plain" });
    // A plain-format key (no checksum to tell it is made up): the object its hash names finds no key.
    const madeUp = `${key.key.slice(0, -8)}${"0".repeat(8)}`;
    const statuses: number[] = [];
    // IP_FAILURE_RATE_LIMIT: 30 a minute.
    for (let i = 0; i < 31; i++)
      statuses.push((await callWith({}, "/v1/whoami", { key: madeUp, headers: { "CF-Connecting-IP": "198.51.100.77" } })).status);
    expect(new Set(statuses.slice(0, 30))).toEqual(new Set([401]));
    expect(statuses[30]).toBe(429);
  });

  it("still finds a key issued before ids came from hashes, under its own id, and a change to it is in force", async () => {
    const { key } = await provision();
    const made = await createKey(key.key, { name: "issued before" });
    // As such a key is stored: a random id, not the one its hash works out to.
    const legacyId = `key_${"ab".repeat(12)}`;
    await env.DB.prepare("UPDATE api_keys SET id = ? WHERE id = ?").bind(legacyId, made.id).run();
    const res = await call("/v1/whoami", { key: made.key });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ keyId: legacyId });
    // Its own object counts it, and a revocation through its id is in force at once.
    expect((await call("/v1/whoami", { key: made.key })).status).toBe(200);
    expect((await call(`/v1/api-keys/${legacyId}`, { method: "DELETE", key: key.key })).status).toBe(200);
    await expectProblem(await call("/v1/whoami", { key: made.key }), 401, "key_revoked");
    expect(await rows("SELECT revoked_at IS NOT NULL AS revoked FROM api_keys WHERE id = ?", legacyId)).toEqual([{ revoked: 1 }]);
  });
});
