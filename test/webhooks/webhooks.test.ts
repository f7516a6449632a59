import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { makeDeps } from "../../src/platform/deps";
import { attempt, DELIVERY_TIMEOUT_MS, RETRY_SCHEDULE_S } from "../../src/webhooks/deliver";
import { faultyDatabase, faultyQueue } from "../faults";
import { call, callWith, createKey, expectProblem, memberWithKey, provision, rows } from "../helpers";
// The receiver's own verification, written from the specification with Node's crypto, none of Keygate's code.
import { verifyDelivery } from "../receiver.mjs";

type Received = {
  id: string;
  timestamp: string;
  signature: string;
  body: { type: string; timestamp: string; data: Record<string, unknown> };
  verdict: string;
  status: number;
  contentType: string;
};
type Created = { id: string; secret: string; url: string; events: string[] };

const local = { ALLOW_HTTP: "true" };
let receivers = 0;

/** A fresh endpoint of the test receiver, configured with `config` (its secrets, how it fails). */
async function receiver(config: Record<string, unknown> = {}) {
  receivers += 1;
  const url = `${env.TEST_UPSTREAM_URL}/hooks/r${receivers}-${crypto.randomUUID().slice(0, 8)}`;
  const configure = (c: Record<string, unknown>) => fetch(`${url}/config`, { method: "POST", body: JSON.stringify(c) });
  await configure(config);
  const received = async () => (await (await fetch(`${url}/received`)).json()) as Received[];
  return { url, configure, received };
}

/** An account, its admin key, and an endpoint for `events` whose secret the receiver knows. */
async function endpoint(events: string[] = ["*"], config: Record<string, unknown> = {}) {
  const provisioned = await provision();
  const r = await receiver(config);
  const res = await callWith(local, "/v1/webhooks", { key: provisioned.key.key, body: { url: r.url, events } });
  expect(res.status, await res.clone().text()).toBe(201);
  const webhook = (await res.json()) as Created;
  await r.configure({ secrets: [webhook.secret] });
  return { ...provisioned, r, webhook };
}

const poll = <T>(fn: () => Promise<T>) => expect.poll(fn, { timeout: 10_000, interval: 100 });
const deps = () => makeDeps(env, { waitUntil: () => {} });

describe("webhook endpoints", () => {
  it("are created with a secret shown once, listed and read without it, changed and deleted, admins only", async () => {
    const { key } = await provision();
    const r = await receiver();
    const res = await callWith(local, "/v1/webhooks", {
      key: key.key,
      body: { url: r.url, events: ["api_key.revoked", "api_key.leaked", "api_key.revoked"], description: "billing" },
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("Cache-Control")).toBe("no-store");
    const created = (await res.json()) as Created;
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(atob(created.secret.slice(6))).toHaveLength(32);
    expect(created).toMatchObject({ url: r.url, events: ["api_key.revoked", "api_key.leaked"], disabled: false });

    const list = await (await call("/v1/webhooks", { key: key.key })).json<{ data: Record<string, unknown>[] }>();
    expect(list.data).toHaveLength(1);
    expect(JSON.stringify(list)).not.toContain(created.secret);
    const read = await (await call(`/v1/webhooks/${created.id}`, { key: key.key })).json<Record<string, unknown>>();
    expect(read).not.toHaveProperty("secret");

    const patched = await callWith(local, `/v1/webhooks/${created.id}`, {
      method: "PATCH",
      key: key.key,
      body: { events: ["*"], disabled: true },
    });
    expect(await patched.json()).toMatchObject({ events: ["*"], disabled: true, disabledReason: "by_admin" });
    const enabled = await call(`/v1/webhooks/${created.id}`, { method: "PATCH", key: key.key, body: { disabled: false } });
    expect(await enabled.json()).toMatchObject({ disabled: false, disabledReason: null });

    const member = await memberWithKey(key.key);
    await expectProblem(await call("/v1/webhooks", { key: member.key.key }), 403, "insufficient_role");
    const other = await provision();
    await expectProblem(await call(`/v1/webhooks/${created.id}`, { key: other.key.key }), 404, "not_found");

    expect((await call(`/v1/webhooks/${created.id}`, { method: "DELETE", key: key.key })).status).toBe(204);
    await expectProblem(await call(`/v1/webhooks/${created.id}`, { key: key.key }), 404, "not_found");
    const audited = await rows<{ action: string }>(
      "SELECT action FROM audit_events WHERE target = ? ORDER BY created_at, action",
      created.id,
    );
    expect(audited.map((a) => a.action).sort()).toEqual(["webhook.created", "webhook.deleted", "webhook.updated", "webhook.updated"]);
  });

  it("refuses URLs it may not POST to: plain http without ALLOW_HTTP, credentials, Keygate's own origin, and unknown events", async () => {
    const { key } = await provision();
    const create = (body: unknown, overrides = {}) => callWith(overrides, "/v1/webhooks", { key: key.key, body });
    const cases: [unknown, Record<string, string>, string, string][] = [
      [{ url: "http://hooks.example.com/x", events: ["*"] }, {}, "url", "must be an https URL"],
      [{ url: "https://user:pw@hooks.example.com/x", events: ["*"] }, local, "url", "must not carry credentials"],
      [{ url: "https://keygate.test/v1/leaks", events: ["*"] }, local, "url", "must not be Keygate's own origin"],
      [{ url: "ftp://hooks.example.com", events: ["*"] }, local, "url", "must be an https URL"],
      [{ url: "https://hooks.example.com", events: ["api_key.eaten"] }, local, "events[0]", ""],
      [{ url: "https://hooks.example.com", events: [] }, local, "events", ""],
    ];
    for (const [body, overrides, field, message] of cases) {
      const problem = await expectProblem(await create(body, overrides), 400, "invalid_request");
      const errors = problem.errors as { field: string; message: string }[];
      expect(errors.map((e) => e.field)).toContain(field);
      if (message) expect(errors.find((e) => e.field === field)?.message).toBe(message);
    }
    expect(await rows("SELECT id FROM webhooks WHERE account_id = (SELECT account_id FROM api_keys WHERE id = ?)", key.id)).toEqual([]);
  });
});

describe("deliveries", () => {
  it("an event reaches the endpoint through the queue within seconds, signed as the specification says, and carries no secret", async () => {
    const { account, key, r, webhook } = await endpoint(["api_key.created"]);
    const started = Date.now();
    const created = await createKey(key.key, { name: "ci" });
    await poll(async () => (await r.received()).length).toBe(1);
    expect(Date.now() - started).toBeLessThan(5000);
    const [delivery] = await r.received();
    expect(delivery?.verdict).toBe("ok");
    expect(delivery?.contentType).toBe("application/json");
    expect(delivery?.signature).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    expect(delivery?.body).toMatchObject({
      type: "api_key.created",
      data: { key: { id: created.id, name: "ci", prefix: created.prefix, start: created.start }, actor: expect.any(String) },
    });
    expect(JSON.stringify(delivery)).not.toContain(created.key);
    // The event is the outbox row written with the key; its id is every delivery's webhook-id.
    const [event] = await rows<{ id: string; type: string }>(
      "SELECT id, type FROM webhook_events WHERE account_id = ? AND type = 'api_key.created'",
      account.id,
    );
    expect(delivery?.id).toBe(event?.id);
    // Only what the endpoint asked for: a revocation is not sent to it.
    expect((await call(`/v1/api-keys/${created.id}`, { method: "DELETE", key: key.key })).status).toBe(200);
    await poll(
      async () =>
        (
          await rows(
            "SELECT id FROM webhook_events WHERE account_id = ? AND type = 'api_key.revoked' AND queued_at IS NOT NULL",
            account.id,
          )
        ).length,
    ).toBe(1);
    const deliveries = await (await call(`/v1/webhooks/${webhook.id}/deliveries`, { key: key.key })).json<{
      data: Record<string, unknown>[];
    }>();
    expect(deliveries.data).toEqual([
      expect.objectContaining({
        eventId: event?.id,
        eventType: "api_key.created",
        status: "succeeded",
        attempts: [expect.objectContaining({ statusCode: 204, error: null })],
      }),
    ]);
  });

  it("a receiver rejects a tampered body, an old timestamp and a wrong secret", async () => {
    const { key, r, webhook } = await endpoint();
    const res = await call(`/v1/webhooks/${webhook.id}/test`, { method: "POST", key: key.key });
    expect(res.status).toBe(202);
    await poll(async () => (await r.received()).length).toBe(1);
    const [d] = (await r.received()) as [Received];
    expect(d.body.type).toBe("webhook.test");
    const body = JSON.stringify(d.body);
    const headers = { id: d.id, timestamp: d.timestamp, signature: d.signature };
    expect(verifyDelivery({ ...headers, body }, [webhook.secret])).toBe("ok");
    expect(verifyDelivery({ ...headers, body: body.replace("webhook.test", "webhook.tost") }, [webhook.secret])).toBe("no valid signature");
    expect(verifyDelivery({ ...headers, body }, [webhook.secret], null, Number(d.timestamp) + 301)).toBe("timestamp out of tolerance");
    expect(verifyDelivery({ ...headers, body }, [`whsec_${btoa("x".repeat(32))}`])).toBe("no valid signature");
  });

  it("a rotated secret signs beside the new one for a day: a receiver with either verifies", async () => {
    const { key, r, webhook } = await endpoint();
    const rotated = await (await call(`/v1/webhooks/${webhook.id}/secret`, { method: "POST", key: key.key })).json<Created>();
    expect(rotated.secret).not.toBe(webhook.secret);
    await r.configure({ secrets: [rotated.secret] });
    expect((await call(`/v1/webhooks/${webhook.id}/test`, { method: "POST", key: key.key })).status).toBe(202);
    await poll(async () => (await r.received()).length).toBe(1);
    const [d] = (await r.received()) as [Received];
    expect(d.verdict).toBe("ok");
    expect(d.signature.split(" ")).toHaveLength(2);
    const headers = { id: d.id, timestamp: d.timestamp, signature: d.signature, body: JSON.stringify(d.body) };
    expect(verifyDelivery(headers, [webhook.secret])).toBe("ok");
  });

  it("with ed25519, also signs with Keygate's published key: a receiver holding no secret verifies", async () => {
    const { key } = await provision();
    const r = await receiver();
    const res = await callWith(local, "/v1/webhooks", { key: key.key, body: { url: r.url, events: ["webhook.test"], ed25519: true } });
    const webhook = (await res.json()) as Created & { ed25519: boolean };
    expect(webhook.ed25519).toBe(true);
    const jwks = await (await call("/.well-known/jwks.json")).json<{ keys: { kty: string; kid: string }[] }>();
    const published = jwks.keys.find((k) => k.kty === "OKP");
    expect(published).toMatchObject({ kid: "test-webhooks", crv: "Ed25519", alg: "EdDSA", use: "sig" });
    expect(published).not.toHaveProperty("d");
    await r.configure({ secrets: [], publicKey: published });
    await call(`/v1/webhooks/${webhook.id}/test`, { method: "POST", key: key.key });
    await poll(async () => (await r.received()).map((d) => d.verdict)).toEqual(["ok"]);
    const [d] = (await r.received()) as [Received];
    expect(d.signature.split(" ").map((s) => s.split(",")[0])).toEqual(["v1", "v1a"]);
    // Without the deployment's key, an endpoint cannot ask for it.
    const refused = await callWith({ ...local, WEBHOOK_SIGNING_KEY: "" }, "/v1/webhooks", {
      key: key.key,
      body: { url: r.url, events: ["*"], ed25519: true },
    });
    expect(((await expectProblem(refused, 400, "invalid_request")).errors as { field: string }[])[0]?.field).toBe("ed25519");
  });

  it("an endpoint that fails 3 times then succeeds: one event, 4 attempts, the same webhook-id, each attempt shown", async () => {
    const { key, r, webhook } = await endpoint(["*"], {});
    await r.configure({ fail: 3, status: 503 });
    await createKey(key.key);
    // The queue makes the first attempt at once; the schedule's next ones come after 5 s, 5 min and 30 min, so they
    // are made here, each as the queue would make it (whichever of the two claims an attempt makes it; the other's
    // copy does nothing).
    // An attempt is claimed (`attempts`) before it is sent and recorded once answered: wait for its record.
    const firstAttempt = () =>
      rows<{ id: string; next_attempt_at: string; at: string }>(
        "SELECT d.id, d.next_attempt_at, a.at FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id WHERE d.webhook_id = ? ORDER BY a.at LIMIT 1",
        webhook.id,
      );
    await poll(async () => (await firstAttempt()).length).toBe(1);
    const [first] = await firstAttempt();
    const id = first?.id as string;
    // The schedule's first wait: 5 s after the first attempt (a later attempt may have moved it on since).
    expect(Date.parse(first?.next_attempt_at as string) - Date.parse(first?.at as string)).toBeGreaterThanOrEqual(5000);
    for (;;) {
      const [d] = await rows<{ attempts: number; status: string }>("SELECT attempts, status FROM webhook_deliveries WHERE id = ?", id);
      if (d?.status !== "pending") break;
      await attempt(deps(), id, d.attempts);
    }
    const received = await r.received();
    expect(received.map((d) => d.status)).toEqual([503, 503, 503, 204]);
    expect(new Set(received.map((d) => d.id)).size).toBe(1);
    expect(received.every((d) => d.verdict === "ok")).toBe(true);
    const deliveries = await (await call(`/v1/webhooks/${webhook.id}/deliveries`, { key: key.key })).json<{
      data: { status: string; attempts: { statusCode: number }[] }[];
    }>();
    expect(deliveries.data[0]?.status).toBe("succeeded");
    expect(deliveries.data[0]?.attempts.map((a) => a.statusCode)).toEqual([503, 503, 503, 204]);
    // Its copy of attempt 1 from the queue, arriving now, sends nothing more.
    await attempt(deps(), id, 1);
    expect(await r.received()).toHaveLength(4);
    // Sent again by hand: one more attempt of the same event, the same webhook-id.
    const retried = await call(`/v1/webhooks/${webhook.id}/deliveries/${id}/retry`, { method: "POST", key: key.key });
    expect(retried.status).toBe(202);
    expect(await retried.json()).toEqual({ id, status: "pending" });
    await poll(async () => (await r.received()).length).toBe(5);
    expect(new Set((await r.received()).map((d) => d.id)).size).toBe(1);
    await poll(async () => (await rows<{ status: string }>("SELECT status FROM webhook_deliveries WHERE id = ?", id))[0]?.status).toBe(
      "succeeded",
    );
    await expectProblem(
      await call(`/v1/webhooks/${webhook.id}/deliveries/dlv_nothing/retry`, { method: "POST", key: key.key }),
      404,
      "not_found",
    );
    const [hook] = await rows<{ failing_since: string | null }>("SELECT failing_since FROM webhooks WHERE id = ?", webhook.id);
    expect(hook?.failing_since).toBeNull();
  });

  it("honours Retry-After, does not follow redirects, and marks a delivery failed when the schedule is spent", async () => {
    const { key, r, webhook } = await endpoint();
    await r.configure({ fail: 100, status: 429, retryAfter: 600 });
    await createKey(key.key);
    await poll(
      async () =>
        (
          await rows(
            "SELECT id FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = ?)",
            webhook.id,
          )
        ).length,
    ).toBe(1);
    const [d] = await rows<{ id: string; next_attempt_at: string; attempts: number }>(
      "SELECT id, next_attempt_at, attempts FROM webhook_deliveries WHERE webhook_id = ?",
      webhook.id,
    );
    // 600 s asked for, rather than the schedule's 5 s.
    expect(Date.parse(d?.next_attempt_at as string) - Date.now()).toBeGreaterThan(590_000);
    // The last attempt of the schedule fails: the delivery is failed, nothing more is scheduled.
    const last = RETRY_SCHEDULE_S.length;
    await env.DB.prepare("UPDATE webhook_deliveries SET attempts = ? WHERE id = ?").bind(last, d?.id).run();
    await attempt(deps(), d?.id as string, last);
    const [after] = await rows<{ status: string; next_attempt_at: string | null }>(
      "SELECT status, next_attempt_at FROM webhook_deliveries WHERE id = ?",
      d?.id,
    );
    expect(after).toEqual({ status: "failed", next_attempt_at: null });

    // A redirect is an answer, not a way elsewhere: a failure.
    const moved = await callWith(local, "/v1/webhooks", {
      key: key.key,
      body: { url: `${env.TEST_UPSTREAM_URL}/redirect/x`, events: ["webhook.test"] },
    });
    const redirecting = (await moved.json()) as Created;
    await call(`/v1/webhooks/${redirecting.id}/test`, { method: "POST", key: key.key });
    await poll(
      async () =>
        (
          await rows<{ status_code: number }>(
            "SELECT status_code FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = ?)",
            redirecting.id,
          )
        )[0]?.status_code,
    ).toBe(302);
    const [pending] = await rows<{ status: string }>("SELECT status FROM webhook_deliveries WHERE webhook_id = ?", redirecting.id);
    expect(pending?.status).toBe("pending");
  });

  it("an answer later than 15 s is a failed attempt (timeout), retried; a 2xx within 15 s, however slow, is success", async () => {
    const { key, r, webhook } = await endpoint(["api_key.created"], {});
    await r.configure({ delayMs: DELIVERY_TIMEOUT_MS + 1500 });
    await createKey(key.key);
    const attempts = () =>
      rows<{ status_code: number | null; error: string | null; duration_ms: number }>(
        "SELECT status_code, error, duration_ms FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = ?) ORDER BY at",
        webhook.id,
      );
    await expect.poll(async () => (await attempts()).length, { timeout: DELIVERY_TIMEOUT_MS + 10_000, interval: 250 }).toBe(1);
    const [timedOut] = await attempts();
    expect(timedOut).toMatchObject({ status_code: null, error: "timeout" });
    expect(timedOut?.duration_ms).toBeGreaterThanOrEqual(DELIVERY_TIMEOUT_MS - 50);
    expect(timedOut?.duration_ms).toBeLessThan(DELIVERY_TIMEOUT_MS + 1500);
    const [d] = await rows<{ id: string; status: string; attempts: number; next_attempt_at: string | null }>(
      "SELECT id, status, attempts, next_attempt_at FROM webhook_deliveries WHERE webhook_id = ?",
      webhook.id,
    );
    expect(d?.status).toBe("pending");
    expect(d?.next_attempt_at).not.toBeNull();
    // The next attempt is answered slowly but in time: success.
    await r.configure({ delayMs: 2000 });
    await attempt(deps(), d?.id as string, d?.attempts as number);
    expect((await attempts()).map((a) => a.status_code)).toEqual([null, 204]);
    expect((await rows<{ status: string }>("SELECT status FROM webhook_deliveries WHERE id = ?", d?.id))[0]?.status).toBe("succeeded");
    // Both reached the endpoint (the first after Keygate gave up on it), with the same webhook-id: at least once.
    const received = await r.received();
    expect(received).toHaveLength(2);
    expect(new Set(received.map((x) => x.id)).size).toBe(1);
  }, 60_000);

  it("an endpoint failing for a day is disabled, audited, and the account's other endpoints are told; 410 disables at once", async () => {
    const { account, key, r, webhook } = await endpoint(["api_key.created"]);
    const watcher = await receiver();
    const res = await callWith(local, "/v1/webhooks", { key: key.key, body: { url: watcher.url, events: ["webhook.disabled"] } });
    const other = (await res.json()) as Created;
    await watcher.configure({ secrets: [other.secret] });
    await r.configure({ fail: 100, status: 500 });
    await createKey(key.key);
    await poll(
      async () =>
        (await rows<{ attempts: number }>("SELECT attempts FROM webhook_deliveries WHERE webhook_id = ?", webhook.id))[0]?.attempts,
    ).toBe(1);
    const [d] = await rows<{ id: string }>("SELECT id FROM webhook_deliveries WHERE webhook_id = ?", webhook.id);
    // It has been failing since 25 hours ago (the clock moved on).
    await env.DB.prepare("UPDATE webhooks SET failing_since = ? WHERE id = ?")
      .bind(new Date(Date.now() - 25 * 3_600_000).toISOString(), webhook.id)
      .run();
    await attempt(deps(), d?.id as string, 1);
    const read = await (await call(`/v1/webhooks/${webhook.id}`, { key: key.key })).json();
    expect(read).toMatchObject({ disabled: true, disabledReason: "failing" });
    expect(await rows("SELECT actor FROM audit_events WHERE target = ? AND action = 'webhook.disabled'", webhook.id)).toEqual([
      { actor: "keygate" },
    ]);
    // Its delivery is given up (dead-lettered): failed, nothing more scheduled.
    expect(await rows("SELECT status, next_attempt_at FROM webhook_deliveries WHERE id = ?", d?.id)).toEqual([
      { status: "failed", next_attempt_at: null },
    ]);
    await poll(async () => (await watcher.received()).map((x) => x.body.type)).toEqual(["webhook.disabled"]);
    expect((await watcher.received())[0]?.body.data).toMatchObject({ webhookId: webhook.id, reason: "failing" });
    // Nothing more is sent to a disabled endpoint.
    await createKey(key.key);
    await poll(
      async () =>
        (
          await rows(
            "SELECT id FROM webhook_events WHERE account_id = ? AND type = 'api_key.created' AND queued_at IS NOT NULL",
            account.id,
          )
        ).length,
    ).toBe(2);
    expect(await rows("SELECT id FROM webhook_deliveries WHERE webhook_id = ?", webhook.id)).toHaveLength(1);

    await watcher.configure({ fail: 1, status: 410 });
    await call(`/v1/webhooks/${other.id}/test`, { method: "POST", key: key.key });
    await poll(
      async () => (await (await call(`/v1/webhooks/${other.id}`, { key: key.key })).json<{ disabledReason: string }>()).disabledReason,
    ).toBe("gone");
  });
});

describe("no change without its event, no event without its change", () => {
  it("D1 failing while a key is created writes neither; the queue failing leaves the event for the sweep, which sends it", async () => {
    const { account, key, r } = await endpoint(["api_key.created"]);
    const down = faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: Network connection lost.") }, (sql) =>
      /insert into "api_keys"/i.test(sql),
    );
    await expectProblem(
      await callWith({ DB: down }, "/v1/api-keys", { key: key.key, body: { name: "lost" } }),
      503,
      "database_unavailable",
    );
    expect(await rows("SELECT id FROM api_keys WHERE name = 'lost'")).toEqual([]);
    expect(await rows("SELECT id FROM webhook_events WHERE account_id = ? AND type = 'api_key.created'", account.id)).toEqual([]);

    const queueDown = faultyQueue(env.EVENTS, { kind: "throw" });
    const created = await callWith({ EVENTS: queueDown }, "/v1/api-keys", { key: key.key, body: { name: "kept" } });
    expect(created.status).toBe(201);
    const [event] = await rows<{ id: string; queued_at: string | null }>(
      "SELECT id, queued_at FROM webhook_events WHERE account_id = ? AND type = 'api_key.created'",
      account.id,
    );
    expect(event?.queued_at).toBeNull();
    // The sweep takes events older than 30 s: this one is made older, then the cron runs.
    await env.DB.prepare("UPDATE webhook_events SET created_at = ? WHERE id = ?")
      .bind(new Date(Date.now() - 60_000).toISOString(), event?.id)
      .run();
    const ctx = createExecutionContext();
    await worker.scheduled({ cron: "* * * * *", scheduledTime: Date.now(), noRetry() {} } as ScheduledController, env, ctx);
    await waitOnExecutionContext(ctx);
    await poll(async () => (await r.received()).map((d) => d.id)).toEqual([event?.id]);
  });
});
