import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Principal } from "../../src/core/principal";
import { NewKey } from "../../src/keys/schemas";
import { createKey, getKey, listKeys, revokeKey } from "../../src/keys/service";
import { makeDeps } from "../../src/platform/deps";
import { call, expectProblem, provision, rows } from "../helpers";

describe("the key services outside a request", () => {
  it("create, list and revoke with Deps alone (as a queue consumer or a cron would): its clock and request id are what is stored", async () => {
    const { account, admin, key } = await provision();
    const principal: Principal = {
      accountId: account.id,
      keyId: key.id,
      userId: admin.id,
      role: "admin",
      scopes: ["*"],
      accountSlug: null,
      keyPrefix: account.keyPrefix,
      limits: [{ name: "default", limit: 100, windowSeconds: 60 }],
      credits: { key: null, account: null, user: null },
      shared: [],
    };
    // A clock of its own, a few seconds behind the real one, so what is stored can only have come from it.
    const at = new Date(Math.floor(Date.now() / 1000) * 1000 - 5000);
    const ctx = createExecutionContext();
    const deps = makeDeps(env, ctx, "req_nightly_job", () => at);

    const { raw, row } = await createKey(deps, principal, NewKey.parse({ name: "made by a job" }), ["name"]);
    expect(row.createdAt).toBe(at.toISOString());
    expect((await listKeys(deps, principal, { limit: 100, after: null })).rows.map((k) => k.id)).toContain(row.id);
    expect((await call("/v1/whoami", { key: raw })).status).toBe(200);

    const { key: revoked } = await revokeKey(deps, principal, row.id);
    expect(revoked.revokedAt).toBe(at.toISOString());
    expect((await getKey(deps, principal, row.id)).revokedAt).toBe(at.toISOString());
    await waitOnExecutionContext(ctx);
    expect(await rows("SELECT action, created_at, request_id FROM audit_events WHERE target = ? ORDER BY action", row.id)).toEqual([
      { action: "key.created", created_at: at.toISOString(), request_id: "req_nightly_job" },
      { action: "key.revoked", created_at: at.toISOString(), request_id: "req_nightly_job" },
    ]);
    // In force in the key's object before revokeKey answered.
    await expectProblem(await call("/v1/whoami", { key: raw }), 401, "key_revoked");
  });
});
