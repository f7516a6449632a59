import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { RECORD_TTL_MS, UNSETTLED_TRUST_MS } from "../../src/keys/object";
import { faultyDatabase, objectDatabase, objectSessions } from "../faults";
import { call, createKey, expectProblem, provision } from "../helpers";

const whoami = (key: string) => call("/v1/whoami", { key });

const limits = [{ name: "default", limit: 3, windowSeconds: 10 }];
/** What an RPC call ended with, settled here (expect() on an RPC promise would pipeline calls that reject unhandled). */
const outcome = (call: Promise<unknown>) =>
  call.then(
    () => "answered",
    (err: unknown) => String(err),
  );
/** Stops the counter's clock at now (admissions of one instant), answering that instant. */
async function frozen(stub: DurableObjectStub<import("../../src/counters/counter-object").Counter>): Promise<number> {
  const now = Date.now();
  await runInDurableObject(stub, (instance) => {
    instance.clock = () => now;
  });
  return now;
}
/** A call from a request that waits up to a minute. */
const tag = (id = crypto.randomUUID()) => ({ id, deadline: Date.now() + 60_000 });
/** Admissions in the counter's storage (a counter that never counted has no table yet). */
const stored = (stub: DurableObjectStub<import("../../src/counters/counter-object").Counter>) =>
  runInDurableObject(stub, (_, state) => {
    const sql = state.storage.sql;
    if (sql.exec("SELECT name FROM sqlite_master WHERE name = 'hits'").toArray().length === 0) return 0;
    return sql.exec<{ n: number }>("SELECT count(*) AS n FROM hits").one().n;
  });

describe("Counter Durable Object", () => {
  it("gives back once per refund id, however many attempts arrive, and nothing for an attempt past its deadline", async () => {
    const stub = env.COUNTERS.getByName("test:refund-once");
    const now = await frozen(stub);
    // Three admissions of one instant: a refund given twice would take back another request's admission.
    for (let i = 0; i < 3; i++) await stub.consume({ limits, tag: tag() });
    const refund = tag();
    await stub.refund({ at: now, cost: 1, costs: { default: 1 }, tag: refund });
    await stub.refund({ at: now, cost: 1, costs: { default: 1 }, tag: { ...refund, deadline: Date.now() + 60_000 } });
    expect(await stored(stub)).toBe(2);
    expect(
      await outcome(stub.refund({ at: now, cost: 1, costs: { default: 1 }, tag: { id: crypto.randomUUID(), deadline: Date.now() - 1 } })),
    ).toContain("no longer waits");
    expect(await stored(stub)).toBe(2);
  });

  it("gives back once per refund id even when a retry reaches a new instance (its memory of calls gone)", async () => {
    const stub = env.COUNTERS.getByName("test:refund-once-evicted");
    const now = await frozen(stub);
    for (let i = 0; i < 3; i++) await stub.consume({ limits, tag: tag() });
    const refund = { at: now, cost: 1, costs: { default: 1 }, tag: tag() };
    await stub.refund(refund);
    await evictDurableObject(stub);
    await env.COUNTERS.getByName("test:refund-once-evicted").refund(refund);
    expect(await stored(stub)).toBe(2);
  });

  it("takes back what a call returns once even when its cancellation reaches a new instance", async () => {
    const stub = env.COUNTERS.getByName("test:returned-once-evicted");
    await frozen(stub);
    const wide = [{ name: "default", limit: 1000, windowSeconds: 60 }];
    // A hot counter leases beside its next admission; its caller spent all but one of the lease.
    for (let i = 0; i < 60; i++) await stub.consume({ limits: wide, tag: tag() });
    const { lease } = await stub.consume({ limits: wide, tag: tag(), lease: true });
    if (!lease) throw new Error("no lease");
    const leased = () =>
      runInDurableObject(
        stub,
        (_, state) => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM hits WHERE at = ?", lease.id).one().n,
      );
    // The call that returns the one left reaches the object; its answer is lost, the object restarts, and the caller
    // cancels the call, returning the same rest again.
    const returning = { tag: tag(), returned: [{ id: lease.id, left: 1 }] };
    await stub.consume({ limits: wide, ...returning });
    expect(await leased()).toBe(lease.units - 1);
    await evictDurableObject(stub);
    await env.COUNTERS.getByName("test:returned-once-evicted").cancel(returning);
    expect(await leased()).toBe(lease.units - 1);
  });

  it("counts in its own storage, so a new instance keeps the count", async () => {
    const stub = env.COUNTERS.getByName("test:persist");
    expect((await stub.consume({ limits, tag: tag() })).limits[0]?.remaining).toBe(2);
    expect((await stub.consume({ limits, tag: tag() })).limits[0]?.remaining).toBe(1);
    await evictDurableObject(stub);
    const again = env.COUNTERS.getByName("test:persist");
    expect(await again.consume({ limits, tag: tag() })).toMatchObject({ allowed: true, limits: [{ remaining: 0 }] });
    expect(await again.consume({ limits, tag: tag() })).toMatchObject({ allowed: false, limits: [{ remaining: 0 }] });
    const stored = await runInDurableObject(again, (_, state) => state.storage.sql.exec("SELECT count(*) AS n FROM hits").one());
    expect(stored.n).toBe(3);
  });

  it("rolls the window over with an injected clock and forgets what left it", async () => {
    const stub = env.COUNTERS.getByName("test:clock");
    let now = 1_000_000;
    await runInDurableObject(stub, (instance) => {
      instance.clock = () => now;
    });
    for (let i = 0; i < 3; i++) expect((await stub.consume({ limits, tag: tag() })).allowed).toBe(true);
    const refused = await stub.consume({ limits, tag: tag() });
    expect(refused).toMatchObject({ allowed: false, retryAfter: 10 });
    now += 9_999;
    expect((await stub.consume({ limits, tag: tag() })).allowed).toBe(false);
    now += 1;
    // All three were admitted at the same instant, so all three left the window together.
    expect(await stub.consume({ limits, tag: tag() })).toMatchObject({ allowed: true, limits: [{ remaining: 2 }] });
    const stored = await runInDurableObject(stub, (_, state) => state.storage.sql.exec("SELECT count(*) AS n FROM hits").one());
    expect(stored.n).toBe(1);
  });

  it("gives back a refunded request", async () => {
    const stub = env.COUNTERS.getByName("test:refund");
    const first = await stub.consume({ limits, tag: tag() });
    await stub.consume({ limits, tag: tag() });
    await stub.consume({ limits, tag: tag() });
    await stub.refund({ at: first.at, cost: 1, costs: { default: 1 }, tag: tag() });
    expect((await stub.consume({ limits, tag: tag() })).limits[0]?.remaining).toBe(0);
    expect((await stub.consume({ limits, tag: tag() })).allowed).toBe(false);
  });

  it("spends once for a call and its retry (same id)", async () => {
    const stub = env.COUNTERS.getByName("test:retry");
    const call = tag();
    const first = await stub.consume({ limits, tag: call });
    const retry = await stub.consume({ limits, tag: call });
    expect(retry).toEqual(first);
    expect((await stub.consume({ limits, tag: tag() })).limits[0]?.remaining).toBe(1);
    expect(await stored(stub)).toBe(2);
  });

  it("spends nothing for a call that arrives after its deadline", async () => {
    const stub = env.COUNTERS.getByName("test:late");
    expect(await outcome(stub.consume({ limits, tag: { id: "late", deadline: Date.now() - 1 } }))).toMatch(/no longer waits/);
    expect(await stored(stub)).toBe(0);
    expect((await stub.consume({ limits, tag: tag() })).limits[0]?.remaining).toBe(2);
  });

  it("gives back what a cancelled call spent, and never spends for it later", async () => {
    const stub = env.COUNTERS.getByName("test:cancel");
    const answered = tag();
    await stub.consume({ limits, tag: answered });
    await stub.cancel({ tag: answered });
    const never = tag();
    await stub.cancel({ tag: never });
    expect(await outcome(stub.consume({ limits, tag: never }))).toMatch(/no longer waits/);
    expect(await stored(stub)).toBe(0);
    expect((await stub.consume({ limits, tag: tag() })).limits[0]?.remaining).toBe(2);
  });
});

describe("idle counters", () => {
  it("delete their storage once nothing they counted can be in a window, and count afresh after", async () => {
    const stub = env.COUNTERS.getByName("test:idle");
    let now = Date.now();
    await runInDurableObject(stub, (instance) => {
      instance.clock = () => now;
    });
    await stub.consume({ limits, tag: tag() });
    await stub.consume({ limits, tag: tag() });
    // Still inside the window and its grace: the alarm keeps everything and looks again later.
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await stored(stub)).toBe(2);
    now += 10 * 1000 + 60_000;
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const left = await runInDurableObject(stub, async (_, state) => ({
      tables: state.storage.sql.exec("SELECT name FROM sqlite_master WHERE name = 'hits'").toArray().length,
      deleteAt: await state.storage.get("deleteAt"),
      alarm: await state.storage.getAlarm(),
    }));
    expect(left).toEqual({ tables: 0, deleteAt: undefined, alarm: null });
    expect((await stub.consume({ limits, tag: tag() })).limits[0]?.remaining).toBe(2);
    expect(await stored(stub)).toBe(1);
  });
});

describe("the key's record in its object", () => {
  it("is trusted for RECORD_TTL_MS at most: a change nobody announced is seen once it expires (injected clock)", async () => {
    const { key } = await provision();
    const k = await createKey(key.key, { name: "ttl" });
    const stub = env.KEYS.getByName(`key:${k.id}`);
    let now = Date.now();
    await runInDurableObject(stub, (instance) => {
      instance.clock = () => now;
    });
    expect((await whoami(k.key)).status).toBe(200);
    // Revoked behind the counter's back (no reload): the cached record still admits until it expires.
    await env.DB.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?")
      .bind(new Date(now - 1000).toISOString(), k.id)
      .run();
    now += RECORD_TTL_MS - 1;
    expect((await whoami(k.key)).status).toBe(200);
    now += 1;
    await expectProblem(await whoami(k.key), 401, "key_revoked");
  });

  it("trusts a record UNSETTLED_TRUST_MS at most while a change may still land, even after eviction (injected clock)", async () => {
    const { key } = await provision();
    const k = await createKey(key.key, { name: "unsettled" });
    const stub = env.KEYS.getByName(`key:${k.id}`);
    let now = Date.now();
    const useClock = () =>
      runInDurableObject(stub, (instance) => {
        instance.clock = () => now;
      });
    await useClock();
    await stub.distrust(30_000);
    await evictDurableObject(stub);
    await useClock();
    expect((await whoami(k.key)).status).toBe(200);
    // The change lands behind the object's back after it read the record.
    await env.DB.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?")
      .bind(new Date(now - 1000).toISOString(), k.id)
      .run();
    now += UNSETTLED_TRUST_MS - 1;
    expect((await whoami(k.key)).status).toBe(200);
    now += 1;
    await expectProblem(await whoami(k.key), 401, "key_revoked");
  });

  it("never keeps a record read before a reload that happened during the read", async () => {
    const { key } = await provision();
    const k = await createKey(key.key, { name: "in flight" });
    const stub = env.KEYS.getByName(`key:${k.id}`);
    // The next read of the key answers late, with the row as it was when the read began. Made inside the object:
    // what the object uses must belong to its own context.
    let slow: ReturnType<typeof faultyDatabase> | undefined;
    const restore = await objectDatabase(stub, () => {
      slow = faultyDatabase(env.DB, { kind: "late-answer", ms: 200 });
      return slow;
    });
    const first = whoami(k.key);
    await slow?.reached();
    await env.DB.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?")
      .bind(new Date(Date.now() - 1000).toISOString(), k.id)
      .run();
    await restore();
    await first;
    await expectProblem(await whoami(k.key), 401, "key_revoked");
  });

  it("judges a request whose read was on its way back when a revocation reloaded the key by the revoked key", async () => {
    const { key } = await provision();
    const k = await createKey(key.key, { name: "read in flight" });
    const stub = env.KEYS.getByName(`key:${k.id}`);
    let release = () => {};
    const until = new Promise<void>((resolve) => {
      release = resolve;
    });
    let slow: ReturnType<typeof faultyDatabase> | undefined;
    const restore = await objectDatabase(stub, () => {
      // The first read answers, with the row as it was before the revocation, only once the revocation was answered.
      let reads = 0;
      slow = faultyDatabase(env.DB, { kind: "held-answer", until }, () => reads++ === 0);
      return slow;
    });
    const first = whoami(k.key);
    await slow?.reached();
    expect((await call(`/v1/api-keys/${k.id}`, { method: "DELETE", key: key.key })).status).toBe(200);
    release();
    await expectProblem(await first, 401, "key_revoked");
    await restore();
  });

  it("reads, once restarted, from a copy of D1 caught up with the last change that reloaded it", async () => {
    const { key } = await provision();
    const k = await createKey(key.key, { name: "restarted" });
    const stub = env.KEYS.getByName(`key:${k.id}`);
    const bookmark = "0000000a-00000001-00000000-0123456789abcdef0123456789abcdef";
    await stub.reload(bookmark);
    await evictDurableObject(stub);
    const { asked, restore } = await objectSessions(stub);
    expect((await whoami(k.key)).status).toBe(200);
    expect(asked).toEqual([bookmark]);
    await restore();
  });

  it("gives back a stored admission after the object was evicted", async () => {
    const stub = env.COUNTERS.getByName("test:evicted-refund");
    const first = await stub.consume({ limits, tag: tag() });
    await stub.consume({ limits, tag: tag() });
    await evictDurableObject(stub);
    const again = env.COUNTERS.getByName("test:evicted-refund");
    await again.refund({ at: first.at, cost: 1, costs: { default: 1 }, tag: tag() });
    expect(await stored(again)).toBe(1);
    expect((await again.consume({ limits, tag: tag() })).limits[0]?.remaining).toBe(1);
  });
});
