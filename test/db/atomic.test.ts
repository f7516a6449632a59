import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, createKey, expectProblem, provision, rows } from "../helpers";

// Storage is isolated per test file, so breaking the audit table here cannot affect other files.
describe("writes are all or nothing", () => {
  it("a key whose audit event cannot be written is not created", async () => {
    const { account, key } = await provision();
    const second = await createKey(key.key);
    await env.DB.exec("DROP TABLE audit_events");
    const res = await call("/v1/api-keys", { key: key.key, body: { name: "half" } });
    await expectProblem(res, 500, "internal_error");
    expect(await rows("SELECT id FROM api_keys WHERE account_id = ? AND name = 'half'", account.id)).toEqual([]);
    // The revocation is guarded and its event conditional: neither lands without the other.
    await expectProblem(await call(`/v1/api-keys/${second.id}`, { method: "DELETE", key: key.key }), 500, "internal_error");
    expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", second.id)).toEqual([{ revoked_at: null }]);
    await expectProblem(await call(`/v1/api-keys/${second.id}/rotate`, { key: key.key, body: {} }), 500, "internal_error");
    expect(await rows("SELECT id FROM api_keys WHERE rotated_from = ?", second.id)).toEqual([]);
    expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", second.id)).toEqual([{ revoked_at: null }]);
  });
});
