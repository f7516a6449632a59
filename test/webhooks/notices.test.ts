import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, callWith, createKey, provision, rows, VERIFY_TOKEN } from "../helpers";

type Told = { type: string; data: string };
const told = (accountId: string, type: string) =>
  rows<Told>("SELECT type, data FROM webhook_events WHERE account_id = ? AND type = ? ORDER BY created_at", accountId, type);
const poll = <T>(fn: () => Promise<T>) => expect.poll(fn, { timeout: 10_000, interval: 100 });

describe("what the counting objects tell", () => {
  it("rate_limit.exceeded once per limit and window, not once per refused request, and to the endpoint", async () => {
    const { account, key } = await provision();
    const receiver = `${env.TEST_UPSTREAM_URL}/hooks/limits-${crypto.randomUUID()}`;
    const hook = await callWith({ ALLOW_HTTP: "true" }, "/v1/webhooks", {
      key: key.key,
      body: { url: receiver, events: ["rate_limit.exceeded"] },
    });
    expect(hook.status).toBe(201);
    const limited = await createKey(key.key, { name: "busy", rateLimit: { limit: 2, windowSeconds: 60 } });
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await call("/v1/whoami", { key: limited.key })).status);
    expect(statuses).toEqual([200, 200, 429, 429, 429, 429]);
    await poll(async () => (await told(account.id, "rate_limit.exceeded")).length).toBe(1);
    const [event] = await told(account.id, "rate_limit.exceeded");
    expect(JSON.parse(event?.data as string)).toMatchObject({
      key: { id: limited.id, name: "busy" },
      limit: { name: "default", limit: 2, windowSeconds: 60 },
      retryAfter: expect.any(Number),
    });
    expect(event?.data).not.toContain(limited.key);
    await poll(async () =>
      ((await (await fetch(`${receiver}/received`)).json()) as { body: { type: string } }[]).map((d) => d.body.type),
    ).toEqual(["rate_limit.exceeded"]);
    // More refusals in the same window tell nothing more.
    await call("/v1/whoami", { key: limited.key });
    await new Promise((r) => setTimeout(r, 300));
    expect(await told(account.id, "rate_limit.exceeded")).toHaveLength(1);
  });

  it("credits.low when a spend takes a balance to a tenth of its opening, credits.exhausted when it takes it to zero", async () => {
    const { account, key: admin } = await provision();
    const key = await createKey(admin.key, { credits: { remaining: 10 }, rateLimit: { limit: 1000, windowSeconds: 60 } });
    const verify = (credits: number) =>
      call("/v1/keys/verify", { headers: { Authorization: `Bearer ${VERIFY_TOKEN}` }, body: { key: key.key, credits } });
    expect(await (await verify(8)).json()).toMatchObject({ valid: true, credits: { remaining: 2 } });
    expect(await told(account.id, "credits.low")).toEqual([]);
    expect(await (await verify(1)).json()).toMatchObject({ valid: true, credits: { remaining: 1 } });
    await poll(async () => (await told(account.id, "credits.low")).length).toBe(1);
    expect(JSON.parse((await told(account.id, "credits.low"))[0]?.data as string)).toEqual({
      balance: "key",
      keyId: key.id,
      remaining: 1,
      threshold: 1,
    });
    expect(await (await verify(1)).json()).toMatchObject({ valid: true, credits: { remaining: 0 } });
    await poll(async () => (await told(account.id, "credits.exhausted")).map((e) => JSON.parse(e.data))).toEqual([
      { balance: "key", keyId: key.id, remaining: 0 },
    ]);
    // Refused for want of credits: nothing more is told.
    expect(await (await verify(1)).json()).toMatchObject({ valid: false, code: "credits_exhausted" });
    await new Promise((r) => setTimeout(r, 300));
    expect(await told(account.id, "credits.exhausted")).toHaveLength(1);
  });
});
