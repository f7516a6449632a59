import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { getConfig } from "../../src/config";
import type { CounterContext, Variables } from "../../src/env";
import { authorizeKey } from "../../src/keys/authorize";
import type { Counter } from "../../src/objects/counter";
import { SlidingLog } from "../../src/objects/sliding-log";
import { Holdings } from "../../src/ratelimit/held";
import { faultyObjects } from "../faults";
import { call, callWith, createAgent, createKey, expectProblem, memberWithKey, provision, WIDGET_ORIGIN } from "../helpers";

/** A context for calling the key path directly, as one request of an isolate would. */
function context(): CounterContext {
  const vars: Variables = { requestId: `req_${crypto.randomUUID().replaceAll("-", "")}`, config: getConfig(env), corsOrigin: null };
  return { env, executionCtx: createExecutionContext(), get: (key) => vars[key], header: () => {} };
}

describe("leases", () => {
  it("serve a hot key's requests with few object calls, headers counting down exactly", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 1000, windowSeconds: 60 } });
    const observed = faultyObjects(env.KEYS, {});
    const remaining: number[] = [];
    for (let i = 0; i < 200; i++) {
      const res = await callWith({ KEYS: observed }, "/v1/whoami", { key: hot.key });
      expect(res.status).toBe(200);
      remaining.push(Number(res.headers.get("X-RateLimit-Remaining")));
    }
    expect(remaining).toEqual(Array.from({ length: 200 }, (_, i) => 999 - i));
    expect(observed.calls("authorize")).toBeLessThan(60);
  });

  it("end in the isolate that revokes the key at once, and the object refuses every other isolate at once", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 1000, windowSeconds: 60 } });
    const other = new Holdings();
    for (let i = 0; i < 50; i++) {
      expect((await call("/v1/whoami", { key: hot.key })).status).toBe(200);
      expect((await authorizeKey(context(), hot.key, "bearer", "any", 1, other)).ok).toBe(true);
    }
    expect(other.get(`key:${hot.id}`)?.leases.available(Date.now())).toBeGreaterThan(0);
    expect((await call(`/v1/api-keys/${hot.id}`, { method: "DELETE", key: key.key })).status).toBe(200);
    await expectProblem(await call("/v1/whoami", { key: hot.key }), 401, "key_revoked");
    // The other isolate holds a lease: it may spend it until the lease ends (at most a second), never after.
    const now = Date.now();
    expect((await authorizeKey(context(), hot.key, "bearer", "any", 1, other)).ok).toBe(true);
    other.now = () => now + 1000;
    expect(await authorizeKey(context(), hot.key, "bearer", "any", 1, other)).toEqual({ ok: false, code: "key_revoked" });
  });

  it("let two isolates sharing one object admit no more than the limit between them, holding the rest", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 50, windowSeconds: 60 } });
    const isolates = [new Holdings(), new Holdings()];
    const verdicts = await Promise.all(
      Array.from({ length: 300 }, (_, i) => authorizeKey(context(), limited.key, "bearer", "any", 1, isolates[i % 2])),
    );
    const admitted = verdicts.filter((v) => v.ok && (v.admission === null || v.admission.allowed)).length;
    expect(admitted).toBeLessThanOrEqual(50);
    // Under-admission is bounded by what the isolates still hold unspent.
    const held = isolates.reduce((n, h) => n + (h.get(`key:${limited.id}`)?.leases.available(Date.now()) ?? 0), 0);
    expect(admitted + held).toBeGreaterThanOrEqual(50);
  });

  it("lease a hot plain counter too: concurrent handshakes of one agent admit exactly its limit", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    // A long deadline: 150 concurrent handshakes on this machine must not turn into 503s.
    const answers = await Promise.all(
      Array.from({ length: 150 }, () =>
        callWith({ HANDSHAKE_AGENT_RATE_LIMIT: "40/60", RATE_LIMIT_TIMEOUT_MS: "20000" }, "/v1/handshake", {
          headers: { Origin: WIDGET_ORIGIN },
          body: { agentId: agent.id },
        }),
      ),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(40);
    expect(statuses.filter((s) => s === 429)).toHaveLength(110);
  });

  it("give a refused request's admission back to the lease it came from", async () => {
    const { key } = await provision();
    const { key: memberKey } = await memberWithKey(key.key);
    let remaining = 0;
    for (let i = 0; i < 50; i++)
      remaining = Number((await call("/v1/whoami", { key: memberKey.key })).headers.get("X-RateLimit-Remaining"));
    // Members may not create keys here: the handler refuses (403) after the admission was spent from the lease.
    await expectProblem(await call("/v1/api-keys", { key: memberKey.key, body: { name: "x" } }), 403, "insufficient_role");
    const next = await call("/v1/whoami", { key: memberKey.key });
    expect(Number(next.headers.get("X-RateLimit-Remaining"))).toBe(remaining - 1);
  });

  it("take back a whole lease at once, in memory and in storage, and nothing more", async () => {
    const stub = env.COUNTERS.getByName(`lease-return:${crypto.randomUUID()}`);
    await runInDurableObject(stub, async (_: Counter, state) => {
      const log = new SlidingLog(state.storage.sql, () => 1_000_000);
      const policy = { limit: 100, windowSeconds: 60 };
      log.admit(policy, 1);
      const leased = log.admit(policy, 1, () => 20, 1_001_000);
      expect(leased).toMatchObject({ allowed: true, leased: 20, remaining: 78 });
      await log.saved();
      const rows = () => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM hits WHERE at = 1001000").one().n;
      expect(rows()).toBe(20);
      log.refund(1_001_000, 15);
      expect(rows()).toBe(5);
      log.refund(1_001_000, 50);
      expect(rows()).toBe(0);
      expect(log.admit(policy, 1)).toMatchObject({ allowed: true, remaining: 97 });
    });
  });

  it("renew a hot key's lease with one call of the isolate, the requests beside it waiting for it", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const observed = faultyObjects(env.KEYS, {});
    for (let i = 0; i < 60; i++) await callWith({ KEYS: observed }, "/v1/whoami", { key: hot.key });
    const before = observed.calls("authorize");
    const burst = await Promise.all(Array.from({ length: 300 }, () => callWith({ KEYS: observed }, "/v1/whoami", { key: hot.key })));
    expect(burst.every((r) => r.status === 200)).toBe(true);
    expect(observed.calls("authorize") - before).toBeLessThan(30);
  });

  it("ask for a hot key's next lease before the current one runs out, so no request waits for the object", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const isolate = new Holdings();
    const served: boolean[] = [];
    for (let i = 0; i < 300; i++) {
      const c = context();
      const verdict = await authorizeKey(c, hot.key, "bearer", "any", 1, isolate);
      await waitOnExecutionContext(c.executionCtx as ExecutionContext);
      served.push(verdict.ok && verdict.admission?.leased === true);
    }
    // Once the key is hot (the first lease), every request is served from a lease, however many leases it takes.
    const first = served.indexOf(true);
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(40);
    expect(served.slice(first).every(Boolean)).toBe(true);
  });
});
