import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { SlidingLog } from "../../src/counters/sliding-log";
import { faultyObjects } from "../faults";
import { ROUTES, gw as through } from "../gateway/table";
import { call, callWith, createKey, expectProblem, memberWithKey, OPERATOR_TOKEN, provision, rows } from "../helpers";

const whoami = (key: string) => call("/v1/whoami", { key });

/** "Free: 10 a minute, 100 a day". */
const FREE = [
  { name: "minute", limit: 10, windowSeconds: 60 },
  { name: "day", limit: 100, windowSeconds: 86_400 },
];

/** Each limit's remaining, as the RateLimit header lists them. */
function remaining(res: Response): Record<string, number> {
  const header = res.headers.get("RateLimit") ?? "";
  return Object.fromEntries([...header.matchAll(/"([^"]+)";r=(\d+);t=\d+/g)].map((m) => [m[1], Number(m[2])]));
}

/** Moves the key's object to a clock of the test's. */
async function clockOf(keyId: string, now: () => number): Promise<void> {
  await runInDurableObject(env.KEYS.getByName(`key:${keyId}`), (instance) => {
    instance.clock = now;
  });
}

/** The most admissions any window of `windowSeconds` holds. */
function busiest(times: number[], windowSeconds: number): number {
  let most = 0;
  let first = 0;
  for (let last = 0; last < times.length; last++) {
    while ((times[first] as number) <= (times[last] as number) - windowSeconds * 1000) first++;
    most = Math.max(most, last - first + 1);
  }
  return most;
}

describe("several named limits on one key", () => {
  it("admits a request only when every limit does, and a refused one spends from none (3 a second, 5 a minute)", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, {
      rateLimits: [
        { name: "second", limit: 3, windowSeconds: 1 },
        { name: "minute", limit: 5, windowSeconds: 60 },
      ],
    });
    let now = 1_000_000_000_000;
    await clockOf(limited.id, () => now);
    const admitted: number[] = [];

    // 50 at one instant: "second" admits 3; the 47 it refuses spend nothing of "minute".
    const burst = await Promise.all(Array.from({ length: 50 }, () => whoami(limited.key)));
    expect(burst.filter((r) => r.status === 200)).toHaveLength(3);
    for (const r of burst.filter((r) => r.status !== 200)) {
      expect(r.status).toBe(429);
      expect(await r.json()).toMatchObject({ code: "rate_limited", limit: "second" });
      expect(remaining(r).minute).toBe(2);
    }
    admitted.push(now, now, now);

    // A second later "second" admits again: "minute" had 2 left, not less.
    now += 1000;
    const next = await whoami(limited.key);
    expect(next.status).toBe(200);
    expect(remaining(next)).toEqual({ second: 2, minute: 1 });
    admitted.push(now);
    now += 10;
    expect((await whoami(limited.key)).status).toBe(200);
    admitted.push(now);

    // "minute" refuses now, and "second" keeps what it had: refused by one limit, nothing is spent of the other.
    const refused = await whoami(limited.key);
    expect(await expectProblem(refused, 429, "rate_limited")).toMatchObject({ limit: "minute" });
    expect(remaining(refused)).toEqual({ second: 1, minute: 0 });
    // Retry-After is when "minute" admits again: the burst leaves its window a minute after it came.
    expect(Number(refused.headers.get("Retry-After"))).toBe(59);

    // Then two minutes of pairs of concurrent requests every 700 ms: neither limit's window ever holds more than it.
    for (let step = 0; step < 180; step++) {
      now += 700;
      const pair = await Promise.all([whoami(limited.key), whoami(limited.key)]);
      for (const r of pair) {
        expect([200, 429]).toContain(r.status);
        if (r.status === 200) admitted.push(now);
      }
    }
    expect(admitted.length).toBeGreaterThan(10);
    expect(busiest(admitted, 1)).toBeLessThanOrEqual(3);
    expect(busiest(admitted, 60)).toBe(5);
  }, 60_000);

  it("leases a hot key's admissions from every limit at once: each counts down exactly, with few object calls", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, {
      rateLimits: [
        { name: "minute", limit: 1000, windowSeconds: 60 },
        { name: "hour", limit: 5000, windowSeconds: 3600 },
      ],
    });
    const observed = faultyObjects(env.KEYS, {});
    const seen: Record<string, number>[] = [];
    for (let i = 0; i < 200; i++) {
      const res = await callWith({ KEYS: observed }, "/v1/whoami", { key: hot.key });
      expect(res.status).toBe(200);
      seen.push(remaining(res));
    }
    expect(seen).toEqual(Array.from({ length: 200 }, (_, i) => ({ minute: 999 - i, hour: 4999 - i })));
    expect(observed.calls("authorize")).toBeLessThan(60);
  });

  it("shows the tightest limit in X-RateLimit-* and every limit in RateLimit-Policy and RateLimit", async () => {
    const { key } = await provision();
    const free = await createKey(key.key, { rateLimits: FREE });
    const first = await whoami(free.key);
    expect(first.status).toBe(200);
    expect(first.headers.get("X-RateLimit-Limit")).toBe("10");
    expect(first.headers.get("X-RateLimit-Remaining")).toBe("9");
    const reset = Number(first.headers.get("X-RateLimit-Reset")) * 1000;
    expect(reset).toBeGreaterThan(Date.now() + 55_000);
    expect(reset).toBeLessThanOrEqual(Date.now() + 61_000);
    expect(first.headers.get("RateLimit-Policy")).toBe('"minute";q=10;w=60, "day";q=100;w=86400');
    expect(first.headers.get("RateLimit")).toMatch(/^"minute";r=9;t=(59|60), "day";r=99;t=(86399|86400)$/);
    expect(await first.json()).toMatchObject({ rateLimit: { limit: 10, windowSeconds: 60 }, rateLimits: FREE });

    // Two limits with as much left: the one full again last is the tightest.
    const tied = await createKey(key.key, {
      rateLimits: [
        { name: "minute", limit: 5, windowSeconds: 60 },
        { name: "day", limit: 5, windowSeconds: 86_400 },
      ],
    });
    const res = await whoami(tied.key);
    expect(res.headers.get("X-RateLimit-Limit")).toBe("5");
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("4");
    expect(Number(res.headers.get("X-RateLimit-Reset")) * 1000).toBeGreaterThan(Date.now() + 86_000_000);
  });

  it("lets a gateway route spend only the limits it names, at its cost for each", async () => {
    const { key } = await provision();
    const free = await createKey(key.key, { rateLimits: FREE });
    const table = JSON.stringify([
      { pattern: "/v1/exports/*", limits: { day: 10, hour: 1 } },
      { pattern: "/v1/minute-only", limits: { minute: 2 } },
      ...ROUTES,
    ]);
    const gw = (path: string) => through(path, { key: free.key }, { GATEWAY_ROUTES: table });

    const exported = await gw("/v1/exports/monthly");
    expect(exported.status, await exported.clone().text()).toBe(200);
    // Only "day" is spent (10); "hour" is no limit of the key's; "minute" is not in the headers, nor spent.
    expect(exported.headers.get("RateLimit-Policy")).toBe('"day";q=100;w=86400');
    expect(remaining(exported)).toEqual({ day: 90 });
    const plain = await gw("/v1/anything");
    expect(remaining(plain)).toEqual({ minute: 9, day: 89 });
    const minute = await gw("/v1/minute-only");
    expect(remaining(minute)).toEqual({ minute: 7 });
    expect(remaining(await gw("/v1/anything"))).toEqual({ minute: 6, day: 88 });
  });

  it("refuses duplicate names, more than 8 limits, bad names and both forms, with field errors and nothing stored", async () => {
    const { account, key } = await provision();
    const count = async () => (await rows<{ n: number }>("SELECT count(*) AS n FROM api_keys WHERE account_id = ?", account.id))[0]?.n;
    const before = await count();
    const limit = (name: string) => ({ name, limit: 5, windowSeconds: 60 });
    const bad: [unknown, string][] = [
      [{ rateLimits: [limit("minute"), limit("minute")] }, "rateLimits[1].name"],
      [{ rateLimits: Array.from({ length: 9 }, (_, i) => limit(`l${i}`)) }, "rateLimits"],
      [{ rateLimits: [limit("Minute")] }, "rateLimits[0].name"],
      [{ rateLimits: [limit("1st")] }, "rateLimits[0].name"],
      [{ rateLimits: [limit("a".repeat(33))] }, "rateLimits[0].name"],
      [{ rateLimits: [] }, "rateLimits"],
      [{ rateLimits: [{ name: "minute", limit: 0, windowSeconds: 60 }] }, "rateLimits[0].limit"],
      [{ rateLimit: { limit: 5, windowSeconds: 60 }, rateLimits: [limit("minute")] }, "rateLimits"],
    ];
    for (const [body, field] of bad) {
      const problem = await expectProblem(
        await call("/v1/api-keys", { key: key.key, body: { name: "x", ...(body as object) } }),
        400,
        "invalid_request",
      );
      expect(problem.errors).toContainEqual(expect.objectContaining({ field }));
    }
    expect(await count()).toBe(before);

    // The account's default limits likewise, on its change and at its creation.
    const stored = async () => (await rows("SELECT * FROM accounts WHERE id = ?", account.id))[0];
    const unchanged = await stored();
    const patch = (body: unknown) => call("/v1/account", { method: "PATCH", key: key.key, body });
    await expectProblem(await patch({ rateLimits: [limit("minute"), limit("minute")] }), 400, "invalid_request");
    await expectProblem(await patch({ rateLimit: { limit: 5, windowSeconds: 60 }, rateLimits: FREE }), 400, "invalid_request");
    expect(await stored()).toEqual(unchanged);
    const both = { name: "x", admin: { email: "both@example.com" }, rateLimit: { limit: 5, windowSeconds: 60 }, rateLimits: FREE };
    const created = await call("/v1/accounts", { headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` }, body: both });
    await expectProblem(created, 400, "invalid_request");
    expect(await rows("SELECT id FROM users WHERE email = ?", "both@example.com")).toEqual([]);
  });

  it("gives an account's keys its default limits, and reads them back on the account", async () => {
    const { key } = await provision({ rateLimits: FREE });
    const res = await whoami(key.key);
    expect(res.headers.get("RateLimit-Policy")).toBe('"minute";q=10;w=60, "day";q=100;w=86400');
    const account = await call("/v1/account", { key: key.key });
    expect(await account.json()).toMatchObject({ rateLimit: { limit: 10, windowSeconds: 60 }, rateLimits: FREE });
    const patched = await call("/v1/account", { method: "PATCH", key: key.key, body: { rateLimit: { limit: 50, windowSeconds: 60 } } });
    expect(await patched.json()).toMatchObject({
      rateLimit: { limit: 50, windowSeconds: 60 },
      rateLimits: [{ name: "default", limit: 50, windowSeconds: 60 }],
    });
  });

  it("holds each of a member's key limits to the members' ceiling", async () => {
    const { key } = await provision({ membersCanCreateKeys: true, maxRateLimit: { limit: 10, windowSeconds: 60 } });
    const { key: memberKey } = await memberWithKey(key.key);
    const over = await call("/v1/api-keys", {
      key: memberKey.key,
      body: {
        name: "x",
        rateLimits: [
          { name: "minute", limit: 10, windowSeconds: 60 },
          { name: "burst", limit: 20, windowSeconds: 1 },
        ],
      },
    });
    const problem = await expectProblem(over, 400, "invalid_request");
    expect(problem.errors).toEqual([{ field: "rateLimits[1]", message: expect.stringContaining("at most 10 requests per 60 s") }]);
    // Each limit on its own: 100 a day is slower than 10 a minute, but more in one window than the ceiling allows.
    await expectProblem(await call("/v1/api-keys", { key: memberKey.key, body: { name: "x", rateLimits: FREE } }), 400, "invalid_request");
    const slow = [
      { name: "minute", limit: 10, windowSeconds: 60 },
      { name: "hour", limit: 5, windowSeconds: 3600 },
    ];
    expect((await createKey(memberKey.key, { rateLimits: slow })).rateLimits).toEqual(slow);
  });

  it("keeps a key's log written before limits had names as its limit named default", async () => {
    const stub = env.COUNTERS.getByName(`unnamed-log:${crypto.randomUUID()}`);
    await runInDurableObject(stub, (_, state) => {
      const sql = state.storage.sql;
      sql.exec("CREATE TABLE hits (at INTEGER NOT NULL)");
      sql.exec("INSERT INTO hits (at) VALUES (1000), (1000)");
      const log = new SlidingLog(sql, () => 2000);
      const limits = [{ name: "default", limit: 3, windowSeconds: 60 }];
      expect(log.admit({ limits })).toMatchObject({ allowed: true, limits: [{ remaining: 0 }] });
      expect(log.admit({ limits })).toMatchObject({ allowed: false, refusedBy: ["default"] });
      expect(sql.exec<{ name: string }>("SELECT DISTINCT name FROM hits").toArray()).toEqual([{ name: "default" }]);
    });
  });
});
