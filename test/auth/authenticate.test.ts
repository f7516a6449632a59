import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { faultyDatabase, faultyObjects, objectDatabase } from "../faults";
import { call, callWith, createKey, expectProblem, provision, rows } from "../helpers";
import { lastUseSent } from "../usage/seed";

const BEFORE_SUNSET = { QUERY_TOKEN_SUNSET: "2999-01-01T00:00:00Z" };

async function lastUse(id: string) {
  const [row] = await rows<{ last_used_at: string | null; last_auth_method: string | null }>(
    "SELECT last_used_at, last_auth_method FROM api_keys WHERE id = ?",
    id,
  );
  return row;
}

describe("credential extraction", () => {
  it("accepts Authorization: Bearer and X-API-Key, and records which was used", async () => {
    const { key } = await provision();
    const a = await createKey(key.key);
    const b = await createKey(key.key);
    expect((await callWith({}, "/v1/whoami", { headers: { Authorization: `bearer ${a.key}` } })).status).toBe(200);
    expect((await callWith({}, "/v1/whoami", { headers: { "X-API-Key": b.key } })).status).toBe(200);
    await Promise.all([lastUseSent(a.id), lastUseSent(b.id)]);
    expect(await lastUse(a.id)).toMatchObject({ last_auth_method: "bearer" });
    expect(await lastUse(b.id)).toMatchObject({ last_auth_method: "header" });
  });

  it("accepts both headers when they agree and refuses them when they differ", async () => {
    const { key } = await provision();
    const other = await createKey(key.key);
    expect((await call("/v1/whoami", { headers: { Authorization: `Bearer ${key.key}`, "X-API-Key": key.key } })).status).toBe(200);
    const res = await call("/v1/whoami", { headers: { Authorization: `Bearer ${key.key}`, "X-API-Key": other.key } });
    await expectProblem(res, 400, "conflicting_credentials");
  });

  it("refuses a malformed credential before any D1 read", async () => {
    const broken = new Proxy(env.DB, {
      get() {
        throw new Error("D1 must not be touched");
      },
    });
    const malformed: Record<string, string>[] = [
      { "X-API-Key": "not-a-key" },
      { Authorization: "Bearer sk_short" },
      { Authorization: "Token abc" },
    ];
    for (const headers of malformed) {
      const res = await callWith({ DB: broken }, "/v1/whoami", { headers });
      await expectProblem(res, 401, "malformed_credentials");
    }
  });
});

describe("deprecated query parameter userApiToken", () => {
  it("works before the sunset, marks the response deprecated and records the method", async () => {
    const { key } = await provision();
    const res = await callWith(BEFORE_SUNSET, `/v1/whoami?userApiToken=${key.key}&cmd=ListActiveProject`);
    expect(res.status).toBe(200);
    expect(res.headers.get("Sunset")).toBe("Tue, 01 Jan 2999 00:00:00 GMT");
    expect(res.headers.get("Deprecation")).toBe(`@${Date.parse("2026-01-01T00:00:00Z") / 1000}`);
    expect(res.headers.get("Link")).toMatch(/^<https:\/\/.+>; rel="deprecation"/);
    await lastUseSent(key.id);
    expect(await lastUse(key.id)).toMatchObject({ last_auth_method: "query" });
    // Deprecation headers also mark refusals that happen after authentication.
    const forbidden = await callWith(BEFORE_SUNSET, `/v1/users?userApiToken=${(await createKey(key.key, { mailboxIds: ["m1"] })).key}`);
    expect(forbidden.status).toBe(403);
    expect(forbidden.headers.get("Sunset")).not.toBeNull();
  });

  it("is discontinued from the sunset instant on (default 2026-07-01), pointing to the header", async () => {
    const { key } = await provision();
    for (const res of [
      await call(`/v1/whoami?userApiToken=${key.key}`),
      await callWith({ QUERY_TOKEN_SUNSET: new Date(Date.now() - 1000).toISOString() }, `/v1/whoami?userApiToken=${key.key}`),
    ]) {
      const problem = await expectProblem(res, 401, "query_token_discontinued");
      expect(problem.detail).toContain("X-API-Key");
      expect(problem.detail).not.toContain(key.key);
      expect(res.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');
    }
  });

  it("never writes the token to a log line", async () => {
    const { key } = await provision();
    const lines: unknown[] = [];
    const original = { log: console.log, error: console.error, warn: console.warn, info: console.info };
    for (const level of ["log", "error", "warn", "info"] as const) console[level] = (...args: unknown[]) => lines.push(args);
    try {
      await callWith(BEFORE_SUNSET, `/v1/whoami?userApiToken=${key.key}`);
      await callWith({}, `/v1/whoami?userApiToken=${key.key}`);
      await callWith({ DB: undefined as unknown as D1Database }, `/v1/whoami?userApiToken=${key.key}`);
    } finally {
      Object.assign(console, original);
    }
    expect(JSON.stringify(lines)).not.toContain(key.key.slice(3));
  });

  it("never logs a key hash or a query's parameters when the database fails", async () => {
    const { key } = await provision();
    const fresh = await createKey(key.key);
    const hash = (await rows<{ hash: string }>("SELECT hash FROM api_keys WHERE id = ?", fresh.id))[0]?.hash as string;
    // drizzle wraps a database error in one whose message is the query and its parameters: the key hash among them.
    // Open mode with the key's object down: the worker judges the key in D1, by its hash, and that read fails.
    const failing = faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: network connection lost") }, (sql) =>
      sql.includes('"hash" = ?'),
    );
    const objectDown = faultyObjects(env.KEYS, { authorize: { kind: "throw", error: new Error("Durable Object reset") } });
    let res: Response | undefined;
    const lines = await logged(async () => {
      res = await callWith({ DB: failing, KEYS: objectDown, RATE_LIMIT_FAILURE_MODE: "open" }, "/v1/whoami", { key: fresh.key });
    });
    await expectProblem(res as Response, 503, "database_unavailable");
    expect(lines).toContain("database_error");
    expect(lines).toContain("D1_ERROR: network connection lost");
    expect(lines).not.toContain(hash);
    expect(lines).not.toContain(fresh.key.slice(fresh.prefix.length + 1));
    expect(lines).not.toMatch(/params|select|from/i);
  });
});

describe("the key's counter when its database fails", () => {
  it("answers 503 and logs neither the query nor its parameters", async () => {
    const { key } = await provision();
    const k = await createKey(key.key, { name: "l" });
    // The object's own D1 handle, replaced through the shared fault seam: its next read of the key fails.
    await objectDatabase(env.KEYS.getByName(`key:${k.id}`), () =>
      faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: Network connection lost.") }),
    );
    let res: Response | undefined;
    const lines = await logged(async () => {
      res = await call("/v1/whoami", { key: k.key });
    });
    await expectProblem(res as Response, 503, "rate_limiter_unavailable");
    expect(lines).toContain("Network connection lost");
    expect(lines).not.toMatch(/select|params|Failed query/i);
    expect(lines).not.toContain(`${k.id.slice(4)}",1`);
  });
});

/** Everything written to the console while `run` runs, as one string. */
async function logged(run: () => Promise<unknown>): Promise<string> {
  const lines: unknown[] = [];
  const original = { log: console.log, error: console.error, warn: console.warn, info: console.info };
  for (const level of ["log", "error", "warn", "info"] as const) console[level] = (...args: unknown[]) => lines.push(args);
  try {
    await run();
  } finally {
    Object.assign(console, original);
  }
  return JSON.stringify(lines);
}

describe("https only", () => {
  it("refuses plain http with 403 unless ALLOW_HTTP=true", async () => {
    const { key } = await provision();
    await expectProblem(await call("http://keygate.test/v1/whoami", { key: key.key }), 403, "https_required");
    await expectProblem(await call("http://keygate.test/health"), 403, "https_required");
    expect((await callWith({ ALLOW_HTTP: "true" }, "http://keygate.test/v1/whoami", { key: key.key })).status).toBe(200);
  });
});

describe("lastUsedAt", () => {
  it("is kept at most once a minute per key in its object, and reaches D1 with its usage through the queue", async () => {
    const { key } = await provision();
    const k = await createKey(key.key);
    const stub = env.KEYS.getByName(`key:${k.id}`);
    expect(await lastUse(k.id)).toEqual({ last_used_at: null, last_auth_method: null });
    let now = Date.now();
    await runInDurableObject(stub, (instance) => {
      instance.clock = () => now;
    });
    /** Runs the object's alarm (set by the request, after its answer), which sends the use on the usage queue. */
    const send = () => vi.waitFor(async () => expect(await runDurableObjectAlarm(stub)).toBe(true));
    const until = { timeout: 10_000, interval: 100 };
    await call("/v1/whoami", { key: k.key });
    // Nothing is written per request: D1 has it once the alarm sent it.
    expect(await lastUse(k.id)).toEqual({ last_used_at: null, last_auth_method: null });
    await send();
    const first = await vi.waitFor(async () => {
      const row = await lastUse(k.id);
      expect(row?.last_used_at).toBe(new Date(now).toISOString());
      return row;
    }, until);
    const firstUse = now;
    now += 59_000;
    for (let i = 0; i < 5; i++) await call("/v1/whoami", { key: k.key });
    // Nothing to send: its last recorded use is still the first.
    await runInDurableObject(stub, (instance) => {
      expect(instance.lastUseRecorded).toBe(firstUse);
    });
    expect(await lastUse(k.id)).toEqual(first);

    // A minute after the stored use, the next request records a new one; so does a change of method.
    now += 1_001;
    await call("/v1/whoami", { key: k.key });
    await send();
    await vi.waitFor(async () => expect((await lastUse(k.id))?.last_used_at).toBe(new Date(now).toISOString()), until);
    await call("/v1/whoami", { headers: { "X-API-Key": k.key } });
    await send();
    await vi.waitFor(async () => expect((await lastUse(k.id))?.last_auth_method).toBe("header"), until);
  });
});
