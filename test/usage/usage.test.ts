import { evictDurableObject, runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { faultyDatabase, objectDatabase } from "../faults";
import { call, createKey, expectProblem, memberWithKey, provision, rows } from "../helpers";

const hourOf = (ms: number) => new Date(Math.floor(ms / 3_600_000) * 3_600_000).toISOString();
const stored = (keyId: string) => rows("SELECT hour, admitted, rate_limited FROM key_usage WHERE key_id = ?", keyId);
const flush = (keyId: string) => runDurableObjectAlarm(env.KEYS.getByName(`key:${keyId}`));

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
    expect(await send(limited.key, 5)).toEqual([200, 200, 200, 429, 429]);
    // No D1 write per request: nothing is there until the object flushes.
    expect(await stored(limited.id)).toEqual([]);
    expect(await flush(limited.id)).toBe(true);
    const hour = hourOf(Date.now());
    expect(await stored(limited.id)).toEqual([{ hour, admitted: 3, rate_limited: 2 }]);
    // A second flush adds what came since, and only that.
    await send(limited.key, 1);
    await flush(limited.id);
    expect(await stored(limited.id)).toEqual([{ hour, admitted: 3, rate_limited: 3 }]);
  });

  it("counts nothing for a request refused for its scope (it spends nothing)", async () => {
    const { key } = await provision();
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_u"] });
    // A resource-scoped key on a full-access route: refused before spending.
    for (let i = 0; i < 2; i++) await expectProblem(await call("/v1/api-keys", { key: scoped.key }), 403, "insufficient_scope");
    await send(scoped.key, 2);
    await flush(scoped.id);
    expect(await stored(scoped.id)).toEqual([{ hour: hourOf(Date.now()), admitted: 2, rate_limited: 0 }]);
  });

  it("keeps what it counted across the object's eviction, and its alarm", async () => {
    const { key } = await provision();
    const k = await createKey(key.key);
    await send(k.key, 2);
    await evictDurableObject(env.KEYS.getByName(`key:${k.id}`));
    expect(await flush(k.id)).toBe(true);
    expect(await stored(k.id)).toEqual([{ hour: hourOf(Date.now()), admitted: 2, rate_limited: 0 }]);
  });

  it("keeps what it counted when D1 fails, and writes it at the next alarm", async () => {
    const { key } = await provision();
    const k = await createKey(key.key);
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
    expect(await stored(k.id)).toEqual([{ hour: hourOf(Date.now()), admitted: 2, rate_limited: 0 }]);
  });

  it("answers a key's hours without gaps, and the account's with each key's totals in one call", async () => {
    const { key } = await provision();
    const a = await createKey(key.key, { name: "a" });
    const b = await createKey(key.key, { name: "b", rateLimit: { limit: 1, windowSeconds: 60 } });
    await send(a.key, 3);
    await send(b.key, 3);
    await Promise.all([flush(a.id), flush(b.id), flush(key.id)]);
    const hour = hourOf(Date.now());
    const to = new Date(Date.parse(hour) + 3_600_000).toISOString();
    const from = new Date(Date.parse(hour) - 2 * 3_600_000).toISOString();
    const res = await call(`/v1/api-keys/${a.id}/usage?from=${from}&to=${to}`, { key: key.key });
    expect(await res.json()).toEqual({
      keyId: a.id,
      from,
      to,
      series: [
        { hour: from, admitted: 0, rateLimited: 0 },
        { hour: new Date(Date.parse(hour) - 3_600_000).toISOString(), admitted: 0, rateLimited: 0 },
        { hour, admitted: 3, rateLimited: 0 },
      ],
    });
    const account = await (await call(`/v1/account/usage?from=${from}&to=${to}`, { key: key.key })).json<{
      series: { hour: string; admitted: number; rateLimited: number }[];
      keys: { keyId: string; admitted: number; rateLimited: number }[];
    }>();
    const totals = Object.fromEntries(account.keys.map((k) => [k.keyId, [k.admitted, k.rateLimited]]));
    expect(totals[a.id]).toEqual([3, 0]);
    expect(totals[b.id]).toEqual([1, 2]);
    expect(account.series.at(-1)).toEqual({ hour, admitted: account.keys.reduce((n, k) => n + k.admitted, 0), rateLimited: 2 });
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
});
