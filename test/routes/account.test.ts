import { describe, expect, it } from "vitest";
import { call, createKey, createUser, memberWithKey, provision } from "../helpers";
import { lastUseSent } from "../usage/seed";

describe("GET /v1/account", () => {
  it("shows the account, its active keys, the last use of any key and recent activity", async () => {
    const { account, admin, key } = await provision({ keyPrefix: "rm" });
    const extra = await createKey(key.key, { name: "extra" });
    await call(`/v1/api-keys/${extra.id}`, { method: "DELETE", key: key.key });
    const rotated = await (await call(`/v1/api-keys/${key.id}/rotate`, { key: key.key, body: {} })).json<{ key: string; id: string }>();
    const user = await createUser(rotated.key, "member");
    await call(`/v1/users/${user.id}`, { method: "PATCH", key: rotated.key, body: { role: "admin" } });

    // A key's last use reaches D1 with its usage (the object's alarm, through the queue).
    await lastUseSent(rotated.id);
    const res = await call("/v1/account", { key: rotated.key });
    expect(res.status).toBe(200);
    const body = await res.json<{ lastUsedAt: string; recentEvents: { action: string; target: string }[] }>();
    expect(body).toMatchObject({ id: account.id, name: expect.any(String), keyPrefix: "rm", membersCanCreateKeys: false, activeKeys: 1 });
    expect(body.lastUsedAt).toMatch(/^\d{4}-\d{2}-\d{2}T.*Z$/);
    const actions = body.recentEvents.map((e) => `${e.action} ${e.target}`);
    expect(actions).toEqual(
      expect.arrayContaining([
        `account.created ${account.id}`,
        `key.created ${extra.id}`,
        `key.revoked ${extra.id}`,
        `key.rotated ${key.id}`,
        `key.created ${rotated.id}`,
        `user.created ${user.id}`,
        `user.updated ${user.id}`,
      ]),
    );
    expect(body.recentEvents.find((e) => e.action === "user.updated")).toEqual({
      id: expect.stringMatching(/^evt_/),
      actor: admin.id,
      action: "user.updated",
      target: user.id,
      createdAt: expect.any(String),
      requestId: expect.stringMatching(/^req_/),
      detail: null,
    });
    const text = JSON.stringify(body);
    expect(text).not.toContain(rotated.key);
    expect(text).not.toContain("hash");
  });

  it("shows a member only their own actions and their own keys' events", async () => {
    const { key } = await provision({ membersCanCreateKeys: true });
    const member = await memberWithKey(key.key);
    const adminsKey = await createKey(key.key, { name: "admin's" });
    const own = await createKey(member.key.key, { name: "mine" });
    await call(`/v1/api-keys/${own.id}`, { method: "DELETE", key: member.key.key });

    const res = await call("/v1/account", { key: member.key.key });
    const events = (await res.json<{ recentEvents: { action: string; target: string; actor: string }[] }>()).recentEvents;
    expect(events.map((e) => `${e.action} ${e.target}`).sort()).toEqual(
      [`key.created ${member.key.id}`, `key.created ${own.id}`, `key.revoked ${own.id}`].sort(),
    );
    expect(JSON.stringify(events)).not.toContain(adminsKey.id);
  });
});
