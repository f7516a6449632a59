import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { createLocalJWKSet, jwtVerify } from "jose";
import { describe, expect, it } from "vitest";
import { KeygateVerifier } from "../../src/verifier";
import { type Fault, faultyDatabase, faultyObjects, objectDatabase } from "../faults";
import { call, callWith, createKey, expectProblem, type KeyBody, memberWithKey, ORIGIN, provision, through } from "../helpers";
import { type Echo, UPSTREAM } from "./table";

// The gateway, the verify API and the verify service binding when the key's Durable Object or D1 fails. Closed mode
// (the default) answers 503 and forwards nothing: a key the object cannot judge never reaches the upstream. Open mode
// judges the key in D1 and forwards it unlimited, with its identity. What reaches the upstream is read from the test
// upstream's own record: a POST to /upload/<id> is counted there, and /probe/<id> answers how many bytes arrived.

const TOKEN = "test-verify-token-0123456789abcdef0123";
// Only a full-access catch-all: these tests are about failures, not about resource routes.
const TABLE = { UPSTREAM_URL: UPSTREAM, GATEWAY_ROUTES: JSON.stringify([{ pattern: "/*", access: "full" }]), PUBLIC_ORIGIN: ORIGIN };
const OPEN = { RATE_LIMIT_FAILURE_MODE: "open" };
const D1_ERROR = () => new Error("D1_ERROR: Network connection lost.");

/** How the key's object fails: each makes its `authorize` call fail or miss RATE_LIMIT_TIMEOUT_MS (100 ms here). */
const objectFaults: [string, Fault][] = [
  ["throws", { kind: "throw", error: new Error("Durable Object reset because its code was updated.") }],
  ["stalls", { kind: "stall" }],
  ["answers after the deadline", { kind: "late-answer", ms: 300 }],
  ["is reached after the deadline", { kind: "late-call", ms: 300 }],
];

function objectDown(fault: Fault) {
  return { KEYS: faultyObjects(env.KEYS, { authorize: fault }), RATE_LIMIT_TIMEOUT_MS: "100" };
}

/** Bytes the test upstream received at /upload/<id>: 0 when nothing arrived. */
async function received(id: string): Promise<number> {
  return (await (await fetch(`${UPSTREAM}/probe/${id}`)).json<{ bytes: number }>()).bytes;
}

const BODY = { hello: "upstream" };
const BODY_BYTES = JSON.stringify(BODY).length;

/** A POST through the gateway to an upload id of its own, with these bindings replaced. */
async function send(key: string, overrides: Partial<Cloudflare.Env> = {}): Promise<{ res: Response; id: string }> {
  const id = crypto.randomUUID();
  const res = await through({ ...TABLE, ...overrides }, `/upload/${id}`, { key, body: BODY });
  return { res, id };
}

/** Refused before the upstream: the problem Keygate answers, and not one byte at the upstream. */
async function refusedBefore(sent: { res: Response; id: string }, status: number, code: string): Promise<Record<string, unknown>> {
  const body = await expectProblem(sent.res, status, code);
  expect(await received(sent.id)).toBe(0);
  return body;
}

/** Forwarded: the upstream's answer, which it received whole, with Keygate's identity headers and no credential. */
async function forwarded(sent: { res: Response; id: string }, key: KeyBody): Promise<Echo> {
  expect(sent.res.status, await sent.res.clone().text()).toBe(200);
  expect(sent.res.headers.get("X-Upstream")).toBe("yes");
  const seen = await sent.res.json<Echo>();
  expect(await received(sent.id)).toBe(BODY_BYTES);
  expect(seen.headers.authorization).toBeUndefined();
  expect(seen.headers).toMatchObject({
    "keygate-account-id": expect.stringMatching(/^acc_/),
    "keygate-key-id": key.id,
    "keygate-user-id": key.ownerId,
    "keygate-auth-method": "key",
    "keygate-request-id": sent.res.headers.get("X-Request-Id"),
  });
  const jwks = createLocalJWKSet(await (await call("/.well-known/jwks.json")).json());
  const { payload } = await jwtVerify(seen.headers["keygate-assertion"] as string, jwks, {
    issuer: ORIGIN,
    audience: new URL(UPSTREAM).origin,
    typ: "keygate-assertion+jwt",
  });
  expect(payload).toMatchObject({ key: key.id, sub: key.ownerId, acc: seen.headers["keygate-account-id"], htm: "POST" });
  return seen;
}

/** What is left of the key's budget, as a request through the gateway (with nothing failing) sees it; it spends one. */
async function remaining(key: string): Promise<string | null> {
  const sent = await send(key);
  expect(sent.res.status).toBe(200);
  return sent.res.headers.get("X-RateLimit-Remaining");
}

/** A revoked key, a member's full-access key whose owner holds one project only, and the admin's key, of one account. */
async function keysOfAllKinds() {
  const { key } = await provision();
  const limited = await createKey(key.key, { name: "limited", rateLimit: { limit: 5, windowSeconds: 60 } });
  const revoked = await createKey(key.key, { name: "revoked" });
  expect((await call(`/v1/api-keys/${revoked.id}`, { method: "DELETE", key: key.key })).status).toBe(200);
  const member = await memberWithKey(key.key);
  const granted = await call(`/v1/users/${member.user.id}`, { method: "PATCH", key: key.key, body: { grants: ["project:alpha"] } });
  expect(granted.status).toBe(200);
  return { admin: key, limited, revoked, narrow: member.key };
}

describe("gateway, fail-closed (the default), when the key's object fails", () => {
  for (const [what, fault] of objectFaults) {
    it(`answers 503 rate_limiter_unavailable when the object ${what}, forwards nothing and spends nothing`, async () => {
      const { admin, limited, revoked, narrow } = await keysOfAllKinds();
      const down = objectDown(fault);
      for (const key of [limited, admin, revoked, narrow]) {
        const sent = await send(key.key, down);
        await refusedBefore(sent, 503, "rate_limiter_unavailable");
        expect(sent.res.headers.get("Retry-After")).toBe("5");
        expect(sent.res.headers.get("X-RateLimit-Remaining")).toBeNull();
      }
      // Late calls have now reached the object: none of them spent (cancelled, or arrived past its deadline).
      await down.KEYS.settled();
      expect(await remaining(limited.key)).toBe("4");
    });
  }
});

describe("gateway, fail-open, when the key's object fails", () => {
  for (const [what, fault] of objectFaults.slice(0, 2)) {
    it(`judges the key in D1 when the object ${what}: a valid key is forwarded with its identity, unlimited`, async () => {
      const { admin, limited } = await keysOfAllKinds();
      const down = { ...objectDown(fault), ...OPEN };
      for (const key of [limited, admin]) {
        const sent = await send(key.key, down);
        const seen = await forwarded(sent, key);
        expect(seen.headers).toMatchObject({ "keygate-role": "admin", "keygate-scopes": "*" });
        expect(sent.res.headers.get("X-RateLimit-Remaining")).toBeNull();
      }
      // Unlimited while the object is down: it spent nothing of the key's budget.
      expect(await remaining(limited.key)).toBe("4");
    });

    it(`refuses in D1 what the object would refuse when it ${what}, forwarding nothing`, async () => {
      const { revoked, narrow } = await keysOfAllKinds();
      const down = { ...objectDown(fault), ...OPEN };
      await refusedBefore(await send(revoked.key, down), 401, "key_revoked");
      // The member's grants still bound their key: the catch-all needs full access.
      await refusedBefore(await send(narrow.key, down), 403, "insufficient_scope");
      await refusedBefore(await send(`${revoked.key.slice(0, -8)}00000000`, down), 401, "invalid_key");
    });
  }

  it("marks a request forwarded unlimited with X-RateLimit-Status: unavailable", async () => {
    const { limited } = await keysOfAllKinds();
    const sent = await send(limited.key, { ...objectDown({ kind: "throw" }), ...OPEN });
    await forwarded(sent, limited);
    expect(sent.res.headers.get("X-RateLimit-Status")).toBe("unavailable");
  });
});

describe("gateway when D1 is down", () => {
  const stalled = () => ({ DB: faultyDatabase(env.DB, { kind: "stall" }), D1_TIMEOUT_MS: "100" });
  /** D1 down for the key's object too (it reads D1 through its own handle); answers the undo. */
  const objectD1Down = (key: KeyBody, fault: Fault = { kind: "throw", error: D1_ERROR() }) =>
    objectDatabase(env.KEYS.getByName(`key:${key.id}`), () => faultyDatabase(env.DB, fault));

  it("forwards a key this isolate has never seen with the worker's D1 down: its object reads the key, no lookup", async () => {
    const { limited } = await keysOfAllKinds();
    await forwarded(await send(limited.key, stalled()), limited);
    expect(await remaining(limited.key)).toBe("3");
  });

  // D1 down for both, the worker's stalling or failing at once (a lost connection): never 500, never forwarded.
  for (const [how, workerD1] of [
    ["stalls", stalled],
    ["fails at once", () => ({ DB: faultyDatabase(env.DB, { kind: "throw", error: D1_ERROR() }) })],
  ] as const) {
    it(`answers 503, in either mode, for a key whose object has not read it when D1 ${how} for the worker and the object, forwarding nothing`, async () => {
      const { limited } = await keysOfAllKinds();
      const restore = await objectD1Down(limited);
      for (const [mode, code] of [
        [{}, "rate_limiter_unavailable"],
        [OPEN, "database_unavailable"],
      ] as const) {
        const sent = await send(limited.key, { ...workerD1(), ...mode });
        await refusedBefore(sent, 503, code);
        expect(sent.res.headers.get("Retry-After")).toBe("5");
      }
      await restore();
      expect(await remaining(limited.key)).toBe("4");
    });
  }

  it("still forwards a key this isolate knows: its object judges it and D1 is not on the way", async () => {
    const { limited, revoked } = await keysOfAllKinds();
    expect(await remaining(limited.key)).toBe("4");
    await expectProblem((await send(revoked.key)).res, 401, "key_revoked");
    for (const mode of [{}, OPEN]) {
      const down = { ...stalled(), ...mode };
      await forwarded(await send(limited.key, down), limited);
      await refusedBefore(await send(revoked.key, down), 401, "key_revoked");
    }
    expect(await remaining(limited.key)).toBe("1");
  });

  it("forwards nothing when both the object and D1 are down: closed 503 rate_limiter_unavailable, open 503 database_unavailable", async () => {
    const { admin, limited, revoked } = await keysOfAllKinds();
    // Known to the isolate, so only the object and the open-mode check in D1 stand between the key and the upstream.
    for (const key of [admin, limited]) await send(key.key);
    await send(revoked.key);
    for (const key of [admin, limited, revoked]) {
      const down = { ...objectDown({ kind: "throw" }), ...stalled() };
      await refusedBefore(await send(key.key, down), 503, "rate_limiter_unavailable");
      await refusedBefore(await send(key.key, { ...down, ...OPEN }), 503, "database_unavailable");
    }
    expect(await remaining(limited.key)).toBe("3");
  });
});

/** POST /v1/keys/verify with the verify token and these bindings replaced. */
function verifyOver(overrides: Partial<Cloudflare.Env>, body: unknown): Promise<Response> {
  return callWith(overrides, "/v1/keys/verify", { headers: { Authorization: `Bearer ${TOKEN}` }, body });
}

describe("POST /v1/keys/verify when the key's object or D1 fails", () => {
  for (const [what, fault] of objectFaults) {
    it(`fail-closed: 503 rate_limiter_unavailable when the object ${what}, spending nothing`, async () => {
      const { admin, limited, revoked } = await keysOfAllKinds();
      const down = objectDown(fault);
      for (const key of [limited, admin, revoked]) {
        const res = await verifyOver(down, { key: key.key, cost: 2 });
        await expectProblem(res, 503, "rate_limiter_unavailable");
        expect(res.headers.get("Retry-After")).toBe("5");
      }
      await down.KEYS.settled();
      expect(await (await verifyOver({}, { key: limited.key })).json()).toMatchObject({ valid: true, rateLimit: { remaining: 4 } });
    });
  }

  for (const [what, fault] of objectFaults.slice(0, 2)) {
    it(`fail-open: the verdict comes from D1 when the object ${what}, with rateLimit null`, async () => {
      const { admin, limited, revoked, narrow } = await keysOfAllKinds();
      const down = { ...objectDown(fault), ...OPEN };
      const res = await verifyOver(down, { key: limited.key, cost: 3 });
      expect(res.status).toBe(200);
      expect(res.headers.get("X-RateLimit-Status")).toBe("unavailable");
      expect(await res.json()).toEqual({
        valid: true,
        accountId: expect.stringMatching(/^acc_/),
        keyId: limited.id,
        userId: limited.ownerId,
        role: "admin",
        scopes: ["*"],
        rateLimit: null,
        credits: null,
        requestId: expect.any(String),
        externalId: null,
        meta: null,
        account: { externalId: null, meta: null },
      });
      expect(await (await verifyOver(down, { key: admin.key })).json()).toMatchObject({ valid: true, keyId: admin.id });
      expect(await (await verifyOver(down, { key: revoked.key })).json()).toEqual({ valid: false, code: "key_revoked" });
      expect(await (await verifyOver(down, { key: narrow.key })).json()).toMatchObject({ valid: true, scopes: ["project:alpha"] });
      expect(await (await verifyOver({}, { key: limited.key })).json()).toMatchObject({ rateLimit: { remaining: 4 } });
    });
  }

  it("answers 503 database_unavailable, in either mode, for a key this isolate has not looked up yet while D1 stalls", async () => {
    const { limited } = await keysOfAllKinds();
    for (const mode of [{}, OPEN]) {
      const res = await verifyOver({ DB: faultyDatabase(env.DB, { kind: "stall" }), D1_TIMEOUT_MS: "100", ...mode }, { key: limited.key });
      await expectProblem(res, 503, "database_unavailable");
      expect(res.headers.get("Retry-After")).toBe("5");
    }
    expect(await (await verifyOver({}, { key: limited.key })).json()).toMatchObject({ rateLimit: { remaining: 4 } });
  });

  it("answers 503 database_unavailable when D1 fails at once, never 500", async () => {
    const { limited } = await keysOfAllKinds();
    const res = await verifyOver({ DB: faultyDatabase(env.DB, { kind: "throw", error: D1_ERROR() }) }, { key: limited.key });
    await expectProblem(res, 503, "database_unavailable");
  });
});

/** Through the service binding: the second Worker calls Keygate's KeygateVerifier with the deployment's own bindings. */
async function verifyThroughBinding(body: unknown): Promise<{ status: number; answer: Record<string, unknown> }> {
  const res = await env.CALLER.fetch("http://caller/", { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, answer: await res.json() };
}

/** Whether the key's object holds its record, read from D1 (a late read has landed). */
function holdsRecord(keyId: string): Promise<boolean> {
  return runInDurableObject(env.KEYS.getByName(`key:${keyId}`), (instance) => instance.holdsRecord);
}

/**
 * Makes the key's real object fail, through the shared fault seam: its own D1 handle is replaced and its record
 * dropped, so its next `authorize` has to read D1 and meets the fault. Answers the undo.
 */
async function breakObject(keyId: string, fault: Fault): Promise<() => Promise<void>> {
  return objectDatabase(env.KEYS.getByName(`key:${keyId}`), () => faultyDatabase(env.DB, fault));
}

describe("the verify service binding when the key's object fails (fail-closed, the deployment's mode)", () => {
  it("rejects with rate_limiter_unavailable when the object throws, and the key works once it is back", async () => {
    const { limited, revoked } = await keysOfAllKinds();
    const restore = [await breakObject(limited.id, { kind: "throw", error: D1_ERROR() })];
    restore.push(await breakObject(revoked.id, { kind: "throw", error: D1_ERROR() }));
    for (const key of [limited, revoked]) {
      const { status, answer } = await verifyThroughBinding({ key: key.key });
      expect(status).toBe(500);
      expect(answer.error).toMatch(/^Error: rate_limiter_unavailable: /);
    }
    for (const undo of restore) await undo();
    expect((await verifyThroughBinding({ key: limited.key })).answer).toMatchObject({ valid: true, rateLimit: { remaining: 4 } });
    expect((await verifyThroughBinding({ key: revoked.key })).answer).toEqual({ valid: false, code: "key_revoked" });
  });

  it("rejects with rate_limiter_unavailable when the object answers after RATE_LIMIT_TIMEOUT_MS, spending nothing", async () => {
    const { limited } = await keysOfAllKinds();
    // The deployment's deadline is the default, 1000 ms; the object's read of the key takes 2500, so a slow machine has
    // 1.5 s to deliver the deadline's answer before the read lands.
    const restore = await breakObject(limited.id, { kind: "late-answer", ms: 2500 });
    const { status, answer } = await verifyThroughBinding({ key: limited.key, cost: 2 });
    expect(status).toBe(500);
    expect(answer.error).toMatch(/^Error: rate_limiter_unavailable: /);
    // Answered before the object had its record: the caller did not wait for the late read.
    expect(await holdsRecord(limited.id)).toBe(false);
    // The late read lands in the object (within its 2500 ms and a margin): the call it served was cancelled, so it
    // spends nothing.
    const landing = Date.now();
    while (!(await holdsRecord(limited.id))) {
      expect(Date.now() - landing, "the late read never landed").toBeLessThan(3_000);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await restore();
    expect((await verifyThroughBinding({ key: limited.key })).answer).toMatchObject({ valid: true, rateLimit: { remaining: 4 } });
  });
});

/**
 * The verify entrypoint itself with some bindings replaced: the service binding's Worker runs with the deployment's
 * bindings (vitest.config.ts), so open mode and a failing D1 of the worker are reached here, on the same class.
 */
async function verifyEntrypoint(overrides: Partial<Cloudflare.Env>, body: Parameters<KeygateVerifier["verify"]>[0]) {
  const ctx = createExecutionContext();
  try {
    return await new KeygateVerifier(ctx, { ...env, ...overrides }).verify(body);
  } finally {
    await waitOnExecutionContext(ctx);
  }
}

describe("the verify entrypoint when the key's object or D1 fails", () => {
  it("fail-closed: rejects with rate_limiter_unavailable; fail-open: a verdict from D1 with rateLimit null", async () => {
    const { limited, revoked } = await keysOfAllKinds();
    const down = objectDown({ kind: "throw" });
    for (const key of [limited, revoked])
      await expect(verifyEntrypoint(down, { key: key.key })).rejects.toThrow(/^rate_limiter_unavailable: /);
    expect(await verifyEntrypoint({ ...down, ...OPEN }, { key: limited.key })).toMatchObject({ valid: true, rateLimit: null });
    expect(await verifyEntrypoint({ ...down, ...OPEN }, { key: revoked.key })).toEqual({ valid: false, code: "key_revoked" });
    expect(await verifyEntrypoint({}, { key: limited.key })).toMatchObject({ rateLimit: { remaining: 4 } });
  });

  it("rejects with database_unavailable, in either mode, when D1 stalls for a key this isolate has not looked up", async () => {
    const { limited } = await keysOfAllKinds();
    for (const mode of [{}, OPEN]) {
      const stalled = { DB: faultyDatabase(env.DB, { kind: "stall" }), D1_TIMEOUT_MS: "100", ...mode };
      await expect(verifyEntrypoint(stalled, { key: limited.key })).rejects.toThrow(/^database_unavailable: /);
    }
  });

  it("never hands the calling Worker a query, its parameters or the key's hash when D1 fails", async () => {
    const { limited } = await keysOfAllKinds();
    const failing = { DB: faultyDatabase(env.DB, { kind: "throw", error: D1_ERROR() }) };
    const error = await verifyEntrypoint(failing, { key: limited.key }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(Error);
    const message = String(error);
    expect(message).toMatch(/^Error: (internal_error|database_unavailable): /);
    expect(message).not.toMatch(/select|params|Failed query|[0-9a-f]{64}/i);
  });
});

describe("a request its handler refuses 403 after the key spent, when the refund fails", () => {
  /** A member's key (5 a minute) in an account where members may not create keys: its handler answers 403. */
  async function refusedByHandler(refund: Fault): Promise<string> {
    const { key } = await provision();
    const member = await memberWithKey(key.key);
    const limited = await createKey(key.key, { ownerId: member.user.id, name: "limited", rateLimit: { limit: 5, windowSeconds: 60 } });
    const broken = { KEYS: faultyObjects(env.KEYS, { refund }), RATE_LIMIT_TIMEOUT_MS: "100" };
    const res = await callWith(broken, "/v1/api-keys", { key: limited.key, body: { name: "not allowed" } });
    await expectProblem(res, 403, "insufficient_role");
    return limited.key;
  }
  const remaining = async (key: string) => (await call("/v1/whoami", { key })).headers.get("X-RateLimit-Remaining");

  it("gives the request back all the same when the first refund call fails", async () => {
    const key = await refusedByHandler({ kind: "throw", times: 1 });
    expect(await remaining(key)).toBe("4");
  });

  it("gives it back once when the first refund call lands but answers late", async () => {
    const key = await refusedByHandler({ kind: "late-answer", ms: 300, times: 1 });
    expect(await remaining(key)).toBe("4");
  });

  it("gives it back once when the first refund call arrives after its deadline", async () => {
    const key = await refusedByHandler({ kind: "late-call", ms: 300, times: 1 });
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await remaining(key)).toBe("4");
  });
});
