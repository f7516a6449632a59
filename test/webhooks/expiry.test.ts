import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { callWith, createKey, provision, rows, setKeyColumn } from "../helpers";

const HOUR = 3_600_000;
const later = (ms: number) => new Date(Date.now() + ms).toISOString();

/** The cron's minute, as Cloudflare runs it. */
async function sweep(): Promise<void> {
  const ctx = createExecutionContext();
  await worker.scheduled({ cron: "* * * * *", scheduledTime: Date.now(), noRetry() {} } as ScheduledController, env, ctx);
  await waitOnExecutionContext(ctx);
}

describe("notices of a key's expiry", () => {
  it("7 days and 1 day before, and when it has expired: each once, from the cron, to accounts that listen", async () => {
    const { account, key } = await provision();
    const hook = await callWith({ ALLOW_HTTP: "true" }, "/v1/webhooks", {
      key: key.key,
      body: { url: `${env.TEST_UPSTREAM_URL}/hooks/expiry-${crypto.randomUUID()}`, events: ["api_key.expiring", "api_key.expired"] },
    });
    expect(hook.status).toBe(201);
    const week = await createKey(key.key, { name: "three days", expiresAt: later(72 * HOUR) });
    const day = await createKey(key.key, { name: "twelve hours", expiresAt: later(12 * HOUR) });
    const gone = await createKey(key.key, { name: "expired", expiresAt: later(48 * HOUR) });
    await setKeyColumn(gone.id, "expires_at", later(-HOUR));
    const revoked = await createKey(key.key, { name: "revoked first", expiresAt: later(60 * HOUR) });
    await callWith({}, `/v1/api-keys/${revoked.id}`, { method: "DELETE", key: key.key });
    // Another account with no endpoint: nothing is written for it.
    const quiet = await provision();
    await createKey(quiet.key.key, { expiresAt: later(12 * HOUR) });

    await sweep();
    await sweep();
    const notices = await rows<{ id: string; type: string; data: string }>(
      "SELECT id, type, data FROM webhook_events WHERE account_id IN (?, ?) AND type LIKE 'api_key.expir%' ORDER BY id",
      account.id,
      quiet.account.id,
    );
    expect(notices.map((n) => [n.type, JSON.parse(n.data).key.id, JSON.parse(n.data).within ?? null]).sort()).toEqual(
      [
        ["api_key.expired", gone.id, null],
        ["api_key.expiring", day.id, "1 day"],
        ["api_key.expiring", week.id, "7 days"],
      ].sort(),
    );
    expect(notices.every((n) => !n.data.includes(week.key))).toBe(true);
  });
});
