import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { IDEMPOTENCY_MS } from "../../src/keys/object";
import { faultyDatabase, faultyObjects, objectDatabase } from "../faults";
import { GATEWAY } from "../gateway/table";
import { call, createKey, expectProblem, memberWithKey, OPERATOR_TOKEN, provision, rows, through, VERIFY_TOKEN } from "../helpers";

const ROUTES = [
  { pattern: "/v1/messages/*", credits: 1 },
  { pattern: "/v1/completions/*", credits: { reserve: 100, settle: true } },
  { pattern: "/*", access: "full" },
];
const METERED = { ...GATEWAY, GATEWAY_ROUTES: JSON.stringify(ROUTES) };
const gw = (path: string, init: Parameters<typeof through>[2] = {}, overrides: Partial<Cloudflare.Env> = {}) =>
  through({ ...METERED, ...overrides }, path, init);
const operator = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

const keyStub = (id: string) => env.KEYS.getByName(`key:${id}`);
const balanceOf = async (id: string) => (await keyStub(id).credits(id))?.remaining;

/** An account, its admin key, and a key of it with `credits` of its own (set through the API). */
async function metered(credits: unknown) {
  const account = await provision();
  const key = await createKey(account.key.key, { credits, rateLimit: { limit: 100_000, windowSeconds: 60 } });
  return { accountId: account.account.id, admin: account.key, key };
}

/** Moves the key's object to a clock the test sets. */
async function clockOf(keyId: string, now: () => number): Promise<void> {
  await runInDurableObject(keyStub(keyId), (instance) => {
    instance.clock = now;
  });
}

/** Every ledger row of a key, through the API, oldest first, once its object has written what it holds. */
async function ledgerOf(adminKey: string, keyId: string) {
  await runDurableObjectAlarm(keyStub(keyId));
  const all: { delta: number; kind: string; count: number; balanceAfter: number; reason: string | null }[] = [];
  let cursor: string | null = null;
  do {
    const res = await call(`/v1/api-keys/${keyId}/credits/ledger?limit=2${cursor ? `&cursor=${cursor}` : ""}`, { key: adminKey });
    expect(res.status).toBe(200);
    const page = await res.json<{ data: typeof all; nextCursor: string | null }>();
    all.push(...page.data);
    cursor = page.nextCursor;
  } while (cursor);
  return all.reverse();
}

const sum = (entries: { delta: number }[]) => entries.reduce((n, e) => n + e.delta, 0);

describe("adjusting credits", () => {
  it("an admin adds, subtracts and sets a key's credits; never below zero; members cannot; audited", async () => {
    const { accountId, admin, key } = await metered({ remaining: 100 });
    const adjust = (body: unknown, as = admin.key, headers: Record<string, string> = {}) =>
      call(`/v1/api-keys/${key.id}/credits`, { key: as, body, headers });
    const added = await adjust({ operation: "add", amount: 50, reason: "goodwill" });
    expect(added.status).toBe(200);
    expect(await added.json()).toEqual({ remaining: 150, refill: null, nextRefillAt: null });
    expect(await (await adjust({ operation: "subtract", amount: 30 })).json()).toMatchObject({ remaining: 120 });
    expect(await expectProblem(await adjust({ operation: "subtract", amount: 121 }), 409, "credits_insufficient")).toMatchObject({
      remaining: 120,
    });
    expect(await (await adjust({ operation: "set", amount: 7 })).json()).toMatchObject({ remaining: 7 });
    expect(await balanceOf(key.id)).toBe(7);
    const { key: member } = await memberWithKey(admin.key);
    await expectProblem(await adjust({ operation: "add", amount: 1000 }, member.key), 403, "insufficient_role");
    await expectProblem(await adjust({ operation: "add", amount: -1 }), 400, "invalid_request");
    expect(await balanceOf(key.id)).toBe(7);
    const audited = await rows<{ action: string; actor: string }>(
      "SELECT action, actor FROM audit_events WHERE account_id = ? AND target = ? ORDER BY created_at",
      accountId,
      key.id,
    );
    expect(audited.filter((a) => a.action.startsWith("api_key.credits_")).map((a) => a.action)).toEqual([
      "api_key.credits_add",
      "api_key.credits_subtract",
      "api_key.credits_set",
    ]);
    // Another account's key is not found; a key with no credits of its own is unlimited, so there is nothing to adjust.
    const other = await provision();
    await expectProblem(await adjust({ operation: "add", amount: 1 }, other.key.key), 404, "not_found");
    const plain = await createKey(admin.key);
    await expectProblem(
      await call(`/v1/api-keys/${plain.id}/credits`, { key: admin.key, body: { operation: "set", amount: 5 } }),
      409,
      "credits_unlimited",
    );
  });

  it("with an Idempotency-Key, a change sent twice (concurrently too) applies once; another change under the key is 422", async () => {
    const { admin, key } = await metered({ remaining: 100 });
    const adjust = (body: unknown) =>
      call(`/v1/api-keys/${key.id}/credits`, { key: admin.key, body, headers: { "Idempotency-Key": '"topup-7"' } });
    const answers = await Promise.all(Array.from({ length: 10 }, () => adjust({ operation: "add", amount: 25 })));
    for (const a of answers) expect(await a.json()).toMatchObject({ remaining: 125 });
    expect(await balanceOf(key.id)).toBe(125);
    // Applied once, audited once.
    const audited = await rows("SELECT id FROM audit_events WHERE target = ? AND action = 'api_key.credits_add'", key.id);
    expect(audited).toHaveLength(1);
    await expectProblem(await adjust({ operation: "add", amount: 26 }), 422, "idempotency_key_reused");
    expect(await balanceOf(key.id)).toBe(125);
  });

  it("the operator adjusts an account's pool; an admin's token is not the operator's", async () => {
    const { account, key } = await provision({ credits: { remaining: 1000 } });
    const res = await call(`/v1/accounts/${account.id}/credits`, { headers: operator, body: { operation: "subtract", amount: 400 } });
    expect(await res.json()).toMatchObject({ remaining: 600 });
    expect(await (await call("/v1/account", { key: key.key })).json()).toMatchObject({ credits: { remaining: 600 } });
    const asAdmin = await call(`/v1/accounts/${account.id}/credits`, { key: key.key, body: { operation: "add", amount: 1 } });
    expect(asAdmin.status).toBe(401);
    await expectProblem(
      await call("/v1/accounts/acc_nope/credits", { headers: operator, body: { operation: "add", amount: 1 } }),
      404,
      "not_found",
    );
  });
  it("an admin subtracts from its own account's pool, audited and in the ledger; adding to or setting it is the operator's", async () => {
    const { account, admin, key } = await provision({ credits: { remaining: 1000 } });
    const other = await provision({ credits: { remaining: 1000 } });
    const cap = () =>
      call("/v1/account/credits", {
        key: key.key,
        body: { operation: "subtract", amount: 300, reason: "cap this month" },
        headers: { "Idempotency-Key": '"cap-1"' },
      });
    // Sent twice, concurrently: applied once.
    const answers = await Promise.all([cap(), cap()]);
    for (const a of answers) expect(await a.json()).toMatchObject({ remaining: 700 });
    expect(await (await call("/v1/account", { key: key.key })).json()).toMatchObject({ credits: { remaining: 700 } });
    const audited = await rows("SELECT actor FROM audit_events WHERE target = ? AND action = 'account.credits_subtract'", account.id);
    expect(audited).toEqual([{ actor: admin.id }]);
    for (const operation of ["add", "set"]) {
      const res = call("/v1/account/credits", { key: key.key, body: { operation, amount: 5000 } });
      await expectProblem(await res, 403, "operator_only");
    }
    await expectProblem(
      await call("/v1/account/credits", { key: key.key, body: { operation: "subtract", amount: 701 } }),
      409,
      "credits_insufficient",
    );
    expect(await (await call("/v1/account", { key: key.key })).json()).toMatchObject({ credits: { remaining: 700 } });
    // Only its own account's pool, and only an admin's.
    expect(await (await call("/v1/account", { key: other.key.key })).json()).toMatchObject({ credits: { remaining: 1000 } });
    const member = await memberWithKey(key.key);
    await expectProblem(
      await call("/v1/account/credits", { key: member.key.key, body: { operation: "subtract", amount: 1 } }),
      403,
      "insufficient_role",
    );
    expect(await (await call("/v1/account", { key: key.key })).json()).toMatchObject({ credits: { remaining: 700 } });
  });
});

describe("the ledger", () => {
  it("every movement is an entry, and the entries sum to the balance (spends summed per minute)", async () => {
    const { admin, key } = await metered({ remaining: 50 });
    for (let i = 0; i < 5; i++) expect((await gw("/v1/messages/a", { key: key.key })).status).toBe(200);
    // An upstream failure gives its credit back; an adjustment is an entry of its own.
    expect((await gw("/v1/messages/b", { key: key.key, headers: { "X-Test-Status": "503" } })).status).toBe(503);
    await call(`/v1/api-keys/${key.id}/credits`, { key: admin.key, body: { operation: "add", amount: 10, reason: "bonus" } });
    const entries = await ledgerOf(admin.key, key.id);
    expect(entries[0]).toMatchObject({ kind: "adjust", delta: 50, reason: "opening balance" });
    expect(entries.find((e) => e.kind === "adjust" && e.reason === "bonus")).toMatchObject({ delta: 10 });
    const spends = entries.filter((e) => e.kind === "spend");
    expect(spends.reduce((n, e) => n + e.count, 0)).toBe(6);
    expect(spends.length).toBeLessThanOrEqual(2);
    expect(sum(entries)).toBe(await balanceOf(key.id));
    expect(await balanceOf(key.id)).toBe(55);
  });

  it("D1 down while the ledger is written keeps every entry, and an evicted object loses none", async () => {
    const { admin, key } = await metered({ remaining: 20 });
    for (let i = 0; i < 3; i++) expect((await gw("/v1/messages/a", { key: key.key })).status).toBe(200);
    const undo = await objectDatabase(keyStub(key.id), () =>
      faultyDatabase(env.DB, { kind: "throw" }, (sql) => sql.includes("credit_ledger")),
    );
    await runDurableObjectAlarm(keyStub(key.id));
    await undo();
    expect(await rows("SELECT id FROM credit_ledger WHERE key_id = ?", key.id)).toEqual([]);
    await evictDurableObject(keyStub(key.id));
    expect(await balanceOf(key.id)).toBe(17);
    const entries = await ledgerOf(admin.key, key.id);
    expect(sum(entries)).toBe(17);
    expect(entries.filter((e) => e.kind === "spend").reduce((n, e) => n + e.count, 0)).toBe(3);
  });
});

describe("idempotent retries", () => {
  describe("a call tried again at a key's object that restarted since (its memory of calls gone)", () => {
    const attempt = (keyId: string) => ({ keyId, method: "bearer" as const, need: "any" as const, cost: 1, credits: 5 });
    const tag = () => ({ id: crypto.randomUUID(), deadline: Date.now() + 10_000 });
    const authorize = (c: Parameters<ReturnType<typeof keyStub>["authorize"]>[0]) => keyStub(c.keyId).authorize(c);
    /** A key of `limit` requests a minute and 1,000 credits. */
    const key = async (limit = 100_000) =>
      (await createKey((await provision()).key.key, { credits: { remaining: 1000 }, rateLimit: { limit, windowSeconds: 60 } })).id;
    /** A key of `limit` and a call of it that paid 5: its first try, whose answer is taken to be lost. */
    const paidOnce = async (limit?: number) => {
      const id = await key(limit);
      const lost = { ...attempt(id), tag: tag() };
      const first = await authorize(lost);
      if (!first.ok || !first.granted.allowed) throw new Error("refused");
      return { id, lost };
    };

    it("pays once, and the lease the lost answer held is given back", async () => {
      const id = await key();
      // The key is hot: a paying call brings a lease, whose credits are taken with it.
      for (let i = 0; i < 60; i++) await authorize({ ...attempt(id), credits: 0, tag: tag() });
      const lost = { ...attempt(id), lease: true, perUnit: 5, tag: tag() };
      const first = await authorize(lost);
      if (!first.ok || !first.granted.lease) throw new Error("no lease");
      expect(await balanceOf(id)).toBe(1000 - 5 - (first.granted.lease.credits ?? 0));
      await evictDurableObject(keyStub(id));
      const again = await authorize(lost);
      if (!again.ok) throw new Error("refused");
      expect(again.granted.allowed).toBe(true);
      expect(await balanceOf(id)).toBe(1000 - 5 - (again.granted.lease?.credits ?? 0));
      // A try it remembers gets its answer; another call pays.
      await authorize(lost);
      expect(await balanceOf(id)).toBe(1000 - 5 - (again.granted.lease?.credits ?? 0));
      await authorize({ ...attempt(id), tag: tag() });
      expect(await balanceOf(id)).toBe(1000 - 10 - (again.granted.lease?.credits ?? 0));
    });

    it("is counted by the limit though the restart lost the first try's admission", async () => {
      const { id, lost } = await paidOnce(3);
      // The admission's write is lost with the restart; what the call paid was written.
      await runInDurableObject(keyStub(id), (_, state) => state.storage.sql.exec("DELETE FROM hits"));
      await evictDurableObject(keyStub(id));
      expect(await authorize(lost)).toMatchObject({ ok: true, granted: { allowed: true, limits: [{ remaining: 2 }] } });
      expect(await balanceOf(id)).toBe(995);
    });

    it("refused by its limit meanwhile, spends nothing: what the first try paid comes back", async () => {
      const { id, lost } = await paidOnce(3);
      for (let i = 0; i < 2; i++) await authorize({ ...attempt(id), tag: tag() });
      await evictDurableObject(keyStub(id));
      expect(await authorize(lost)).toMatchObject({ ok: true, granted: { allowed: false } });
      expect(await balanceOf(id)).toBe(990);
    });

    it("cancelled, gives back what it paid", async () => {
      const { id, lost } = await paidOnce();
      await evictDurableObject(keyStub(id));
      await keyStub(id).cancel({ tag: lost.tag });
      expect(await balanceOf(id)).toBe(1000);
    });

    it("refused before it is judged (its key revoked meanwhile), spends nothing: what the first try paid comes back", async () => {
      const { id, lost } = await paidOnce();
      await env.DB.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?").bind(new Date().toISOString(), id).run();
      await evictDurableObject(keyStub(id));
      expect(await authorize(lost)).toMatchObject({ ok: false });
      expect(await balanceOf(id)).toBe(1000);
    });

    it("pays nothing again when the balance was set outright between the tries: the first payment stands", async () => {
      const { id, lost } = await paidOnce();
      await evictDurableObject(keyStub(id));
      const set = await keyStub(id).adjustCredits(id, {
        operation: "set",
        amount: 500,
        actor: "test",
        idempotencyKey: crypto.randomUUID(),
      });
      expect(set).toMatchObject({ ok: true });
      expect(await authorize(lost)).toMatchObject({ ok: true, granted: { allowed: true } });
      expect(await balanceOf(id)).toBe(500);
      // Its upstream then fails: what it paid was spent before the set, so nothing of it comes back, whatever instance
      // of the object the refund reaches.
      await evictDurableObject(keyStub(id));
      await keyStub(id).refund({ at: Date.now(), cost: 1, costs: { default: 1 }, credits: 5, requestId: lost.tag.id, tag: tag() });
      expect(await balanceOf(id)).toBe(500);
    });

    it("a lease's renewal, which pays only for its lease, gets its first lease's credits back", async () => {
      const id = await key();
      for (let i = 0; i < 60; i++) await authorize({ ...attempt(id), credits: 0, tag: tag() });
      const renewal = { ...attempt(id), credits: 0, cost: 0, lease: true, perUnit: 5, tag: tag() };
      const first = await authorize(renewal);
      if (!first.ok || !first.granted.lease?.credits) throw new Error("no lease");
      await evictDurableObject(keyStub(id));
      const again = await authorize(renewal);
      if (!again.ok) throw new Error("refused");
      expect(await balanceOf(id)).toBe(1000 - (again.granted.lease?.credits ?? 0));
    });

    it("at a rotated key, refused, what comes back moves on to the new key", async () => {
      const account = await provision();
      const old = await createKey(account.key.key, { credits: { remaining: 1000 }, rateLimit: { limit: 1, windowSeconds: 60 } });
      const lost = { ...attempt(old.id), tag: tag() };
      await authorize(lost);
      const rotated = await call(`/v1/api-keys/${old.id}/rotate`, { key: account.key.key, body: { gracePeriodSeconds: 3600 } });
      const fresh = await rotated.json<{ id: string }>();
      expect(await balanceOf(fresh.id)).toBe(995);
      await evictDurableObject(keyStub(old.id));
      // The first try's admission fills the old key's limit: the try is refused, and what the first paid is the new key's.
      expect(await authorize(lost)).toMatchObject({ ok: true, granted: { allowed: false } });
      await vi.waitFor(async () => expect(await balanceOf(fresh.id)).toBe(1000));
      expect((await balanceOf(old.id)) ?? 0).toBe(0);
    });

    it("with an Idempotency-Key, refused (its address no longer allowed), leaves the key free for the request's retry", async () => {
      const account = await provision();
      const k = await createKey(account.key.key, { credits: { remaining: 1000 }, rateLimit: { limit: 100_000, windowSeconds: 60 } });
      const idempotency = { key: "order-8", pendingMs: 30_000, fingerprint: "f" };
      const lost = { ...attempt(k.id), ip: "10.0.0.1", idempotency, tag: tag() };
      await authorize(lost);
      const patched = await call(`/v1/api-keys/${k.id}`, { method: "PATCH", key: account.key.key, body: { allowedIps: ["10.0.0.2/32"] } });
      expect(patched.status).toBe(200);
      await evictDurableObject(keyStub(k.id));
      expect(await authorize(lost)).toMatchObject({ ok: false, refusal: "ip_not_allowed" });
      expect(await balanceOf(k.id)).toBe(1000);
      // The client tries the request again from an allowed address: charged as a first request, not held as in flight.
      expect(await authorize({ ...lost, ip: "10.0.0.2", tag: tag() })).toMatchObject({ ok: true, granted: { allowed: true } });
      expect(await balanceOf(k.id)).toBe(995);
    });

    it("with an Idempotency-Key, is judged as the call that claimed it, not as another request in flight", async () => {
      const id = await key();
      const lost = { ...attempt(id), idempotency: { key: "order-7", pendingMs: 30_000, fingerprint: "f" }, tag: tag() };
      await authorize(lost);
      await evictDurableObject(keyStub(id));
      expect(await authorize(lost)).toMatchObject({ ok: true, granted: { allowed: true } });
      expect(await balanceOf(id)).toBe(995);
      // Another request under the key, while the first is in flight, is still refused.
      expect(await authorize({ ...lost, tag: tag() })).toMatchObject({ ok: false, code: "idempotency_in_flight" });
    });
  });

  it("50 concurrent retries with one Idempotency-Key pay once; after 24 hours the key pays again", async () => {
    const { key } = await metered({ remaining: 100 });
    const retry = () => gw("/v1/messages/send", { key: key.key, headers: { "Idempotency-Key": "order-42" } });
    const answers = await Promise.all(Array.from({ length: 50 }, retry));
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s !== 200 && s !== 409)).toEqual([]);
    expect(statuses).toContain(200);
    const conflict = answers.find((r) => r.status === 409);
    if (conflict) expect(await expectProblem(conflict, 409, "idempotency_in_flight")).toBeTruthy();
    expect(await balanceOf(key.id)).toBe(99);
    // Once the first is answered, a retry is served and charged nothing; the upstream gets the key for its own dedup.
    const served = await retry();
    expect(served.status).toBe(200);
    expect(((await served.json()) as { headers: Record<string, string> }).headers["idempotency-key"]).toBe("order-42");
    expect(await balanceOf(key.id)).toBe(99);
    // Another key is another request.
    expect((await gw("/v1/messages/send", { key: key.key, headers: { "Idempotency-Key": "order-43" } })).status).toBe(200);
    expect(await balanceOf(key.id)).toBe(98);
    const later = Date.now() + IDEMPOTENCY_MS + 1000;
    await clockOf(key.id, () => later);
    expect((await retry()).status).toBe(200);
    expect(await balanceOf(key.id)).toBe(97);
  });

  it("the upstream sees the key a request was charged under, however the client spelled or hid it", async () => {
    const { key } = await metered({ remaining: 10 });
    const seen = async (headers: Record<string, string>) => {
      const res = await gw("/v1/messages/send", { key: key.key, headers });
      expect(res.status).toBe(200);
      return ((await res.json()) as { headers: Record<string, string> }).headers["idempotency-key"];
    };
    expect(await seen({ "Idempotency-Key": "order-7" })).toBe("order-7");
    // Free retries, each the same request to Keygate: the upstream must be able to tell them for its own deduplication.
    expect(await seen({ "Idempotency-Key": '"order-7"' })).toBe("order-7");
    expect(await seen({ "Idempotency-Key": "order-7", Connection: "Idempotency-Key" })).toBe("order-7");
    expect(await balanceOf(key.id)).toBe(9);
  });

  it("a first request whose upstream failed is given back, so its retry pays; a malformed key is 400", async () => {
    const { key } = await metered({ remaining: 10 });
    const send = (status: string) =>
      gw("/v1/messages/send", { key: key.key, headers: { "Idempotency-Key": "job-1", "X-Test-Status": status } });
    expect((await send("502")).status).toBe(502);
    expect(await balanceOf(key.id)).toBe(10);
    expect((await send("200")).status).toBe(200);
    expect(await balanceOf(key.id)).toBe(9);
    await expectProblem(await gw("/v1/messages/x", { key: key.key, headers: { "Idempotency-Key": "" } }), 400, "invalid_request");
  });

  it("verify charges once per idempotency key", async () => {
    const { key } = await metered({ remaining: 10 });
    const verify = () =>
      call("/v1/keys/verify", {
        headers: { Authorization: `Bearer ${VERIFY_TOKEN}`, "Idempotency-Key": "v-1" },
        body: { key: key.key, credits: 4 },
      });
    expect(await (await verify()).json()).toMatchObject({ valid: true, credits: { remaining: 6 } });
    expect(await (await verify()).json()).toMatchObject({ valid: true });
    expect(await balanceOf(key.id)).toBe(6);
  });
});

describe("settled later", () => {
  it("a stream settled through the API; a second settle, another account's, or one after the timeout change nothing", async () => {
    const { accountId, key } = await metered({ remaining: 1000 });
    const res = await gw("/v1/completions/stream", { key: key.key });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("X-Request-Id") as string;
    expect(await balanceOf(key.id)).toBe(900);
    const settle = (body: Record<string, unknown>) =>
      call("/v1/credits/settle", {
        headers: { Authorization: `Bearer ${VERIFY_TOKEN}` },
        body: { requestId, accountId, keyId: key.id, ...body },
      });
    const other = await provision();
    await expectProblem(await settle({ used: 1, accountId: other.account.id }), 404, "not_found");
    expect(await balanceOf(key.id)).toBe(900);
    expect(await (await settle({ used: 37 })).json()).toEqual({ requestId, charged: 37, overrun: 0 });
    expect(await balanceOf(key.id)).toBe(963);
    await expectProblem(await settle({ used: 1 }), 404, "not_found");
    expect(await balanceOf(key.id)).toBe(963);
  });

  it("a reservation nobody settles settles at its reserve after CREDITS_SETTLE_TIMEOUT_S", async () => {
    const { accountId, key } = await metered({ remaining: 500 });
    const res = await gw("/v1/completions/stream", { key: key.key }, { CREDITS_SETTLE_TIMEOUT_S: "60" });
    const requestId = res.headers.get("X-Request-Id") as string;
    expect(await balanceOf(key.id)).toBe(400);
    const later = Date.now() + 61_000;
    await clockOf(key.id, () => later);
    expect(await balanceOf(key.id)).toBe(400);
    const late = await call("/v1/credits/settle", {
      headers: { Authorization: `Bearer ${VERIFY_TOKEN}` },
      body: { requestId, used: 5, accountId, keyId: key.id },
    });
    await expectProblem(late, 404, "not_found");
    expect(await balanceOf(key.id)).toBe(400);
  });
});

describe("refills", () => {
  const MONTH = 31 * 86_400_000;

  it("three months without traffic apply three `add`s, or one `set`, each a ledger entry", async () => {
    const add = await metered({ remaining: 10, refill: { amount: 100, interval: "month", mode: "add" } });
    const set = await metered({ remaining: 10, refill: { amount: 100, interval: "month", mode: "set" } });
    expect(await balanceOf(add.key.id)).toBe(10);
    expect(await balanceOf(set.key.id)).toBe(10);
    const later = Date.now() + 3 * MONTH;
    for (const { key } of [add, set]) await clockOf(key.id, () => later);
    expect(await balanceOf(add.key.id)).toBe(310);
    expect(await balanceOf(set.key.id)).toBe(100);
    const addEntries = await ledgerOf(add.admin.key, add.key.id);
    expect(addEntries.filter((e) => e.kind === "refill").map((e) => e.delta)).toEqual([100, 100, 100]);
    expect(sum(addEntries)).toBe(310);
    const setEntries = await ledgerOf(set.admin.key, set.key.id);
    expect(setEntries.filter((e) => e.kind === "refill").map((e) => e.delta)).toEqual([90]);
    // Judged again at the same instant: no boundary is applied twice.
    expect(await balanceOf(add.key.id)).toBe(310);
  });

  it("a refill racing spends loses nothing: the spends on either side of the boundary each come off once", async () => {
    const { admin, key } = await metered({ remaining: 5, refill: { amount: 20, interval: "hour", mode: "add" } });
    const boundary = Math.floor(Date.now() / 3_600_000) * 3_600_000 + 3_600_000;
    let now = boundary - 1000;
    await clockOf(key.id, () => now);
    const burst = async () =>
      (await Promise.all(Array.from({ length: 30 }, () => gw("/v1/messages/a", { key: key.key })))).map((r) => r.status);
    const before = await burst();
    expect(before.filter((s) => s === 200)).toHaveLength(5);
    expect(before.filter((s) => s !== 402 && s !== 200)).toEqual([]);
    // The boundary passes while requests arrive: the refill applies once, before the first spend after it.
    now = boundary + 1;
    const after = await burst();
    expect(after.filter((s) => s === 200)).toHaveLength(20);
    expect(await balanceOf(key.id)).toBe(0);
    const entries = await ledgerOf(admin.key, key.id);
    expect(entries.filter((e) => e.kind === "refill").map((e) => e.delta)).toEqual([20]);
    expect(sum(entries)).toBe(0);
  });
});

describe("faults mid-spend", () => {
  it("the key's object throwing or stalling is 503 and spends nothing; open mode meters no request that spends credits", async () => {
    const { key } = await metered({ remaining: 10 });
    for (const fault of [{ kind: "throw" as const }, { kind: "stall" as const }]) {
      const broken = { KEYS: faultyObjects(env.KEYS, { authorize: fault }), RATE_LIMIT_TIMEOUT_MS: "200" };
      await expectProblem(await gw("/v1/messages/a", { key: key.key }, broken), 503, "rate_limiter_unavailable");
      await expectProblem(
        await gw("/v1/messages/a", { key: key.key }, { ...broken, RATE_LIMIT_FAILURE_MODE: "open" }),
        503,
        "rate_limiter_unavailable",
      );
      // A route that spends no credits goes through unlimited in open mode, as before.
      const free = await gw("/v1/other", { key: key.key }, { ...broken, RATE_LIMIT_FAILURE_MODE: "open" });
      expect(free.status).toBe(200);
      expect(free.headers.get("X-RateLimit-Status")).toBe("unavailable");
    }
    expect(await balanceOf(key.id)).toBe(10);
  });

  it("a call that reaches the object after its caller gave up spends nothing", async () => {
    const { key } = await metered({ remaining: 10 });
    const late = faultyObjects(env.KEYS, { authorize: { kind: "late-call", ms: 400 } });
    await expectProblem(
      await gw("/v1/messages/a", { key: key.key }, { KEYS: late, RATE_LIMIT_TIMEOUT_MS: "100" }),
      503,
      "rate_limiter_unavailable",
    );
    await late.settled();
    expect(await balanceOf(key.id)).toBe(10);
  });
});

describe("credits in usage", () => {
  it("an admin's usage series counts what the pool spent, once the ledger has it; a member's does not", async () => {
    const { account, key } = await provision({ credits: { remaining: 100 } });
    const spender = await createKey(key.key);
    for (let i = 0; i < 4; i++) expect((await gw("/v1/messages/a", { key: spender.key })).status).toBe(200);
    await runDurableObjectAlarm(env.ACCOUNTS.getByName(`account:${account.id}`));
    const from = new Date(Date.now() - 3_600_000).toISOString();
    const to = new Date(Date.now() + 3_600_000).toISOString();
    const usage = await (await call(`/v1/account/usage?from=${from}&to=${to}`, { key: key.key })).json<{
      series: { creditsSpent: number }[];
    }>();
    expect(usage.series.reduce((n, h) => n + h.creditsSpent, 0)).toBe(4);
    const { key: member } = await memberWithKey(key.key);
    const theirs = await (await call(`/v1/account/usage?from=${from}&to=${to}`, { key: member.key })).json<{
      series: { creditsSpent: number }[];
    }>();
    expect(theirs.series.reduce((n, h) => n + h.creditsSpent, 0)).toBe(0);
  });
});
