import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { faultyDatabase, faultyObjects, objectDatabase } from "../faults";
import { GATEWAY } from "../gateway/table";
import { call, callWith, createKey, expectProblem, provision, rows, through, VERIFY_TOKEN } from "../helpers";

/**
 * An attacker's pass over the credits promise: each test is a way to spend without paying that the README says
 * cannot happen.
 */
const ROUTES = [
  { pattern: "/v1/free/*", credits: 0 },
  { pattern: "/v1/messages/*", credits: 1 },
  { pattern: "/v1/reports/*", credits: 50 },
  { pattern: "/v1/completions/*", credits: { reserve: 100, settle: true } },
  { pattern: "/slow", credits: 5 },
  { pattern: "/*", access: "full" },
];
const METERED = { ...GATEWAY, GATEWAY_ROUTES: JSON.stringify(ROUTES) };
const gw = (path: string, init: Parameters<typeof through>[2] = {}, overrides: Partial<Cloudflare.Env> = {}) =>
  through({ ...METERED, ...overrides }, path, init);

const keyStub = (id: string) => env.KEYS.getByName(`key:${id}`);
const balanceOf = async (id: string) => (await keyStub(id).credits(id))?.remaining;
const poolOf = async (accountId: string) => (await env.ACCOUNTS.getByName(`account:${accountId}`).credits({ accountId }))?.remaining;

/** Gives the account a credits pool, as the operator would, before any key of it is used. */
async function withPool(accountId: string, credits: unknown): Promise<void> {
  await env.DB.prepare("UPDATE accounts SET credits = ? WHERE id = ?").bind(JSON.stringify(credits), accountId).run();
  await env.ACCOUNTS.getByName(`account:${accountId}`).reload();
}

const verify = (body: Record<string, unknown>, idempotencyKey: string) =>
  call("/v1/keys/verify", { headers: { Authorization: `Bearer ${VERIFY_TOKEN}`, "Idempotency-Key": idempotencyKey }, body });

describe("an Idempotency-Key never buys a request it did not pay for", () => {
  it("a key charged for a free request is not a pass for an expensive one (another route, another charge)", async () => {
    const account = await provision();
    const key = await createKey(account.key.key, { credits: { remaining: 60 }, rateLimit: { limit: 100_000, windowSeconds: 60 } });
    // Charged once: 0 credits on a route that costs none.
    expect((await gw("/v1/free/ping", { key: key.key, headers: { "Idempotency-Key": "k-1" } })).status).toBe(200);
    expect(await balanceOf(key.id)).toBe(60);
    // The same Idempotency-Key on a route that costs 50 is another request: it pays (or is refused), it is not a
    // free "retry" of the one that cost nothing.
    const reports = [];
    for (let i = 0; i < 3; i++) reports.push(await gw(`/v1/reports/${i}`, { key: key.key, headers: { "Idempotency-Key": "k-1" } }));
    const spent = 60 - ((await balanceOf(key.id)) ?? 0);
    const served = reports.filter((r) => r.status === 200).length;
    expect(spent).toBe(50 * served);
  });

  it("a retry under one Idempotency-Key spends no limit: it is not a way past the rate limit to new requests", async () => {
    const account = await provision();
    const key = await createKey(account.key.key, { credits: { remaining: 100 }, rateLimit: { limit: 2, windowSeconds: 3600 } });
    expect((await gw("/v1/messages/1", { key: key.key, headers: { "Idempotency-Key": "k-2" } })).status).toBe(200);
    // Ten different requests (other paths, other bodies) under that key: each forwarded, none charged.
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++)
      statuses.push(
        (await gw(`/v1/reports/${i}`, { key: key.key, method: "POST", body: { n: i }, headers: { "Idempotency-Key": "k-2" } })).status,
      );
    // A limit of 2 an hour: at most one more request is served, whatever its Idempotency-Key says.
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(1);
  });
});

describe("a request the pool refuses spends nothing, and its retry is judged again", () => {
  it("verify: 402 from the account's pool, then the same Idempotency-Key is not a free pass past the pool", async () => {
    const account = await provision();
    const key = await createKey(account.key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
    await withPool(account.account.id, { remaining: 3 });
    const first = await verify({ key: key.key, credits: 5 }, "v-pool-1");
    expect(await first.json()).toMatchObject({ valid: false, code: "credits_exhausted", required: 5, remaining: 3 });
    // Nothing was spent, and nothing was charged: the retry is judged by the pool again.
    const retry = await verify({ key: key.key, credits: 5 }, "v-pool-1");
    expect(await retry.json()).toMatchObject({ valid: false, code: "credits_exhausted" });
    expect(await poolOf(account.account.id)).toBe(3);
  });

  it("gateway: 402 from the pool, then a retry once the first's time in flight is up is still 402, not forwarded free", async () => {
    const account = await provision();
    const key = await createKey(account.key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
    await withPool(account.account.id, { remaining: 0 });
    const send = () => gw("/v1/messages/send", { key: key.key, headers: { "Idempotency-Key": "g-pool-1" } });
    await expectProblem(await send(), 402, "credits_exhausted");
    // The first request was answered (402): a retry is not in flight, nor was the first charged.
    const later = Date.now() + 10 * 60_000;
    await runInDurableObject(keyStub(key.id), (instance) => {
      instance.clock = () => later;
    });
    const retry = await send();
    expect(retry.status).toBe(402);
    expect(await poolOf(account.account.id)).toBe(0);
  });
});

describe("a reservation is given back at most once", () => {
  it("settled, then refunded for the same request: the balance never gets back more than it reserved", async () => {
    const account = await provision();
    const key = await createKey(account.key.key, { credits: { remaining: 1000 }, rateLimit: { limit: 100_000, windowSeconds: 60 } });
    // The upstream settles a stream as it ends (37 used) and then fails the answer (a 5xx: the gateway refunds).
    const res = await gw("/v1/completions/stream", { key: key.key });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("X-Request-Id") as string;
    expect(await balanceOf(key.id)).toBe(900);
    const settled = await call("/v1/credits/settle", {
      headers: { Authorization: `Bearer ${VERIFY_TOKEN}` },
      body: { requestId, used: 37, accountId: account.account.id, keyId: key.id },
    });
    expect(settled.status).toBe(200);
    expect(await balanceOf(key.id)).toBe(963);
    // The refund the gateway sends for that request's 5xx (limiter.ts `refund`: credits only, by its request id).
    const stub = keyStub(key.id);
    await stub.refund({
      at: Date.now(),
      cost: 0,
      costs: {},
      credits: 100,
      requestId,
      tag: { id: `${requestId}-refund-credits`, deadline: Date.now() + 1000 },
    });
    // 37 were used: 963 at most, never 1063.
    expect(await balanceOf(key.id)).toBe(963);
  });
});

describe("a rotation moves the whole balance", () => {
  it("credits a reservation gives back after the rotation go to the new key, not to the old one in its grace period", async () => {
    const account = await provision();
    const old = await createKey(account.key.key, { credits: { remaining: 1000 }, rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const res = await gw("/v1/completions/stream", { key: old.key });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("X-Request-Id") as string;
    expect(await balanceOf(old.id)).toBe(900);
    const rotated = await call(`/v1/api-keys/${old.id}/rotate`, { key: account.key.key, body: { gracePeriodSeconds: 3600 } });
    expect(rotated.status).toBe(201);
    const fresh = await rotated.json<{ id: string; key: string }>();
    expect(await balanceOf(fresh.id)).toBe(900);
    expect(await balanceOf(old.id)).toBe(0);
    // The stream ends after the rotation: 37 used, 63 come back.
    const settled = await call("/v1/credits/settle", {
      headers: { Authorization: `Bearer ${VERIFY_TOKEN}` },
      body: { requestId, used: 37, accountId: account.account.id, keyId: old.id },
    });
    expect(settled.status).toBe(200);
    // The old key spends none in its grace period; what came back is the key's, so it is the new key's.
    await expectProblem(await gw("/v1/messages/after", { key: old.key }), 402, "credits_exhausted");
    expect((await balanceOf(old.id)) ?? 0).toBe(0);
    expect(await balanceOf(fresh.id)).toBe(963);
  });
});

describe("a `set` refill sets the balance", () => {
  it("what a reservation made before a `set` refill gives back after it does not lift the balance past the refill", async () => {
    const account = await provision();
    const refill = { amount: 100, interval: "hour", mode: "set" };
    const key = await createKey(account.key.key, { credits: { remaining: 100, refill }, rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const boundary = Math.floor(Date.now() / 3_600_000) * 3_600_000 + 3_600_000;
    let now = boundary - 1000;
    await runInDurableObject(keyStub(key.id), (instance) => {
      instance.clock = () => now;
    });
    // Just before the boundary, the whole balance is reserved by a stream (settled within a day at most).
    const res = await gw("/v1/completions/stream", { key: key.key }, { CREDITS_SETTLE_TIMEOUT_S: "86400" });
    expect(res.status).toBe(200);
    expect(await balanceOf(key.id)).toBe(0);
    // The hour turns: the balance is set to 100. The stream then ends having used nothing.
    now = boundary + 1000;
    expect(await balanceOf(key.id)).toBe(100);
    const settled = await call("/v1/credits/settle", {
      headers: { Authorization: `Bearer ${VERIFY_TOKEN}` },
      body: { requestId: res.headers.get("X-Request-Id"), used: 0, accountId: account.account.id, keyId: key.id },
    });
    expect(settled.status).toBe(200);
    // A `set` refill replaced what the last hour had left: an hour never has more than its 100.
    expect(await balanceOf(key.id)).toBeLessThanOrEqual(100);
  });
});

describe("a call its caller gave up on claims nothing", () => {
  it("an Idempotency-Key whose first call was cancelled while the key's object read D1 is not charged: its retry pays", async () => {
    const account = await provision();
    const key = await createKey(account.key.key, { credits: { remaining: 10 }, rateLimit: { limit: 100_000, windowSeconds: 60 } });
    expect(await balanceOf(key.id)).toBe(10);
    // The key's object reads its record slowly: past the caller's deadline, which cancels the call meanwhile.
    const undo = await objectDatabase(keyStub(key.id), () =>
      faultyDatabase(env.DB, { kind: "late-call", ms: 600, times: 1 }, (sql) => sql.includes("api_keys")),
    );
    const body = { key: key.key, credits: 4 };
    const headers = { Authorization: `Bearer ${VERIFY_TOKEN}`, "Idempotency-Key": "v-late-1" };
    await expectProblem(
      await callWith({ RATE_LIMIT_TIMEOUT_MS: "200" }, "/v1/keys/verify", { headers, body }),
      503,
      "rate_limiter_unavailable",
    );
    // The late read lands and the judgement finishes, for a call nobody waits for any more.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await undo();
    expect(await balanceOf(key.id)).toBe(10);
    // Long after: the first was never charged, so the retry is.
    const later = Date.now() + 5 * 60_000;
    await runInDurableObject(keyStub(key.id), (instance) => {
      instance.clock = () => later;
    });
    const retry = await call("/v1/keys/verify", { headers, body });
    expect(await retry.json()).toMatchObject({ valid: true, credits: { remaining: 6 } });
    expect(await balanceOf(key.id)).toBe(6);
  });

  it("an Idempotency-Key whose first call was admitted but answered too late (given back at its cancellation) is not charged", async () => {
    const account = await provision();
    const key = await createKey(account.key.key, { credits: { remaining: 10 }, rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const body = { key: key.key, credits: 4 };
    const headers = { Authorization: `Bearer ${VERIFY_TOKEN}`, "Idempotency-Key": "v-late-2" };
    const late = faultyObjects(env.KEYS, { authorize: { kind: "late-answer", ms: 400, times: 1 } });
    await expectProblem(
      await callWith({ KEYS: late, RATE_LIMIT_TIMEOUT_MS: "100" }, "/v1/keys/verify", { headers, body }),
      503,
      "rate_limiter_unavailable",
    );
    await late.settled();
    // The caller gave up: what the call spent was given back.
    expect(await balanceOf(key.id)).toBe(10);
    // So the retry is a first request: it pays.
    const retry = await call("/v1/keys/verify", { headers, body });
    expect(await retry.json()).toMatchObject({ valid: true, credits: { remaining: 6 } });
    expect(await balanceOf(key.id)).toBe(6);
  });
});

describe("every credit that moves is a ledger entry", () => {
  it("a refund that reaches the key's object after it was evicted (a slow upstream) is in the ledger", async () => {
    const account = await provision();
    const key = await createKey(account.key.key, { credits: { remaining: 10 }, rateLimit: { limit: 100_000, windowSeconds: 60 } });
    // A slow request that its upstream then fails (503: its 5 credits come back)...
    const slow = gw("/slow?ms=800", { key: key.key, headers: { "X-Test-Status": "503" } });
    await new Promise((resolve) => setTimeout(resolve, 300));
    // ...while the key's object, idle meanwhile, is evicted: the refund reaches a fresh instance.
    await evictDurableObject(keyStub(key.id));
    expect((await slow).status).toBe(503);
    expect(await balanceOf(key.id)).toBe(10);
    await runDurableObjectAlarm(keyStub(key.id));
    const [sum] = await rows<{ total: number; n: number }>(
      "SELECT coalesce(sum(delta), 0) AS total, count(*) AS n FROM credit_ledger WHERE key_id = ?",
      key.id,
    );
    // Opening 10, spend -5, refund +5: the ledger sums to the balance.
    expect(sum?.total).toBe(10);
  });
});
