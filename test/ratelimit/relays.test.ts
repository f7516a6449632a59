import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { LEASE_MS, RELAY_AT, RELAYS } from "../../src/core/lease";
import { Holdings, holdings } from "../../src/counters/held";
import { authorizeKey } from "../../src/keys/authorize";
import type { KeyObject } from "../../src/keys/object";
import { makeDeps } from "../../src/platform/deps";
import { ApiError } from "../../src/platform/errors";
import { faultyObjects } from "../faults";
import { call, createKey, expectProblem, provision } from "../helpers";

/** How many isolates a test drives one key from: more than RELAY_AT calls of theirs reach its object within a second. */
const ISOLATES = 300;

/**
 * These tests measure where 300 isolates' requests go, not how fast a loaded machine answers them at once: their calls
 * (and their relays' calls, which keep the isolate's deadline) wait 20 s, not the deployment's 1 s, before a 503.
 */
const PATIENT = { RATE_LIMIT_TIMEOUT_MS: "20000" };

/**
 * One request on the key path of `isolate` (on these bindings, if given), after its background work: admitted, 429,
 * the refusal's code, or the code of the error the app answers.
 */
async function outcome(
  key: string,
  isolate: Holdings,
  cost = 1,
  overrides: Partial<Cloudflare.Env> = {},
): Promise<"admitted" | 429 | string> {
  const ctx = createExecutionContext();
  try {
    const verdict = await authorizeKey(
      makeDeps({ ...env, ...PATIENT, ...overrides }, ctx),
      { key, method: "bearer", need: "any", cost },
      isolate,
    );
    if (!verdict.ok) return "code" in verdict ? verdict.code : "refused";
    return verdict.spent.every((s) => s.allowed) ? "admitted" : 429;
  } catch (err) {
    if (err instanceof ApiError) return err.code;
    throw err;
  } finally {
    await waitOnExecutionContext(ctx);
  }
}

/** One request from every isolate at once. */
const wave = (key: string, isolates: Holdings[], cost = 1) => Promise.all(isolates.map((i) => outcome(key, i, cost)));

/** What the key's first `count` relays hold unspent of their blocks now, and have yet to give back. */
async function heldByRelays(name: string, count = RELAYS): Promise<number> {
  let held = 0;
  for (let k = 0; k < count; k++) held += await env.RELAYS.getByName(`relay:${k}:${name}`).unspent(name.slice("key:".length));
  return held;
}

/** What the key's object counts as spent of its one limit, asked by a call that spends and leases nothing; and its answer. */
async function countedByObject(keyId: string) {
  const tag = { id: crypto.randomUUID(), deadline: Date.now() + 10_000 };
  const answer = await env.KEYS.getByName(`key:${keyId}`).authorize({ keyId, method: "bearer", need: "any", tag, cost: 0 });
  if (!answer.ok) throw new Error("the object refused the key");
  const [limit] = answer.granted.limits;
  if (!limit) throw new Error("the key has no limit");
  return { spent: limit.limit - limit.remaining, answer };
}

/**
 * What requests used of the key `keyId`: what its object counts as spent, less what `isolates` and its first
 * `relays` relays hold unspent or owe it.
 */
async function usedBy(keyId: string, isolates: Holdings[], relays = RELAYS): Promise<number> {
  const name = `key:${keyId}`;
  return (
    (await countedByObject(keyId)).spent -
    (await heldByRelays(name, relays)) -
    isolates.reduce((n, h) => n + h.available(name) + h.owing(name), 0)
  );
}

/**
 * A fresh key and ISOLATES isolates driven until the key's object spread them over relays (an isolate learns it when it
 * calls: requests of `cost` run its lease down within a few waves); what they admitted so far. `first`, when given, is
 * the first isolate (this one's own holdings, which a change made through the app drops).
 */
async function spreadKey(rateLimit: { limit: number; windowSeconds: number }, cost = 10, first?: Holdings) {
  const { key } = await provision();
  const hot = await createKey(key.key, { rateLimit });
  const name = `key:${hot.id}`;
  const isolates = Array.from({ length: ISOLATES }, (_, i) => (i === 0 && first) || new Holdings());
  const outcomes: (string | number)[] = [];
  // The object is told of a second's fan-in before each wave: how fast a loaded machine answers 300 isolates does not
  // decide whether the key is spread (FanIn's own tests, in hot-key.test.ts, cover when it is).
  const hotNow = () => runInDurableObject(env.KEYS.getByName(name), (o: KeyObject) => o.fanIn.note(Date.now(), RELAY_AT));
  for (let i = 0; i < 20 && !isolates.every((h) => h.relayOf(name)); i++) {
    await hotNow();
    outcomes.push(...(await wave(hot.key, isolates, cost)));
  }
  expect(isolates.every((h) => h.relayOf(name))).toBe(true);
  return { admin: key, hot, name, isolates, outcomes };
}

describe("a key called from more isolates than one object answers", () => {
  it("spreads them over relays that admit their requests from blocks of its budget, the key's object counting every one", async () => {
    const { hot, name, isolates, outcomes } = await spreadKey({ limit: 100_000, windowSeconds: 60 });
    // The isolates call RELAYS relays between them, each its own.
    expect(new Set(isolates.map((h) => h.relayOf(name))).size).toBe(RELAYS);
    const more = await wave(hot.key, isolates, 10);
    expect(more.every((o) => o === "admitted")).toBe(true);
    expect(outcomes.every((o) => o === "admitted")).toBe(true);
    // Some relay answered from a block it holds, and what the object counts covers every admission and every block.
    expect(await heldByRelays(name)).toBeGreaterThan(0);
    const { spent, answer } = await countedByObject(hot.id);
    expect(spent).toBeGreaterThanOrEqual((outcomes.length + more.length) * 10);
    // The object tells its callers the key is spread.
    expect(answer.relays).toMatchObject({ count: RELAYS });
  });

  it("admits no more than its limit across isolates and relays, and no less than what they do not hold unspent", async () => {
    const limit = 30_000;
    const cost = 25;
    const { hot, name, isolates, outcomes } = await spreadKey({ limit, windowSeconds: 60 }, cost);
    for (let i = 0; i < 20 && !outcomes.includes(429); i++) outcomes.push(...(await wave(hot.key, isolates, cost)));
    // Refused from here on: every isolate's next request, and no 500 or other refusal on the way.
    const after = await wave(hot.key, isolates, cost);
    const admitted = [...outcomes, ...after].filter((o) => o === "admitted").length * cost;
    expect([...outcomes, ...after].every((o) => o === "admitted" || o === 429)).toBe(true);
    expect(admitted).toBeLessThanOrEqual(limit);
    // A relay gives back what it holds a lease after it last served the key, and what it sends is counted nowhere
    // while on its way: once the relays hold nothing and what the key's object has left stays put, it is all there.
    await vi.waitFor(async () => expect(await heldByRelays(name)).toBe(0), { timeout: 10_000, interval: 100 });
    const free = await vi.waitFor(
      async () => {
        const now = (await countedByObject(hot.id)).spent;
        await new Promise((r) => setTimeout(r, 300));
        expect((await countedByObject(hot.id)).spent).toBe(now);
        return limit - now;
      },
      { timeout: 10_000, interval: 0 },
    );
    const unspent = isolates.reduce((n, h) => n + h.available(name) + h.owing(name), 0);
    // What the isolates hold unspent, or have yet to give back, is budget too, as is what the key's object has left;
    // short of that, less than 2% went unused (requests of 25 finding less than 25 left where they landed).
    expect(admitted + unspent + free).toBeGreaterThanOrEqual(0.98 * limit);
  });

  it("answers a request whose relay fails as one whose key's object failed: 503 in closed mode, admitted once the relay answers", async () => {
    const { hot, name, isolates } = await spreadKey({ limit: 100_000, windowSeconds: 60 });
    const [isolate] = isolates as [Holdings];
    // More than a lease holds: the request calls its relay.
    const cost = 100;
    const failing = faultyObjects(env.RELAYS, { authorize: { kind: "throw" } });
    expect(isolate.relayOf(name)).not.toBeNull();
    expect(await outcome(hot.key, isolate, cost, { RELAYS: failing })).toBe("rate_limiter_unavailable");
    expect(failing.calls("authorize")).toBe(1);
    expect(await outcome(hot.key, isolate, cost)).toBe("admitted");
  });

  it("gives back what a relay handed out for a call its isolate gave up on, and never the block the relay keeps: a 503 spends nothing", async () => {
    const { hot, name, isolates } = await spreadKey({ limit: 100_000, windowSeconds: 60 });
    const [isolate] = isolates as [Holdings];
    const used = () => usedBy(hot.id, isolates);
    // Every lease and block has ended: the request brings its isolate's rests back to its relay, which asks the key's
    // object for its admission and a block, and answers after the isolate gave up.
    await new Promise((r) => setTimeout(r, LEASE_MS + 50));
    const before = await used();
    const late = faultyObjects(env.RELAYS, { authorize: { kind: "late-answer", ms: 300 } });
    const relay = env.RELAYS.getByName(isolate.relayOf(name) as string);
    expect(await outcome(hot.key, isolate, 100, { RELAYS: late, RATE_LIMIT_TIMEOUT_MS: "200" })).toBe("rate_limiter_unavailable");
    await late.settled();
    expect(await used()).toBe(before);
    // With no call of the key's after it, the relay gives back what it owes once its block has ended: the key's object
    // has it back, not only the relay's account of it.
    expect(await relay.unspent(hot.id)).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, LEASE_MS + 300));
    expect(await relay.unspent(hot.id)).toBe(0);
    expect(await used()).toBe(before);
  });

  it("cancels a call wherever its attempts went, what its isolate's ended lease left given back once: a retry that went to the key's object after its relay failed spends nothing", async () => {
    const { key } = await provision();
    const hot = await createKey(key.key, { rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const name = `key:${hot.id}`;
    const isolate = new Holdings();
    // The key is hot in this isolate, which holds a lease; then it is told to call a relay, and the lease ends unspent.
    for (let i = 0; i < 100 && isolate.available(name) === 0; i++) expect(await outcome(hot.key, isolate)).toBe("admitted");
    // Two admissions of the lease spent: its end then holds them beside the rest, so taking the rest back twice would show.
    for (let i = 0; i < 2; i++) expect(await outcome(hot.key, isolate)).toBe("admitted");
    expect(isolate.available(name)).toBeGreaterThan(0);
    isolate.route(name, { count: RELAYS, ms: 10_000 }, Date.now());
    const relay = env.RELAYS.getByName(isolate.relayOf(name) as string);
    await new Promise((r) => setTimeout(r, LEASE_MS + 50));
    expect(isolate.owing(name)).toBeGreaterThan(0);
    /** What requests used: what the key's object counts as spent, less what the isolate and the relay hold or owe it. */
    const used = async () =>
      (await countedByObject(hot.id)).spent - isolate.available(name) - isolate.owing(name) - (await relay.unspent(hot.id));
    const before = await used();
    // The relay's call fails in a way the platform marks retryable, and meanwhile another request's answer sends this
    // isolate back to the key's object: the retry goes there, and answers too late.
    const lost = Object.assign(new Error("network connection lost"), { retryable: true });
    const relays = faultyObjects(env.RELAYS, {
      authorize: { kind: "throw", error: lost, times: 1, meanwhile: () => isolate.route(name, null, Date.now()) },
    });
    const late = faultyObjects(env.KEYS, { authorize: { kind: "late-answer", ms: 300 } });
    expect(await outcome(hot.key, isolate, 1, { RELAYS: relays, KEYS: late, RATE_LIMIT_TIMEOUT_MS: "200" })).toBe(
      "rate_limiter_unavailable",
    );
    await late.settled();
    expect(late.calls("authorize")).toBe(1);
    expect(late.calls("cancel")).toBe(1);
    // The ended lease's rest went to the relay (the first place), which gives it back once its blocks have ended.
    await new Promise((r) => setTimeout(r, LEASE_MS + 300));
    expect(isolate.owing(name)).toBe(0);
    expect(await relay.unspent(hot.id)).toBe(0);
    expect(await used()).toBe(before);
  });

  it("gives back what a relay spent for an attempt whose answer was lost, once the retry is answered by the key's object", async () => {
    const { hot, name, isolates } = await spreadKey({ limit: 100_000, windowSeconds: 60 });
    const [isolate] = isolates as [Holdings];
    const used = () => usedBy(hot.id, isolates);
    const before = await used();
    // The relay admits the request, its answer is lost in a way the platform marks retryable, and meanwhile another
    // request's answer sends this isolate back to the key's object, which answers the retry.
    const lost = Object.assign(new Error("network connection lost"), { retryable: true });
    const relays = faultyObjects(env.RELAYS, {
      authorize: { kind: "lost-answer", error: lost, times: 1, meanwhile: () => isolate.route(name, null, Date.now()) },
    });
    // More than a lease holds: the request calls its relay.
    const cost = 100;
    expect(await outcome(hot.key, isolate, cost, { RELAYS: relays })).toBe("admitted");
    expect(relays.calls("authorize")).toBe(1);
    expect(relays.calls("cancel")).toBe(1);
    expect(await used()).toBe(before + cost);
  });

  it("gives back what one relay spent for an attempt whose answer was lost, once another relay answers the retry: each relay asks the key's object for itself", async () => {
    // Seat 9: relay 1 of 8, relay 9 of 16.
    const first = new Holdings(undefined, 9);
    const { hot, name, isolates } = await spreadKey({ limit: 100_000, windowSeconds: 60 }, 10, first);
    expect(first.relayOf(name)).toBe(`relay:1:${name}`);
    const used = () => usedBy(hot.id, isolates, 2 * RELAYS);
    // Every block has ended: the first relay asks the key's object for the request, and a block beside it.
    await new Promise((r) => setTimeout(r, LEASE_MS + 50));
    const before = await used();
    // Its answer is lost in a way the platform marks retryable, and meanwhile the key is spread over twice as many
    // relays: the retry goes to relay 9, which holds nothing and asks the key's object too.
    const lost = Object.assign(new Error("network connection lost"), { retryable: true });
    const relays = faultyObjects(env.RELAYS, {
      authorize: {
        kind: "lost-answer",
        error: lost,
        times: 1,
        meanwhile: () => first.route(name, { count: 2 * RELAYS, ms: 10_000 }, Date.now()),
      },
    });
    const cost = 100;
    expect(await outcome(hot.key, first, cost, { RELAYS: relays })).toBe("admitted");
    // The retry went to relay 9, which now holds a block of its own.
    expect(relays.calls("authorize")).toBe(2);
    expect(await env.RELAYS.getByName(`relay:9:${name}`).unspent(hot.id)).toBeGreaterThan(0);
    expect(await used()).toBe(before + cost);
  });

  it("keeps a change made in an isolate in force there at once, though its relay's answer under the record before comes after", async () => {
    const { admin, hot, name } = await spreadKey({ limit: 100_000, windowSeconds: 60 }, 10, holdings);
    expect(holdings.relayOf(name)).not.toBeNull();
    const late = faultyObjects(env.RELAYS, { authorize: { kind: "late-answer", ms: 300 } });
    // More than this isolate holds: the request calls its relay, which answers from its block, after the revocation.
    const inFlight = outcome(hot.key, holdings, holdings.available(name) + 1, { RELAYS: late });
    await late.reached("authorize");
    expect((await call(`/v1/api-keys/${hot.id}`, { method: "DELETE", key: admin.key })).status).toBe(200);
    expect(await inFlight).toBe("admitted");
    expect(await outcome(hot.key, holdings)).toBe("key_revoked");
  });

  it("refuses a revoked key in the isolate that revoked it at once, and through every relay within a lease", async () => {
    const { admin, hot, isolates } = await spreadKey({ limit: 100_000, windowSeconds: 60 });
    expect((await call(`/v1/api-keys/${hot.id}`, { method: "DELETE", key: admin.key })).status).toBe(200);
    await expectProblem(await call("/v1/whoami", { key: hot.key }), 401, "key_revoked");
    await new Promise((r) => setTimeout(r, LEASE_MS + 50));
    expect(new Set(await wave(hot.key, isolates))).toEqual(new Set(["key_revoked"]));
  });
});
