import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import type { EventMessage } from "../../src/platform/db/events";
import { makeDeps } from "../../src/platform/deps";
import { consume } from "../../src/webhooks/deliver";
import { faultyDatabase } from "../faults";
import { callWith, provision, rows } from "../helpers";

const local = { ALLOW_HTTP: "true" };

type Received = { id: string; status: number };

/** A fresh endpoint of the test receiver that knows no secret (it answers 400 to every delivery, which is still one). */
async function receiver(config: Record<string, unknown> = {}) {
  const url = `${env.TEST_UPSTREAM_URL}/hooks/attack19-${crypto.randomUUID().slice(0, 8)}`;
  const configure = (c: Record<string, unknown>) => fetch(`${url}/config`, { method: "POST", body: JSON.stringify(c) });
  await configure(config);
  const received = async () => (await (await fetch(`${url}/received`)).json()) as Received[];
  return { url, configure, received };
}

/** An account with one endpoint (its secret given to the receiver) and an event for it that nothing has handed on yet. */
async function endpointWithEvent() {
  const { account, key } = await provision();
  const r = await receiver();
  const res = await callWith(local, "/v1/webhooks", { key: key.key, body: { url: r.url, events: ["*"] } });
  expect(res.status).toBe(201);
  const webhook = (await res.json()) as { id: string; secret: string };
  await r.configure({ secrets: [webhook.secret] });
  // Written as the outbox writes it, not handed to the queue: only this test's messages carry it.
  const eventId = `msg_attack19_${crypto.randomUUID().replaceAll("-", "")}`;
  await env.DB.prepare("INSERT INTO webhook_events (id, account_id, type, data, created_at) VALUES (?, ?, 'webhook.test', ?, ?)")
    .bind(eventId, account.id, JSON.stringify({ webhookId: webhook.id }), new Date().toISOString())
    .run();
  return { account, key, r, webhook, eventId };
}

/** A queue message as the consumer gets it, recording whether it was acked or handed back for a retry. */
function message(body: EventMessage) {
  const seen = { acked: 0, retried: 0 };
  const m = {
    id: crypto.randomUUID(),
    timestamp: new Date(),
    body,
    attempts: 1,
    ack: () => {
      seen.acked += 1;
    },
    retry: () => {
      seen.retried += 1;
    },
  } as unknown as Message<EventMessage>;
  return { m, seen };
}

const depsWith = (DB: D1Database) => makeDeps({ ...env, DB, ALLOW_HTTP: "true" } as typeof env, { waitUntil: () => {} });

describe("attack19: webhook URLs", () => {
  it("refuses Keygate's own host in other spellings: a trailing dot, plain http", async () => {
    const { key } = await provision();
    const urls = ["https://keygate.test./v1/leaks", "http://keygate.test/v1/leaks"];
    const statuses: Record<string, number> = {};
    for (const url of urls) statuses[url] = (await callWith(local, "/v1/webhooks", { key: key.key, body: { url, events: ["*"] } })).status;
    expect(statuses).toEqual(Object.fromEntries(urls.map((u) => [u, 400])));
  });
});

describe("attack19: webhook URLs on the dashboard's host", () => {
  it("refuses DASHBOARD_HOST, which README says is routed to the same Worker", async () => {
    const { key } = await provision();
    const deployment = { ...local, PUBLIC_ORIGIN: "https://keygate.test", DASHBOARD_HOST: "dashboard.keygate.test" };
    const res = await callWith(deployment, "/v1/webhooks", {
      key: key.key,
      body: { url: "https://dashboard.keygate.test/login", events: ["*"] },
    });
    expect(res.status, await res.clone().text()).toBe(400);
  });
});

describe("attack19: concurrent changes of an endpoint", () => {
  it("concurrent rotations: one stands, and the audit log records only the rotations that stood", async () => {
    const { key } = await provision();
    const created = await callWith(local, "/v1/webhooks", { key: key.key, body: { url: "https://hooks.example.com/race", events: ["*"] } });
    const { id } = (await created.json()) as { id: string };
    const rotate = () => callWith({}, `/v1/webhooks/${id}/secret`, { method: "POST", key: key.key });
    const answers = await Promise.all([rotate(), rotate(), rotate()]);
    const standing = answers.filter((a) => a.status === 200).length;
    const audited = await rows("SELECT id FROM audit_events WHERE target = ? AND action = 'webhook.secret_rotated'", id);
    // Only meaningful when the race happened (a refused rotation); else the two counts agree anyway.
    expect(audited.length).toBe(standing);
  });
});

describe("attack19: deliveries are not lost to a failure the queue retries", () => {
  it("a D1 failure between making a delivery and claiming its first attempt does not leave it unsent forever", async () => {
    const { r, webhook, eventId } = await endpointWithEvent();
    // The claim of attempt 0 fails once (D1 lost the connection): the message goes back to the queue.
    const claimFails = faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: Network connection lost."), times: 1 }, (sql) =>
      /update "webhook_deliveries" set "attempts"/i.test(sql),
    );
    const first = message({ event: eventId });
    await consume(depsWith(claimFails), [first.m]);
    expect(first.seen).toEqual({ acked: 0, retried: 1 });
    // The queue redelivers it, D1 is back.
    const again = message({ event: eventId });
    await consume(depsWith(env.DB), [again.m]);
    expect(again.seen.acked).toBe(1);
    // At least once: the endpoint got the event, or at least a next attempt is still coming.
    const [delivery] = await rows<{ status: string; attempts: number }>(
      "SELECT status, attempts FROM webhook_deliveries WHERE webhook_id = ? AND event_id = ?",
      webhook.id,
      eventId,
    );
    expect({ received: (await r.received()).length, delivery }).toEqual({
      received: 1,
      delivery: { status: "succeeded", attempts: 1 },
    });
  });

  it("an attempt whose outcome D1 failed to record is tried again, not left pending with nothing scheduled", {
    timeout: 30_000,
  }, async () => {
    const { r, webhook, eventId } = await endpointWithEvent();
    await r.configure({ fail: 1, status: 503 });
    // Attempt 0 is claimed and sent (503), then recording its outcome and scheduling attempt 1 fails once.
    const recordFails = faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: Network connection lost."), times: 1 }, (sql) =>
      /insert into "webhook_attempts"/i.test(sql),
    );
    const first = message({ event: eventId });
    await consume(depsWith(recordFails), [first.m]);
    expect(first.seen).toEqual({ acked: 0, retried: 1 });
    expect(await r.received()).toHaveLength(1);
    // The queue redelivers the message, D1 is back.
    const again = message({ event: eventId });
    await consume(depsWith(env.DB), [again.m]);
    expect(again.seen.acked).toBe(1);
    // At least once: once the lost attempt's claim has run out (the clock moved on: a minute and more), the cron's sweep
    // sends the delivery's due attempt again, whatever became of attempt 0's record.
    await env.DB.prepare("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE webhook_id = ? AND event_id = ?")
      .bind(new Date(Date.now() - 120_000).toISOString(), webhook.id, eventId)
      .run();
    const ctx = createExecutionContext();
    await worker.scheduled({ cron: "* * * * *", scheduledTime: Date.now(), noRetry() {} } as ScheduledController, env, ctx);
    await waitOnExecutionContext(ctx);
    await expect.poll(async () => (await r.received()).length, { timeout: 12_000, interval: 250 }).toBe(2);
    const [delivery] = await rows<{ status: string }>(
      "SELECT status FROM webhook_deliveries WHERE webhook_id = ? AND event_id = ?",
      webhook.id,
      eventId,
    );
    expect(delivery?.status).toBe("succeeded");
  });
});

describe("attack19: one account's slow endpoint does not hold up another account's deliveries", () => {
  it("a batch with a tarpit endpoint's event first still delivers the other account's event within seconds", {
    timeout: 30_000,
  }, async () => {
    // Account A: an endpoint that takes 6 s to answer (a tarpit answers never; the consumer waits 15 s for it).
    const a = await provision();
    const slow = await callWith(local, "/v1/webhooks", {
      key: a.key.key,
      body: { url: `${env.TEST_UPSTREAM_URL}/slow/tarpit?ms=6000`, events: ["*"] },
    });
    const slowHook = (await slow.json()) as { id: string };
    const slowEvent = `msg_attack19_${crypto.randomUUID().replaceAll("-", "")}`;
    await env.DB.prepare("INSERT INTO webhook_events (id, account_id, type, data, created_at) VALUES (?, ?, 'webhook.test', ?, ?)")
      .bind(slowEvent, a.account.id, JSON.stringify({ webhookId: slowHook.id }), new Date().toISOString())
      .run();
    // Account B: an ordinary endpoint and its event, in the same queue batch, after A's.
    const b = await endpointWithEvent();
    const started = Date.now();
    let deliveredAfter = Number.POSITIVE_INFINITY;
    const watching = (async () => {
      while (Date.now() - started < 20_000) {
        if ((await b.r.received()).length > 0) {
          deliveredAfter = Date.now() - started;
          return;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await consume(depsWith(env.DB), [message({ event: slowEvent }).m, message({ event: b.eventId }).m]);
    await watching;
    expect(deliveredAfter).toBeLessThan(3_000);
  });
});

describe("attack19: events carry no token", () => {
  it("webhook.disabled does not hand one endpoint's capability URL (its token) to the account's other endpoints", async () => {
    const { account, key } = await provision();
    const r = await receiver({ fail: 1, status: 410 });
    const capability = `${r.url}?token=cap-s3cr3t-0123456789`;
    const res = await callWith(local, "/v1/webhooks", { key: key.key, body: { url: capability, events: ["webhook.test"] } });
    const hook = (await res.json()) as { id: string; secret: string };
    await r.configure({ secrets: [hook.secret], fail: 1, status: 410 });
    const eventId = `msg_attack19_${crypto.randomUUID().replaceAll("-", "")}`;
    await env.DB.prepare("INSERT INTO webhook_events (id, account_id, type, data, created_at) VALUES (?, ?, 'webhook.test', ?, ?)")
      .bind(eventId, account.id, JSON.stringify({ webhookId: hook.id }), new Date().toISOString())
      .run();
    await consume(depsWith(env.DB), [message({ event: eventId }).m]);
    const told = await rows<{ data: string }>(
      "SELECT data FROM webhook_events WHERE account_id = ? AND type = 'webhook.disabled'",
      account.id,
    );
    expect(told).toHaveLength(1);
    expect(told[0]?.data).not.toContain("cap-s3cr3t");
  });
});
