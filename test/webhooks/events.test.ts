import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { publishEvents } from "../../src/platform/db/events";
import { makeDeps } from "../../src/platform/deps";
import { MAX_WEBHOOKS } from "../../src/webhooks/schemas";
import { faultyObjects } from "../faults";
import { call, callWith, createKey, createUser, expectProblem, provision, rows } from "../helpers";

type Row = { type: string; data: string };
const told = async (accountId: string, type: string) =>
  (await rows<Row>("SELECT type, data FROM webhook_events WHERE account_id = ? AND type = ?", accountId, type)).map((e) =>
    JSON.parse(e.data),
  );

describe("the events a change writes with it", () => {
  it("api_key.rotated names the key and its successor, and a rotation that is undone writes none", async () => {
    const { account, key } = await provision();
    const old = await createKey(key.key, { name: "ci" });
    // Undone: its old key's object could not be told, so nothing changed, and nothing is told.
    const broken = { KEYS: faultyObjects(env.KEYS, { reload: { kind: "throw" } }), RATE_LIMIT_TIMEOUT_MS: "100" };
    await expectProblem(await callWith(broken, `/v1/api-keys/${old.id}/rotate`, { key: key.key, body: {} }), 503, "change_pending");
    expect(await told(account.id, "api_key.rotated")).toEqual([]);

    const res = await callWith({}, `/v1/api-keys/${old.id}/rotate`, { key: key.key, body: { gracePeriodSeconds: 60 } });
    const successor = await res.json<{ id: string; key: string }>();
    const [rotated] = await told(account.id, "api_key.rotated");
    expect(rotated).toMatchObject({ key: { id: old.id, name: "ci", revokedAt: expect.any(String) }, successor: { id: successor.id } });
    expect(JSON.stringify(rotated)).not.toContain(successor.key);
    expect(JSON.stringify(rotated)).not.toContain(old.key);
  });

  it("two revocations racing write one api_key.revoked", async () => {
    const { account, key } = await provision();
    const victim = await createKey(key.key);
    const answers = await Promise.all([0, 1].map(() => call(`/v1/api-keys/${victim.id}`, { method: "DELETE", key: key.key })));
    expect(answers.map((r) => r.status)).toEqual([200, 200]);
    expect((await told(account.id, "api_key.revoked")).map((e) => e.key.id)).toEqual([victim.id]);
  });

  it("user.invited on creation and on a new invitation (never its token); user.disabled once, when it disables", async () => {
    const { account, key } = await provision();
    const person = await createUser(key.key, "member");
    const again = await call(`/v1/users/${person.id}/invitation`, { method: "POST", key: key.key });
    const { token } = await again.json<{ token: string }>();
    const invited = await told(account.id, "user.invited");
    expect(invited).toEqual([
      expect.objectContaining({ user: { id: person.id, email: person.email, role: "member" }, expiresAt: expect.any(String) }),
      expect.objectContaining({ user: { id: person.id, email: person.email, role: "member" } }),
    ]);
    expect(JSON.stringify(invited)).not.toContain(token);
    const disable = () => call(`/v1/users/${person.id}`, { method: "PATCH", key: key.key, body: { disabled: true } });
    expect((await disable()).status).toBe(200);
    expect((await disable()).status).toBe(200);
    expect((await told(account.id, "user.disabled")).map((e) => e.user.id)).toEqual([person.id]);
  });

  it(`an account keeps at most ${MAX_WEBHOOKS} endpoints`, async () => {
    const { account, key } = await provision();
    const add = (i: number) =>
      call("/v1/webhooks", { key: key.key, body: { url: `https://hooks.example.com/${i}`, events: ["webhook.test"] } });
    for (let i = 0; i < MAX_WEBHOOKS; i++) expect((await add(i)).status).toBe(201);
    await expectProblem(await add(MAX_WEBHOOKS), 400, "invalid_request");
    expect(await rows("SELECT count(*) AS n FROM webhooks WHERE account_id = ?", account.id)).toEqual([{ n: MAX_WEBHOOKS }]);
  });
});

describe("handing events to the queue", () => {
  it("hands on more events than one queue batch or one D1 statement takes, every one of them, and marks them queued", async () => {
    const { account } = await provision();
    const now = new Date();
    const ids = Array.from({ length: 150 }, (_, i) => `evt_many_${i}_${crypto.randomUUID().slice(0, 8)}`);
    await env.DB.batch(
      ids.map((id) =>
        env.DB.prepare("INSERT INTO webhook_events (id, account_id, type, data, created_at) VALUES (?, ?, 'webhook.test', '{}', ?)").bind(
          id,
          account.id,
          now.toISOString(),
        ),
      ),
    );
    expect(await publishEvents(makeDeps(env, { waitUntil: () => {} }), ids)).toBe(150);
    const queued = await rows<{ n: number }>(
      "SELECT count(*) AS n FROM webhook_events WHERE account_id = ? AND queued_at IS NOT NULL AND id LIKE 'evt_many_%'",
      account.id,
    );
    expect(queued).toEqual([{ n: 150 }]);
  });
});
