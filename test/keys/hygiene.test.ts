import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, callWith, createKey, expectProblem, memberWithKey, provision } from "../helpers";
import { lastUseSent } from "../usage/seed";

type Category = { count: number; keyIds: string[] };
type Hygiene = {
  activeKeys: number;
  neverUsed: Category;
  idle90d: Category;
  noExpiry: Category;
  olderThanYear: Category;
  leakedActive: Category;
};

const DAY = 86_400_000;
const ago = (days: number) => new Date(Date.now() - days * DAY).toISOString();

/** Ages a key's row as time would have (its creation, last use), without a use of the key. */
async function age(keyId: string, columns: { created_at?: string; last_used_at?: string | null }): Promise<void> {
  for (const [column, value] of Object.entries(columns)) {
    await env.DB.prepare(`UPDATE api_keys SET ${column} = ? WHERE id = ?`).bind(value, keyId).run();
  }
}

async function hygiene(key: string): Promise<Hygiene> {
  const res = await call("/v1/account/key-hygiene", { key });
  expect(res.status, await res.clone().text()).toBe(200);
  return res.json();
}

/** A category without the calling key, whose own last use the request itself may write at any moment. */
const without = (c: Category, caller: string) => ({
  count: c.count - (c.keyIds.includes(caller) ? 1 : 0),
  keyIds: c.keyIds.filter((id) => id !== caller),
});

describe("GET /v1/account/key-hygiene", () => {
  it("counts and names the active keys never used, idle for 90 days, without expiry, older than a year, and reported leaked", async () => {
    const { key } = await provision();
    const fresh = await createKey(key.key, { name: "fresh", expiresAt: new Date(Date.now() + 30 * DAY).toISOString() });
    const idle = await createKey(key.key, { name: "idle" });
    const ancient = await createKey(key.key, { name: "ancient", expiresAt: new Date(Date.now() + 30 * DAY).toISOString() });
    const busy = await createKey(key.key, { name: "busy", expiresAt: new Date(Date.now() + 30 * DAY).toISOString() });
    const leaked = await createKey(key.key, { name: "leaked", expiresAt: new Date(Date.now() + 30 * DAY).toISOString() });
    const revoked = await createKey(key.key, { name: "revoked" });
    await age(idle.id, { created_at: ago(200), last_used_at: ago(91) });
    await age(ancient.id, { created_at: ago(400), last_used_at: ago(2) });
    await age(busy.id, { created_at: ago(100), last_used_at: ago(89) });
    await age(leaked.id, { last_used_at: ago(1) });
    await age(revoked.id, { created_at: ago(800) });
    expect((await callWith({}, "/v1/leaks", { body: { key: leaked.key }, headers: { "CF-Connecting-IP": "203.0.113.40" } })).status).toBe(
      202,
    );
    expect((await call(`/v1/api-keys/${revoked.id}`, { method: "DELETE", key: key.key })).status).toBe(200);

    const h = await hygiene(key.key);
    expect(h.activeKeys).toBe(6);
    expect(without(h.neverUsed, key.id)).toEqual({ count: 1, keyIds: [fresh.id] });
    expect(h.idle90d).toEqual({ count: 1, keyIds: [idle.id] });
    // Oldest first: the provisioned key was created before the idle one was (its created_at moved 200 days back).
    expect(h.noExpiry).toEqual({ count: 2, keyIds: [idle.id, key.id] });
    expect(h.olderThanYear).toEqual({ count: 1, keyIds: [ancient.id] });
    expect(h.leakedActive).toEqual({ count: 1, keyIds: [leaked.id] });
    // Nothing of a revoked key, however old or unused.
    expect(JSON.stringify(h)).not.toContain(revoked.id);
  });

  it("shows a member their own keys only; an admin the whole account; a scoped key is refused", async () => {
    const { key } = await provision();
    const member = await memberWithKey(key.key);
    const theirs = await createKey(key.key, { name: "member's", ownerId: member.user.id });
    const admins = await createKey(key.key, { name: "admin's" });
    await age(theirs.id, { created_at: ago(500) });
    await age(admins.id, { created_at: ago(600) });

    const mine = await hygiene(member.key.key);
    expect(mine.activeKeys).toBe(2);
    expect(mine.olderThanYear).toEqual({ count: 1, keyIds: [theirs.id] });
    expect(JSON.stringify(mine)).not.toContain(admins.id);
    expect(JSON.stringify(mine)).not.toContain(key.id);

    const all = await hygiene(key.key);
    expect(all.activeKeys).toBe(4);
    expect(all.olderThanYear).toEqual({ count: 2, keyIds: [admins.id, theirs.id] });

    const scoped = await createKey(key.key, { name: "scoped", mailboxIds: ["mbx_1"] });
    await expectProblem(await call("/v1/account/key-hygiene", { key: scoped.key }), 403, "insufficient_scope");
  });

  it("counts every key of a category but lists at most 100 ids, the oldest first", async () => {
    const { account, key } = await provision();
    // 105 never-used keys, written straight into D1 (creating them through the API would take as long as a test may).
    const stmts = Array.from({ length: 105 }, (_, i) =>
      env.DB.prepare(
        "INSERT INTO api_keys (id, account_id, owner_id, created_by, name, prefix, start, hash, scopes, created_at) SELECT ?, account_id, owner_id, owner_id, ?, prefix, ?, ?, '[\"*\"]', ? FROM api_keys WHERE id = ?",
      ).bind(
        `key_bulk${String(i).padStart(4, "0")}${account.id.slice(-8)}`,
        `bulk ${i}`,
        "00000000",
        `${account.id}-${i}`,
        new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
        key.id,
      ),
    );
    await env.DB.batch(stmts);
    // The admin's key is used (and D1 has it), so it is none of them.
    await call("/v1/whoami", { key: key.key });
    await lastUseSent(key.id);
    const h = await hygiene(key.key);
    const neverUsed = without(h.neverUsed, key.id);
    expect(neverUsed.count).toBe(105);
    expect(h.neverUsed.keyIds).toHaveLength(100);
    expect(neverUsed.keyIds[0]).toBe(`key_bulk0000${account.id.slice(-8)}`);
    expect(neverUsed.keyIds).not.toContain(`key_bulk0104${account.id.slice(-8)}`);
  });
});
