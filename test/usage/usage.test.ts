import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { UsageTally } from "../../src/usage/tally";
import { faultyDatabase, objectDatabase } from "../faults";
import { call, createKey, expectProblem, memberWithKey, provision, rows } from "../helpers";

const hourOf = (ms: number) => new Date(Math.floor(ms / 3_600_000) * 3_600_000).toISOString();
const stored = (keyId: string) =>
  rows<{ hour: string; admitted: number; rate_limited: number }>(
    "SELECT hour, admitted, rate_limited FROM key_usage WHERE key_id = ?",
    keyId,
  );
const flush = (keyId: string) => runDurableObjectAlarm(env.KEYS.getByName(`key:${keyId}`));

/** Every hour from the one `since` fell in to the current one: a request is counted in the hour it arrives in. */
function hoursSince(since: number): string[] {
  const hours: string[] = [];
  for (let t = Date.parse(hourOf(since)); t <= Date.now(); t += 3_600_000) hours.push(new Date(t).toISOString());
  return hours;
}

/**
 * A key's stored counts, summed over its hours, each of which must be one since `since`: requests sent just before the
 * top of an hour may be counted in the next, so a test asserts the sum, not which hour got it.
 */
async function counted(keyId: string, since: number): Promise<{ admitted: number; rate_limited: number }> {
  const found = await stored(keyId);
  const hours = hoursSince(since);
  for (const row of found) expect(hours).toContain(row.hour);
  return found.reduce((t, r) => ({ admitted: t.admitted + r.admitted, rate_limited: t.rate_limited + r.rate_limited }), {
    admitted: 0,
    rate_limited: 0,
  });
}

/** Sends `n` requests with the key, one after another; answers their statuses. */
async function send(key: string, n: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) statuses.push((await call("/v1/whoami", { key })).status);
  return statuses;
}

describe("usage per key and hour", () => {
  it("counts admitted and rate-limited requests in the key's object, and writes them to D1 only when its alarm runs", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 3, windowSeconds: 60 } });
    const since = Date.now();
    expect(await send(limited.key, 5)).toEqual([200, 200, 200, 429, 429]);
    // No D1 write per request: nothing is there until the object flushes.
    expect(await stored(limited.id)).toEqual([]);
    expect(await flush(limited.id)).toBe(true);
    expect(await counted(limited.id, since)).toEqual({ admitted: 3, rate_limited: 2 });
    // A second flush adds what came since, and only that.
    await send(limited.key, 1);
    await flush(limited.id);
    expect(await counted(limited.id, since)).toEqual({ admitted: 3, rate_limited: 3 });
  });

  it("counts nothing for a request refused for its scope (it spends nothing)", async () => {
    const { key } = await provision();
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_u"] });
    const since = Date.now();
    // A resource-scoped key on a full-access route: refused before spending.
    for (let i = 0; i < 2; i++) await expectProblem(await call("/v1/api-keys", { key: scoped.key }), 403, "insufficient_scope");
    await send(scoped.key, 2);
    await flush(scoped.id);
    expect(await counted(scoped.id, since)).toEqual({ admitted: 2, rate_limited: 0 });
  });

  it("keeps what it counted across the object's eviction, and its alarm", async () => {
    const { key } = await provision();
    const k = await createKey(key.key);
    const since = Date.now();
    await send(k.key, 2);
    await evictDurableObject(env.KEYS.getByName(`key:${k.id}`));
    expect(await flush(k.id)).toBe(true);
    expect(await counted(k.id, since)).toEqual({ admitted: 2, rate_limited: 0 });
  });

  it("keeps what it counted when D1 fails, and writes it at the next alarm", async () => {
    const { key } = await provision();
    const k = await createKey(key.key);
    const since = Date.now();
    await send(k.key, 2);
    const stub = env.KEYS.getByName(`key:${k.id}`);
    const restore = await objectDatabase(stub, () =>
      faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: Network connection lost.") }),
    );
    await flush(k.id);
    expect(await stored(k.id)).toEqual([]);
    await restore();
    // The failed flush set the next alarm itself.
    expect(await flush(k.id)).toBe(true);
    expect(await counted(k.id, since)).toEqual({ admitted: 2, rate_limited: 0 });
  });

  it("answers a key's hours without gaps, and the account's with each key's totals in one call", async () => {
    const since = Date.now();
    const { key } = await provision();
    const a = await createKey(key.key, { name: "a" });
    const b = await createKey(key.key, { name: "b", rateLimit: { limit: 1, windowSeconds: 60 } });
    await send(a.key, 3);
    await send(b.key, 3);
    await Promise.all([flush(a.id), flush(b.id), flush(key.id)]);
    // Three hours up to the end of the current one: the requests' hour (or two, across the top of an hour) and the
    // hours before them, without requests.
    const to = new Date(Date.parse(hourOf(Date.now())) + 3_600_000).toISOString();
    const hours = [3, 2, 1].map((n) => new Date(Date.parse(to) - n * 3_600_000).toISOString());
    const from = hours[0] as string;
    expect(await counted(a.id, since)).toEqual({ admitted: 3, rate_limited: 0 });
    const hoursOfA = await stored(a.id);
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
    const account = await (await call(`/v1/account/usage?from=${from}&to=${to}`, { key: key.key })).json<{
      series: { hour: string; admitted: number; rateLimited: number }[];
      keys: { keyId: string; admitted: number; rateLimited: number }[];
    }>();
    const totals = Object.fromEntries(account.keys.map((k) => [k.keyId, [k.admitted, k.rateLimited]]));
    expect(totals[a.id]).toEqual([3, 0]);
    expect(totals[b.id]).toEqual([1, 2]);
    expect(account.series.map((h) => h.hour)).toEqual(hours);
    const sum = (list: { admitted: number; rateLimited: number }[], f: "admitted" | "rateLimited") => list.reduce((n, h) => n + h[f], 0);
    expect([sum(account.series, "admitted"), sum(account.series, "rateLimited")]).toEqual([sum(account.keys, "admitted"), 2]);
    expect(account.series.filter((h) => h.hour < hourOf(since))).toEqual(
      hours.filter((h) => h < hourOf(since)).map((hour) => ({ hour, admitted: 0, rateLimited: 0, creditsSpent: 0 })),
    );
  });

  it("shows a member only their own keys, and refuses bad ranges", async () => {
    const { key } = await provision({ membersCanCreateKeys: true });
    const member = await memberWithKey(key.key);
    await send(key.key, 2);
    await send(member.key.key, 1);
    await Promise.all([flush(key.id), flush(member.key.id)]);
    await expectProblem(await call(`/v1/api-keys/${key.id}/usage`, { key: member.key.key }), 404, "not_found");
    const mine = await (await call("/v1/account/usage", { key: member.key.key })).json<{ keys: { keyId: string }[] }>();
    expect(mine.keys.map((k) => k.keyId)).toEqual([member.key.id]);
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
    const { key } = await provision({ membersCanCreateKeys: true });
    const a = await createKey(key.key, { name: "a" });
    const member = await memberWithKey(key.key);
    await send(a.key, 2);
    await send(member.key.key, 1);
    // What the key's object counts as its requests spend credits: spent, then some given back.
    const spend = (keyId: string, ...credits: number[]) =>
      runInDurableObject(env.KEYS.getByName(`key:${keyId}`), (_, state) => {
        const tally = new UsageTally(state.storage.sql);
        for (const c of credits) tally.count(Date.now(), 0, 0, c);
      });
    await spend(a.id, 7, 3, -2);
    await spend(member.key.id, 5);
    await Promise.all([flush(a.id), flush(member.key.id)]);
    const credits = async (keyId: string) =>
      (await rows<{ c: number }>("SELECT sum(credits_spent) AS c FROM key_usage WHERE key_id = ?", keyId))[0]?.c;
    expect([await credits(a.id), await credits(member.key.id)]).toEqual([8, 5]);
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
    // A second flush adds what came since, and only that (the request sets the object's alarm again).
    await spend(a.id, 4);
    await send(a.key, 1);
    await flush(a.id);
    expect(await credits(a.id)).toBe(12);
  });

  it("keeps the counts of an object that counted before credits existed, and counts credits beside them", async () => {
    const hour = hourOf(Date.now());
    await runInDurableObject(env.KEYS.getByName(`usage-before-credits:${crypto.randomUUID()}`), (_, state) => {
      // The table as such an object made it.
      state.storage.sql.exec("DROP TABLE usage_pending");
      state.storage.sql.exec(
        "CREATE TABLE usage_pending (hour TEXT PRIMARY KEY, admitted INTEGER NOT NULL, rate_limited INTEGER NOT NULL)",
      );
      state.storage.sql.exec("INSERT INTO usage_pending VALUES (?, 4, 1)", hour);
      const tally = new UsageTally(state.storage.sql);
      expect(tally.pending()).toEqual([{ hour, admitted: 4, rateLimited: 1, creditsSpent: 0 }]);
      tally.count(Date.parse(hour), 1, 0, 9);
      expect(new UsageTally(state.storage.sql).pending()).toEqual([{ hour, admitted: 5, rateLimited: 1, creditsSpent: 9 }]);
      // Written: only credits left over from what was written stay pending.
      tally.count(Date.parse(hour), 0, 0, 2);
      tally.written([{ hour, admitted: 5, rateLimited: 1, creditsSpent: 9 }]);
      expect(tally.pending()).toEqual([{ hour, admitted: 0, rateLimited: 0, creditsSpent: 2 }]);
    });
  });
});
