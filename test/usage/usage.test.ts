import {
  createExecutionContext,
  createMessageBatch,
  evictDurableObject,
  getQueueResult,
  runDurableObjectAlarm,
  runInDurableObject,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import worker from "../../src/index";
import type { UsageMessage } from "../../src/usage/queue";
import { UsageHistory } from "../../src/usage/tally";
import { faultyDatabase, faultyObjects, faultyQueue, objectQueue } from "../faults";
import { call, createKey, expectProblem, memberWithKey, provision, rows } from "../helpers";
import { type Counts, EVER, flush, keyStub, rolledUp, sum, ZERO } from "./seed";

const hourOf = (ms: number) => new Date(Math.floor(ms / 3_600_000) * 3_600_000).toISOString();

/** What the key's object counted, over every hour it has, each of which must be one since `since`. */
async function counted(keyId: string, since: number): Promise<Counts> {
  const hours = await keyStub(keyId).usageHours(...EVER);
  for (const h of hours) expect(h.hour >= hourOf(since) && h.hour <= hourOf(Date.now())).toBe(true);
  return sum(hours);
}

/** Sends `n` requests with the key, one after another; answers their statuses. */
async function send(key: string, n: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) statuses.push((await call("/v1/whoami", { key })).status);
  return statuses;
}

describe("usage per key and hour", () => {
  it("counts admitted and rate-limited requests in the key's object, answered at once; the account's rollup gets them through the queue at the alarm", async () => {
    const { account, key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 3, windowSeconds: 60 } });
    const since = Date.now();
    expect(await send(limited.key, 5)).toEqual([200, 200, 200, 429, 429]);
    expect(await counted(limited.id, since)).toEqual({ admitted: 3, rateLimited: 2, creditsSpent: 0 });
    const own = await (await call(`/v1/api-keys/${limited.id}/usage`, { key: key.key })).json<{ series: Counts[] }>();
    expect(sum(own.series)).toEqual({ admitted: 3, rateLimited: 2, creditsSpent: 0 });
    // Nothing leaves the object per request: the rollup has nothing until the alarm sends it, and D1 has no usage rows.
    expect(await rolledUp(account.id, limited.id)).toEqual(ZERO);
    expect(await runDurableObjectAlarm(keyStub(limited.id))).toBe(true);
    await vi.waitFor(async () => expect(await rolledUp(account.id, limited.id)).toEqual({ admitted: 3, rateLimited: 2, creditsSpent: 0 }), {
      timeout: 10_000,
      interval: 100,
    });
    // A second flush brings what came since, and only that.
    await send(limited.key, 1);
    await flush(limited.id, account.id);
    expect(await rolledUp(account.id, limited.id)).toEqual({ admitted: 3, rateLimited: 3, creditsSpent: 0 });
  });

  it("counts nothing for a request refused for its scope (it spends nothing)", async () => {
    const { key } = await provision();
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_u"] });
    const since = Date.now();
    // A resource-scoped key on a full-access route: refused before spending.
    for (let i = 0; i < 2; i++) await expectProblem(await call("/v1/api-keys", { key: scoped.key }), 403, "insufficient_scope");
    await send(scoped.key, 2);
    expect(await counted(scoped.id, since)).toEqual({ admitted: 2, rateLimited: 0, creditsSpent: 0 });
  });

  it("keeps what it counted across the object's eviction, and its alarm", async () => {
    const { account, key } = await provision();
    const k = await createKey(key.key);
    const since = Date.now();
    await send(k.key, 2);
    await evictDurableObject(keyStub(k.id));
    expect(await counted(k.id, since)).toEqual({ admitted: 2, rateLimited: 0, creditsSpent: 0 });
    await flush(k.id, account.id);
    expect(await rolledUp(account.id, k.id)).toEqual({ admitted: 2, rateLimited: 0, creditsSpent: 0 });
  });

  it("keeps what it could not send when the queue fails, and sends it at the next alarm", async () => {
    const { account, key } = await provision();
    const k = await createKey(key.key);
    await send(k.key, 2);
    const restore = await objectQueue(keyStub(k.id), () =>
      faultyQueue(env.USAGE, { kind: "throw", error: new Error("Queue send failed: internal error") }),
    );
    expect(await runDurableObjectAlarm(keyStub(k.id))).toBe(true);
    await restore();
    expect(await rolledUp(account.id, k.id)).toEqual(ZERO);
    // The failed send set the next alarm itself.
    await flush(k.id, account.id);
    expect(await rolledUp(account.id, k.id)).toEqual({ admitted: 2, rateLimited: 0, creditsSpent: 0 });
  });

  it("counts a batch delivered twice once, and a copy overtaken by a later one changes nothing", async () => {
    const { account, key } = await provision();
    const k = await createKey(key.key);
    await send(k.key, 2);
    await flush(k.id, account.id);
    const first = await keyStub(k.id).usageHours(...EVER);
    await send(k.key, 3);
    await flush(k.id, account.id);
    expect(await rolledUp(account.id, k.id)).toEqual({ admitted: 5, rateLimited: 0, creditsSpent: 0 });
    // The two copies again, through the real queue, the later first: each hour as it stood, with its revision.
    const copy = (hours: Counts[], rev: number): UsageMessage => ({
      usage: { keyId: k.id, accountId: account.id, hours: hours.map((h) => ({ ...(h as Counts & { hour: string }), rev })) },
    });
    const revOf = async () =>
      runInDurableObject(
        keyStub(k.id),
        (_, state) => state.storage.sql.exec<{ rev: number }>("SELECT max(rev) AS rev FROM usage_hours").one().rev,
      );
    const latest = await revOf();
    await env.USAGE.send(copy(await keyStub(k.id).usageHours(...EVER), latest));
    await env.USAGE.send(copy(first, 1));
    await env.USAGE.send(copy(first, 1));
    // Sent last, so delivered after them: once it is in, they were handled before it.
    const marker = await createKey(key.key);
    await send(marker.key, 1);
    await flush(marker.id, account.id);
    expect(await rolledUp(account.id, k.id)).toEqual({ admitted: 5, rateLimited: 0, creditsSpent: 0 });
  });

  it("retries a batch whose account object or D1 failed, and the rest of it is done; one D1 statement for the batch's last uses", async () => {
    const { account, key } = await provision();
    const other = await provision();
    const hour = hourOf(Date.now());
    const message = (accountId: string, keyId: string, admitted: number): UsageMessage => ({
      usage: {
        keyId,
        accountId,
        hours: [{ hour, admitted, rateLimited: 0, creditsSpent: 0, rev: 1 }],
        lastUse: { at: new Date().toISOString(), method: "bearer" },
      },
    });
    const statements: string[] = [];
    const db = faultyDatabase(env.DB, { kind: "throw", times: 0 }, (sql) => {
      statements.push(sql);
      return false;
    });
    const accounts = faultyObjects(env.ACCOUNTS, { recordUsage: { kind: "throw", times: 1 } });
    const batch = createMessageBatch<UsageMessage>("keygate-usage", [
      { id: "m1", timestamp: new Date(), attempts: 1, body: message(account.id, key.id, 4) },
      { id: "m2", timestamp: new Date(), attempts: 1, body: message(other.account.id, other.key.id, 6) },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, { ...env, DB: db, ACCOUNTS: accounts }, ctx);
    const result = await getQueueResult(batch, ctx);
    // One of the two accounts' objects failed (the first call): its message comes again; the other's is done.
    expect(result.retryMessages).toHaveLength(1);
    expect(result.explicitAcks).toEqual([]);
    const retried = result.retryMessages[0]?.msgId;
    const done = retried === "m1" ? other : { account, key };
    expect(await rolledUp(done.account.id, done.key.id)).toMatchObject({ admitted: retried === "m1" ? 6 : 4 });
    // Both keys' last uses in one statement.
    expect(statements.filter((s) => s.includes("last_used_at"))).toHaveLength(1);
    const uses = await rows<{ last_used_at: string | null }>("SELECT last_used_at FROM api_keys WHERE id IN (?, ?)", key.id, other.key.id);
    expect(uses.every((u) => u.last_used_at !== null)).toBe(true);

    // D1 down: every message with a last use comes again.
    const down = createMessageBatch<UsageMessage>("keygate-usage", [
      { id: "m3", timestamp: new Date(), attempts: 1, body: message(account.id, key.id, 4) },
    ]);
    const ctx2 = createExecutionContext();
    await worker.queue(down, { ...env, DB: faultyDatabase(env.DB, { kind: "throw" }) }, ctx2);
    expect((await getQueueResult(down, ctx2)).retryMessages.map((m) => m.msgId)).toEqual(["m3"]);
  });

  it("answers a key's hours without gaps, and the account's with each key's totals in one call", async () => {
    const since = Date.now();
    const { account, key } = await provision();
    const a = await createKey(key.key, { name: "a" });
    const b = await createKey(key.key, { name: "b", rateLimit: { limit: 1, windowSeconds: 60 } });
    await send(a.key, 3);
    await send(b.key, 3);
    await Promise.all([flush(a.id, account.id), flush(b.id, account.id), flush(key.id, account.id)]);
    // Three hours up to the end of the current one: the requests' hour (or two, across the top of an hour) and the
    // hours before them, without requests.
    const to = new Date(Date.parse(hourOf(Date.now())) + 3_600_000).toISOString();
    const hours = [3, 2, 1].map((n) => new Date(Date.parse(to) - n * 3_600_000).toISOString());
    const from = hours[0] as string;
    expect(await counted(a.id, since)).toEqual({ admitted: 3, rateLimited: 0, creditsSpent: 0 });
    const hoursOfA = await keyStub(a.id).usageHours(...EVER);
    const res = await call(`/v1/api-keys/${a.id}/usage?from=${from}&to=${to}`, { key: key.key });
    expect(await res.json()).toEqual({
      keyId: a.id,
      from,
      to,
      series: hours.map((hour) => ({
        hour,
        admitted: hoursOfA.find((r) => r.hour === hour)?.admitted ?? 0,
        rateLimited: 0,
        creditsSpent: 0,
      })),
    });
    const usage = await (await call(`/v1/account/usage?from=${from}&to=${to}`, { key: key.key })).json<{
      series: { hour: string; admitted: number; rateLimited: number }[];
      keys: { keyId: string; admitted: number; rateLimited: number }[];
    }>();
    const totals = Object.fromEntries(usage.keys.map((k) => [k.keyId, [k.admitted, k.rateLimited]]));
    expect(totals[a.id]).toEqual([3, 0]);
    expect(totals[b.id]).toEqual([1, 2]);
    expect(usage.series.map((h) => h.hour)).toEqual(hours);
    const total = (list: { admitted: number; rateLimited: number }[], f: "admitted" | "rateLimited") => list.reduce((n, h) => n + h[f], 0);
    expect([total(usage.series, "admitted"), total(usage.series, "rateLimited")]).toEqual([total(usage.keys, "admitted"), 2]);
    expect(usage.series.filter((h) => h.hour < hourOf(since))).toEqual(
      hours.filter((h) => h < hourOf(since)).map((hour) => ({ hour, admitted: 0, rateLimited: 0, creditsSpent: 0 })),
    );
  });

  it("shows a member only their own keys, and refuses bad ranges", async () => {
    const { account, key } = await provision({ membersCanCreateKeys: true });
    const member = await memberWithKey(key.key);
    await send(key.key, 2);
    await send(member.key.key, 1);
    await Promise.all([flush(key.id, account.id), flush(member.key.id, account.id)]);
    await expectProblem(await call(`/v1/api-keys/${key.id}/usage`, { key: member.key.key }), 404, "not_found");
    const mine = await (await call("/v1/account/usage", { key: member.key.key })).json<{ keys: { keyId: string }[]; series: Counts[] }>();
    expect(mine.keys.map((k) => k.keyId)).toEqual([member.key.id]);
    expect(sum(mine.series).admitted).toBe(1);
    const all = await (await call("/v1/account/usage", { key: key.key })).json<{ keys: { keyId: string }[] }>();
    expect(all.keys.map((k) => k.keyId).sort()).toEqual([key.id, member.key.id].sort());
    for (const query of [
      "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
      "from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
      "from=yesterday",
      // Instants past the end of year 9999 UTC would be written with a six-digit year and compare wrongly as text.
      "from=9999-12-31T23:59:59-23:59",
      "to=9999-12-31T23:59:59-23:59",
      "from=2026-02-30T00:00:00Z",
    ])
      await expectProblem(await call(`/v1/account/usage?${query}`, { key: key.key }), 400, "invalid_request");
  });

  it("counts the credits a key's requests spent per hour beside them, and every series and total sums them", async () => {
    const { account, key } = await provision({ membersCanCreateKeys: true });
    const a = await createKey(key.key, { name: "a" });
    const member = await memberWithKey(key.key);
    await send(a.key, 2);
    await send(member.key.key, 1);
    // What the key's object counts as its requests spend credits: spent, then some given back.
    const spend = (keyId: string, ...credits: number[]) =>
      runInDurableObject(keyStub(keyId), (_, state) => {
        const history = new UsageHistory(state.storage.sql);
        for (const c of credits) history.count(Date.now(), 0, 0, c);
      });
    await spend(a.id, 7, 3, -2);
    await spend(member.key.id, 5);
    await Promise.all([flush(a.id, account.id), flush(member.key.id, account.id)]);
    expect([(await rolledUp(account.id, a.id)).creditsSpent, (await rolledUp(account.id, member.key.id)).creditsSpent]).toEqual([8, 5]);
    type Usage = {
      series: { admitted: number; creditsSpent: number }[];
      keys: { keyId: string; admitted: number; creditsSpent: number }[];
    };
    const total = (series: { creditsSpent: number }[]) => series.reduce((n, h) => n + h.creditsSpent, 0);
    const all = await (await call("/v1/account/usage", { key: key.key })).json<Usage>();
    expect(total(all.series)).toBe(13);
    expect(Object.fromEntries(all.keys.map((k) => [k.keyId, [k.admitted, k.creditsSpent]]))).toEqual({
      [a.id]: [2, 8],
      [member.key.id]: [1, 5],
    });
    const mine = await (await call("/v1/account/usage", { key: member.key.key })).json<Usage>();
    expect([total(mine.series), mine.keys.map((k) => k.creditsSpent)]).toEqual([5, [5]]);
    const ofA = await (await call(`/v1/api-keys/${a.id}/usage`, { key: key.key })).json<Usage>();
    expect(total(ofA.series)).toBe(8);
    // A second flush brings what came since, and only that.
    await spend(a.id, 4);
    await send(a.key, 1);
    await flush(a.id, account.id);
    expect((await rolledUp(account.id, a.id)).creditsSpent).toBe(12);
  });

  it("keeps the counts an object made before its usage left through the queue, and sends them", async () => {
    const hour = hourOf(Date.now());
    await runInDurableObject(env.KEYS.getByName(`usage-before-queue:${crypto.randomUUID()}`), (_, state) => {
      // The table as such an object made it (before credits, too): what it had not written to D1 yet.
      state.storage.sql.exec("DROP TABLE IF EXISTS usage_hours");
      state.storage.sql.exec(
        "CREATE TABLE usage_pending (hour TEXT PRIMARY KEY, admitted INTEGER NOT NULL, rate_limited INTEGER NOT NULL)",
      );
      state.storage.sql.exec("INSERT INTO usage_pending VALUES (?, 4, 1)", hour);
      const history = new UsageHistory(state.storage.sql);
      expect(history.unsent()).toEqual([{ hour, admitted: 4, rateLimited: 1, creditsSpent: 0, rev: 1 }]);
      history.count(Date.parse(hour), 1, 0, 9);
      const [revised] = history.unsent();
      expect(revised).toEqual({ hour, admitted: 5, rateLimited: 1, creditsSpent: 9, rev: 2 });
      // Sent: counted on while it was on its way, the hour stays to be sent again, as it then stands.
      history.count(Date.parse(hour), 0, 0, 2);
      history.sent([revised as NonNullable<typeof revised>]);
      expect(history.unsent()).toEqual([{ hour, admitted: 5, rateLimited: 1, creditsSpent: 11, rev: 3 }]);
      expect(new UsageHistory(state.storage.sql).hours(hour, "2100-01-01")).toEqual([
        { hour, admitted: 5, rateLimited: 1, creditsSpent: 11 },
      ]);
    });
  });
});
