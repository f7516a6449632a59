import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { type Fault, faultyObjects } from "../faults";
import { call, callWith, createKey, createUser, expectProblem, expire, OPERATOR_TOKEN, provision } from "../helpers";

const whoami = (key: string, headers: Record<string, string> = {}) => call("/v1/whoami", { key, headers });

async function spendAll(key: string, n: number): Promise<Response[]> {
  const out: Response[] = [];
  for (let i = 0; i < n; i++) out.push(await whoami(key));
  return out;
}

describe("per-key rate limit", () => {
  it("admits 60 requests a minute by default and tells the client in headers", async () => {
    const { key } = await provision();
    const responses = await spendAll(key.key, 60);
    expect(responses.every((r) => r.status === 200)).toBe(true);
    const first = responses[0] as Response;
    expect(first.headers.get("X-RateLimit-Limit")).toBe("60");
    expect(first.headers.get("X-RateLimit-Remaining")).toBe("59");
    expect(first.headers.get("RateLimit-Policy")).toBe('"default";q=60;w=60');
    expect(first.headers.get("RateLimit")).toBe('"default";r=59;t=60');
    const reset = Number(first.headers.get("X-RateLimit-Reset"));
    expect(reset * 1000).toBeGreaterThanOrEqual(Date.now() + 59_000);
    expect(reset * 1000).toBeLessThanOrEqual(Date.now() + 61_000);
    expect((responses[59] as Response).headers.get("X-RateLimit-Remaining")).toBe("0");

    const refused = await whoami(key.key);
    const problem = await expectProblem(refused, 429, "rate_limited");
    const retry = Number(refused.headers.get("Retry-After"));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(problem.retry_after).toBe(retry);
    expect(problem.detail).toBe(`Rate limit exceeded (default). Try again in ${retry} seconds.`);
    expect(problem.limit).toBe("default");
    expect(refused.headers.get("X-RateLimit-Limit")).toBe("60");
    expect(refused.headers.get("X-RateLimit-Remaining")).toBe("0");
    expect(refused.headers.get("X-RateLimit-Reset")).not.toBeNull();
    expect(refused.headers.get("RateLimit-Policy")).toBe('"default";q=60;w=60');
    expect(refused.headers.get("RateLimit")).toMatch(/^"default";r=0;t=\d+$/);
  });

  it("lets the client back in when Retry-After says, not before (injected clock)", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 2, windowSeconds: 30 } });
    let now = Date.now();
    await runInDurableObject(env.KEYS.getByName(`key:${limited.id}`), (instance) => {
      instance.clock = () => now;
    });
    await spendAll(limited.key, 2);
    const refused = await whoami(limited.key);
    expect(refused.status).toBe(429);
    const retry = Number(refused.headers.get("Retry-After"));
    now += retry * 1000 - 1;
    expect((await whoami(limited.key)).status).toBe(429);
    now += 1;
    const back = await whoami(limited.key);
    expect(back.status).toBe(200);
    // Both earlier requests were admitted at the same injected instant and left the window together.
    expect(back.headers.get("X-RateLimit-Remaining")).toBe("1");
  });

  it("admits exactly the limit from 200 concurrent requests", async () => {
    const { key } = await provision();
    const responses = await Promise.all(Array.from({ length: 200 }, () => whoami(key.key)));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(60);
    expect(statuses.filter((s) => s === 429)).toHaveLength(140);
  });

  it("gives every key its own budget", async () => {
    const { key } = await provision();
    const other = await createKey(key.key);
    await spendAll(key.key, 60);
    expect((await whoami(key.key)).status).toBe(429);
    const res = await whoami(other.key);
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("59");
  });

  it("uses the account's default, and a key's own limit over it; rotation keeps the key's limit", async () => {
    const { key } = await provision({ rateLimit: { limit: 5, windowSeconds: 10 } });
    const res = await whoami(key.key);
    expect(res.headers.get("RateLimit-Policy")).toBe('"default";q=5;w=10');

    const own = await createKey(key.key, { rateLimit: { limit: 2, windowSeconds: 3600 } });
    expect(own.rateLimit).toEqual({ limit: 2, windowSeconds: 3600 });
    await spendAll(own.key, 2);
    expect((await whoami(own.key)).status).toBe(429);

    const rotated = await (await call(`/v1/api-keys/${own.id}/rotate`, { key: key.key, body: {} })).json<{
      key: string;
      rateLimit: unknown;
    }>();
    expect(rotated.rateLimit).toEqual({ limit: 2, windowSeconds: 3600 });
    expect((await whoami(rotated.key)).headers.get("RateLimit-Policy")).toBe('"default";q=2;w=3600');

    // callWith waits for the account's keys to be told of the new default, which happens after the answer.
    const patched = await callWith({}, "/v1/account", {
      method: "PATCH",
      key: key.key,
      body: { rateLimit: { limit: 100, windowSeconds: 60 } },
    });
    expect(await patched.json()).toMatchObject({ rateLimit: { limit: 100, windowSeconds: 60 } });
    expect((await whoami(key.key)).headers.get("X-RateLimit-Limit")).toBe("100");
    expect((await whoami(rotated.key)).headers.get("X-RateLimit-Limit")).toBe("2");
  });

  it("lets a rotation set a new limit for the new key", async () => {
    const { key } = await provision();
    const old = await createKey(key.key, { rateLimit: { limit: 2, windowSeconds: 60 } });
    const res = await call(`/v1/api-keys/${old.id}/rotate`, { key: key.key, body: { rateLimit: { limit: 7, windowSeconds: 30 } } });
    const fresh = await res.json<{ key: string; rateLimit: unknown }>();
    expect(fresh.rateLimit).toEqual({ limit: 7, windowSeconds: 30 });
    expect((await whoami(fresh.key)).headers.get("RateLimit-Policy")).toBe('"default";q=7;w=30');
    const stored = await call(`/v1/api-keys/${old.id}`, { key: key.key });
    expect(await stored.json()).toMatchObject({ rateLimit: { limit: 2, windowSeconds: 60 } });
  });

  it("refuses invalid limits", async () => {
    const { key } = await provision();
    for (const rateLimit of [{ limit: 0, windowSeconds: 60 }, { limit: 10 }, { limit: 10, windowSeconds: 86_401 }, 60]) {
      await expectProblem(await call("/v1/api-keys", { key: key.key, body: { name: "x", rateLimit } }), 400, "invalid_request");
    }
    const member = await call("/v1/account", { method: "PATCH", key: (await createKey(key.key, { mailboxIds: ["m"] })).key, body: {} });
    await expectProblem(member, 403, "insufficient_scope");
  });

  it("does not spend the budget on 401 and 403 answers", async () => {
    const { key } = await provision();
    const three = { limit: 3, windowSeconds: 60 };
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_1"], rateLimit: three });
    // callWith waits for the refunds, which are sent after each response.
    for (let i = 0; i < 5; i++) expect((await callWith({}, "/v1/api-keys", { key: scoped.key })).status).toBe(403);
    const ok = await whoami(scoped.key);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("X-RateLimit-Remaining")).toBe("2");

    const member = await createUser(key.key, "member");
    const memberKey = await createKey(key.key, { ownerId: member.id, rateLimit: three });
    await call(`/v1/users/${member.id}`, { method: "PATCH", key: key.key, body: { disabled: true } });
    for (let i = 0; i < 5; i++) expect((await whoami(memberKey.key)).status).toBe(401);
    await call(`/v1/users/${member.id}`, { method: "PATCH", key: key.key, body: { disabled: false } });
    expect((await whoami(memberKey.key)).headers.get("X-RateLimit-Remaining")).toBe("2");
  });
});

describe("refused requests never borrow the budget", () => {
  it("20 concurrent forbidden requests leave every request beside them its budget", async () => {
    const { key } = await provision();
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_1"], rateLimit: { limit: 5, windowSeconds: 60 } });
    const forbidden = Array.from({ length: 20 }, () => call("/v1/api-keys", { key: scoped.key }));
    const legit = Array.from({ length: 5 }, () => whoami(scoped.key));
    const [refused, admitted] = await Promise.all([Promise.all(forbidden), Promise.all(legit)]);
    expect(refused.map((r) => r.status)).toEqual(Array(20).fill(403));
    expect(admitted.map((r) => r.status)).toEqual(Array(5).fill(200));
    await expectProblem(await whoami(scoped.key), 429, "rate_limited");
  });

  it("gives back a request the handler refuses before the answer leaves", async () => {
    const { key } = await provision();
    const member = await createUser(key.key, "member");
    const memberKey = await createKey(key.key, { ownerId: member.id, rateLimit: { limit: 2, windowSeconds: 60 } });
    // Members may not create keys in this account: the handler says 403 after the key was admitted, and refunds it.
    for (let i = 0; i < 5; i++)
      await expectProblem(await call("/v1/api-keys", { key: memberKey.key, body: { name: "x" } }), 403, "insufficient_role");
    expect((await whoami(memberKey.key)).headers.get("X-RateLimit-Remaining")).toBe("1");
  });
});

describe("the account's ceiling on members' limits (maxRateLimit)", () => {
  it("holds for members' keys that follow the account's default, when the default is above it", async () => {
    const { key } = await provision({
      membersCanCreateKeys: true,
      rateLimit: { limit: 1000, windowSeconds: 60 },
      maxRateLimit: { limit: 10, windowSeconds: 60 },
    });
    const member = await createUser(key.key, "member");
    const memberKey = await createKey(key.key, { ownerId: member.id });
    const own = await createKey(memberKey.key, { name: "default limit" });
    for (const k of [memberKey, own])
      expect(await (await whoami(k.key)).json()).toMatchObject({ rateLimit: { limit: 10, windowSeconds: 60 } });
    // An admin's key follows the default.
    expect(await (await whoami(key.key)).json()).toMatchObject({ rateLimit: { limit: 1000, windowSeconds: 60 } });
  });

  it("bounds what members may choose, by size and by rate; admins set it and are not bound", async () => {
    const { key } = await provision({ membersCanCreateKeys: true });
    const member = await createUser(key.key, "member");
    const memberKey = await createKey(key.key, { ownerId: member.id });
    const create = (k: string, rateLimit: unknown) => call("/v1/api-keys", { key: k, body: { name: "x", rateLimit } });
    const refused = await expectProblem(await create(memberKey.key, { limit: 1_000_000, windowSeconds: 1 }), 400, "invalid_request");
    expect(refused.errors).toEqual([{ field: "rateLimit", message: expect.stringContaining("at most 60 requests per 60 s") }]);
    expect((await create(memberKey.key, { limit: 60, windowSeconds: 60 })).status).toBe(201);
    expect((await create(key.key, { limit: 1_000_000, windowSeconds: 1 })).status).toBe(201);

    const patched = await call("/v1/account", { method: "PATCH", key: key.key, body: { maxRateLimit: { limit: 600, windowSeconds: 60 } } });
    expect(await patched.json()).toMatchObject({ maxRateLimit: { limit: 600, windowSeconds: 60 } });
    expect((await create(memberKey.key, { limit: 600, windowSeconds: 60 })).status).toBe(201);
    await expectProblem(await create(memberKey.key, { limit: 601, windowSeconds: 60 }), 400, "invalid_request");
    await expectProblem(await create(memberKey.key, { limit: 600, windowSeconds: 30 }), 400, "invalid_request");
    const own = await createKey(memberKey.key, { name: "own" });
    await expectProblem(
      await call(`/v1/api-keys/${own.id}/rotate`, { key: memberKey.key, body: { rateLimit: { limit: 10_000, windowSeconds: 60 } } }),
      400,
      "invalid_request",
    );
    await expectProblem(
      await call("/v1/account", { method: "PATCH", key: memberKey.key, body: { maxRateLimit: null } }),
      403,
      "insufficient_role",
    );
    const reset = await call("/v1/account", { method: "PATCH", key: key.key, body: { maxRateLimit: null } });
    expect(await reset.json()).toMatchObject({ maxRateLimit: null });
    await expectProblem(await create(memberKey.key, { limit: 600, windowSeconds: 60 }), 400, "invalid_request");
  });
});

describe("per-IP failure limit", () => {
  it("answers 429 after 30 failed attempts a minute from one address, whatever forwarding headers claim", async () => {
    const ip = "203.0.113.7";
    for (let i = 0; i < 30; i++) {
      const res = await call("/v1/whoami", {
        headers: {
          "CF-Connecting-IP": ip,
          "X-Forwarded-For": `198.51.100.${i}`,
          "X-Real-IP": `198.51.100.${i}`,
          "X-API-Key": `sk_${"0".repeat(64)}`,
        },
      });
      expect(res.status).toBe(401);
    }
    const blocked = await call("/v1/whoami", {
      headers: { "CF-Connecting-IP": ip, "X-Forwarded-For": "198.51.100.250", "X-API-Key": "garbage" },
    });
    const problem = await expectProblem(blocked, 429, "rate_limited");
    expect(blocked.headers.get("Retry-After")).toBe(String(problem.retry_after));
    // Another address is unaffected.
    await expectProblem(
      await call("/v1/whoami", { headers: { "CF-Connecting-IP": "203.0.113.8", "X-API-Key": "garbage" } }),
      401,
      "malformed_credentials",
    );
  });

  it("puts requests without CF-Connecting-IP (not through Cloudflare) in one strict bucket of their own", async () => {
    const noAddress = { "CF-Connecting-IP": "", "X-API-Key": `sk_${"1".repeat(64)}`, "X-Forwarded-For": "198.51.100.1" };
    // A tenth of the per-address budget (30 a minute): three failures, then 429, whatever else the request claims.
    for (let i = 0; i < 3; i++) await expectProblem(await call("/v1/whoami", { headers: noAddress }), 401, "invalid_key");
    await expectProblem(await call("/v1/whoami", { headers: { ...noAddress, "X-Forwarded-For": "198.51.100.2" } }), 429, "rate_limited");
    // Addresses Cloudflare vouches for are unaffected.
    await expectProblem(await call("/v1/whoami", { headers: { ...noAddress, "CF-Connecting-IP": "203.0.113.20" } }), 401, "invalid_key");
  });

  it("limits the provisioning route per address", async () => {
    const ip = "203.0.113.9";
    const body = { name: "x", admin: { email: "a@b.co" } };
    for (let i = 0; i < 30; i++) {
      const res = await call("/v1/accounts", { headers: { "CF-Connecting-IP": ip, Authorization: `Bearer ${OPERATOR_TOKEN}` }, body });
      expect(res.status).toBe(201);
    }
    const refused = await call("/v1/accounts", { headers: { "CF-Connecting-IP": ip, Authorization: `Bearer ${OPERATOR_TOKEN}` }, body });
    await expectProblem(refused, 429, "rate_limited");
  });
});

describe("when the rate limiter fails", () => {
  const reset = () => new Error("Durable Object reset because its code was updated");
  const faults: [string, Fault][] = [
    ["throws", { kind: "throw", error: reset() }],
    ["does not answer in time", { kind: "stall" }],
  ];

  for (const [what, fault] of faults) {
    it(`answers 503 with Retry-After in closed mode (the default) when it ${what}`, async () => {
      const { key } = await provision();
      const objects = faultyObjects(env.KEYS, { authorize: fault });
      const res = await callWith({ KEYS: objects, RATE_LIMIT_TIMEOUT_MS: "50" }, "/v1/whoami", { key: key.key });
      await expectProblem(res, 503, "rate_limiter_unavailable");
      expect(res.headers.get("Retry-After")).toBe("5");
      expect(objects.calls("authorize")).toBe(1);
    });

    it(`admits and marks the response in open mode when it ${what}`, async () => {
      const { key } = await provision();
      const objects = faultyObjects(env.KEYS, { authorize: fault });
      const res = await callWith({ KEYS: objects, RATE_LIMIT_TIMEOUT_MS: "50", RATE_LIMIT_FAILURE_MODE: "open" }, "/v1/whoami", {
        key: key.key,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("X-RateLimit-Status")).toBe("unavailable");
      expect(res.headers.get("X-RateLimit-Limit")).toBeNull();
    });
  }

  it("in open mode still refuses revoked and expired keys and keys of disabled owners, and what the route needs", async () => {
    const { key } = await provision();
    const open = { KEYS: faultyObjects(env.KEYS, { authorize: { kind: "throw" } }), RATE_LIMIT_FAILURE_MODE: "open" };
    const revoked = await createKey(key.key, { name: "revoked" });
    await call(`/v1/api-keys/${revoked.id}`, { method: "DELETE", key: key.key });
    const expired = await createKey(key.key, { name: "expired", expiresAt: "2099-01-01T00:00:00Z" });
    await expire(expired.id);
    const member = await createUser(key.key, "member");
    const memberKey = await createKey(key.key, { ownerId: member.id });
    await call(`/v1/users/${member.id}`, { method: "PATCH", key: key.key, body: { disabled: true } });
    const scoped = await createKey(key.key, { mailboxIds: ["mbx_1"] });
    await expectProblem(await callWith(open, "/v1/whoami", { key: revoked.key }), 401, "key_revoked");
    await expectProblem(await callWith(open, "/v1/whoami", { key: expired.key }), 401, "key_expired");
    await expectProblem(await callWith(open, "/v1/whoami", { key: memberKey.key }), 401, "key_owner_disabled");
    await expectProblem(await callWith(open, "/v1/api-keys", { key: scoped.key }), 403, "insufficient_scope");
    expect((await callWith(open, "/v1/whoami", { key: key.key })).headers.get("X-RateLimit-Status")).toBe("unavailable");
  });

  it("retries once an error the platform marks retryable, never an overload", async () => {
    const { key } = await provision();
    const retryable = Object.assign(new Error("Network connection lost."), { retryable: true });
    const flaky = faultyObjects(env.KEYS, { authorize: { kind: "throw", error: retryable, times: 1 } });
    const res = await callWith({ KEYS: flaky }, "/v1/whoami", { key: key.key });
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("59");
    expect(flaky.calls("authorize")).toBe(2);

    const overloaded = faultyObjects(env.KEYS, {
      authorize: { kind: "throw", error: Object.assign(new Error("Durable Object is overloaded."), { retryable: true, overloaded: true }) },
    });
    await expectProblem(await callWith({ KEYS: overloaded }, "/v1/whoami", { key: key.key }), 503, "rate_limiter_unavailable");
    expect(overloaded.calls("authorize")).toBe(1);
  });

  it("spends once when a retried call had already spent", async () => {
    const { key } = await provision();
    // The first attempt reaches the counter and spends, but its answer is lost: the retry must not spend again.
    let lost = false;
    const objects = faultyObjects(env.KEYS, {});
    const once = new Proxy(objects, {
      get(target, prop) {
        if (prop !== "getByName") return Reflect.get(target, prop);
        return (name: string) => {
          const stub = target.getByName(name);
          return new Proxy(stub, {
            get(s, method) {
              if (method !== "authorize") return Reflect.get(s, method);
              return async (...args: Parameters<typeof stub.authorize>) => {
                const answer = await s.authorize(...args);
                if (lost) return answer;
                lost = true;
                throw Object.assign(new Error("Network connection lost."), { retryable: true });
              };
            },
          });
        };
      },
    });
    const res = await callWith({ KEYS: once }, "/v1/whoami", { key: key.key });
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("59");
    expect((await whoami(key.key)).headers.get("X-RateLimit-Remaining")).toBe("58");
  });

  it("never leaves a spent request behind a call that timed out", async () => {
    const { key } = await provision();
    // Answers after the deadline: the counter spent, the client got 503; the spend is given back.
    const slow = faultyObjects(env.KEYS, { authorize: { kind: "late-answer", ms: 150 } });
    await expectProblem(
      await callWith({ KEYS: slow, RATE_LIMIT_TIMEOUT_MS: "50" }, "/v1/whoami", { key: key.key }),
      503,
      "rate_limiter_unavailable",
    );
    // Arrives after the deadline: the counter refuses to spend for a caller that no longer waits.
    const queued = faultyObjects(env.KEYS, { authorize: { kind: "late-call", ms: 150 } });
    await expectProblem(
      await callWith({ KEYS: queued, RATE_LIMIT_TIMEOUT_MS: "50" }, "/v1/whoami", { key: key.key }),
      503,
      "rate_limiter_unavailable",
    );
    // Once both calls have reached the object (no sleeping: the seam says when), nothing is left spent.
    await Promise.all([slow.settled(), queued.settled()]);
    expect((await whoami(key.key)).headers.get("X-RateLimit-Remaining")).toBe("59");
  });

  it("keeps answering 401 for bad credentials when the limiter is down", async () => {
    const objects = {
      KEYS: faultyObjects(env.KEYS, { authorize: { kind: "throw" } }),
      COUNTERS: faultyObjects(env.COUNTERS, { consume: { kind: "throw" } }),
    };
    await expectProblem(await callWith(objects, "/v1/whoami", { headers: { "X-API-Key": "nope" } }), 401, "malformed_credentials");
  });
});
