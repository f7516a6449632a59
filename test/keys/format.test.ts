import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { hashKey } from "../../src/core/ids";
import { BASE62, checksum, crc32, generateKey, keyPattern, readKey } from "../../src/core/key-format";
import { KeygateVerifier } from "../../src/verifier";
import { type Fault, faultyDatabase, faultyObjects } from "../faults";
import { UPSTREAM } from "../gateway/table";
import { call, callWith, createKey, expectProblem, OPERATOR_TOKEN, ORIGIN, provision, rows, through, VERIFY_TOKEN } from "../helpers";

const NS = "kg";
const whole = (source: string) => new RegExp(`^${source}$`);
const CHECKSUMMED = whole(keyPattern("checksummed", { namespace: NS }));
const PLAIN = whole(keyPattern("plain"));

/** The same key with the character at `i` replaced by the next one of its alphabet. */
function retyped(key: string, i: number): string {
  const alphabet = /[0-9a-f]/.test(key[i] as string) && PLAIN.test(key) ? "0123456789abcdef" : BASE62;
  const next = alphabet[(alphabet.indexOf(key[i] as string) + 1) % alphabet.length] as string;
  return key.slice(0, i) + next + key.slice(i + 1);
}

describe("the plain format", () => {
  it("is the prefix, an underscore and 64 lowercase hex characters, unique over many draws", () => {
    const keys = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const key = generateKey("plain", "rm", NS);
      expect(key).toMatch(/^rm_[0-9a-f]{64}$/);
      expect(key).toMatch(whole(keyPattern("plain", { prefix: "rm" })));
      // "rm_" + 64 hex = 67 characters (Robotomail documents 68, which its own format cannot produce).
      expect(key).toHaveLength(67);
      keys.add(key);
    }
    expect(keys.size).toBe(10_000);
  });

  it("uses every hex digit about equally often: 256 random bits, not a biased encoding", () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 2_000; i++) for (const ch of generateKey("plain", "sk", NS).slice(3)) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect(counts.size).toBe(16);
    // 128,000 digits: each expected 8,000 times; 5% tolerance is far beyond chance for a uniform source.
    for (const n of counts.values()) expect(Math.abs(n - 8_000)).toBeLessThan(400);
  });

  it("is read as a key only in its exact shape, whatever the namespace", () => {
    expect(readKey(`rpakey_${"ab12".repeat(16)}`, NS)).toEqual({ format: "plain", prefix: "rpakey", start: "ab12ab12" });
    // An account whose prefix is the namespace keeps its plain keys: they are not mistaken for checksummed ones.
    expect(readKey(`kg_${"0".repeat(64)}`, NS)).toEqual({ format: "plain", prefix: "kg", start: "00000000" });
    for (const bad of [
      "",
      "sk_",
      `sk_${"a".repeat(63)}`,
      `sk_${"a".repeat(65)}`,
      `SK_${"a".repeat(64)}`,
      `sk_${"A".repeat(64)}`,
      `s_${"a".repeat(64)}`,
      `1k_${"a".repeat(64)}`,
      `sk-${"a".repeat(64)}`,
      ` sk_${"a".repeat(64)}`,
    ]) {
      expect(readKey(bad, NS), bad).toBeNull();
    }
  });

  it("hashes with SHA-256 over the whole key", async () => {
    expect(await hashKey("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});

describe("the checksummed format", () => {
  it("is <namespace>_<prefix>_, 43 random base62 characters and their 6-character CRC32, unique over many draws", () => {
    const keys = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const key = generateKey("checksummed", "sk", NS);
      expect(key).toMatch(/^kg_sk_[0-9A-Za-z]{49}$/);
      expect(key).toMatch(CHECKSUMMED);
      expect(key).toMatch(whole(keyPattern("checksummed", { namespace: NS, prefix: "sk" })));
      expect(key.slice(-6)).toBe(checksum(key.slice(0, -6)));
      expect(readKey(key, NS)).toEqual({ format: "checksummed", prefix: "kg_sk", start: key.slice(6, 14) });
      keys.add(key);
    }
    expect(keys.size).toBe(10_000);
  });

  it("draws every base62 character of the random part equally often: 43 × log2(62) ≥ 256 bits", () => {
    expect(43 * Math.log2(62)).toBeGreaterThanOrEqual(256);
    const counts = new Map<string, number>();
    for (let i = 0; i < 3_000; i++)
      for (const ch of generateKey("checksummed", "sk", NS).slice(6, -6)) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect(counts.size).toBe(62);
    // 129,000 characters: each expected about 2,081 times; a skewed encoding (bytes taken mod 62) would give the first
    // eight characters a quarter more, far past this tolerance.
    for (const n of counts.values()) expect(Math.abs(n - 129_000 / 62)).toBeLessThan(200);
  });

  it("computes CRC-32 as zlib does, and writes it as six base62 digits, zero-padded", () => {
    // The standard check value of CRC-32 (IEEE): "123456789" -> 0xCBF43926.
    expect(crc32(new TextEncoder().encode("123456789"))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array())).toBe(0);
    // 0xCBF43926 = 3421780262 in base62 (0-9, A-Z, a-z), as Python's zlib.crc32 and this alphabet give it.
    expect(checksum("123456789")).toBe("3jZRME");
    // A small value keeps its width: CRC-32 of "" is 0.
    expect(checksum("")).toBe("000000");
  });

  it("refuses, unread, every one-character change and every swap of two neighbours", () => {
    const key = generateKey("checksummed", "sk", NS);
    for (let i = 6; i < key.length; i++) {
      for (const ch of BASE62) {
        if (ch === key[i]) continue;
        const changed = key.slice(0, i) + ch + key.slice(i + 1);
        expect(readKey(changed, NS), changed).toBe("mistyped");
      }
      if (i + 1 < key.length && key[i] !== key[i + 1]) {
        const swapped = key.slice(0, i) + key[i + 1] + key[i] + key.slice(i + 2);
        expect(readKey(swapped, NS), swapped).toBe("mistyped");
      }
    }
    // Truncated, extended, or anything else that starts with the namespace claims the format and is refused unread.
    for (const bad of [key.slice(0, -1), `${key}0`, "kg_", "kg_sk_", "kg_nope", key.replace("kg_sk_", "kg_xx_")]) {
      expect(readKey(bad, NS), bad).toBe("mistyped");
    }
  });

  it("reads a key of another namespace by its own checksum: keys outlive a change of KEY_PREFIX_NAMESPACE", () => {
    const old = generateKey("checksummed", "sk", "acme");
    expect(readKey(old, NS)).toEqual({ format: "checksummed", prefix: "acme_sk", start: old.slice(8, 16) });
    expect(readKey(retyped(old, old.length - 10), NS)).toBe("mistyped");
  });
});

/** A new account of `keyFormat` (the default when absent) and its admin's key. */
async function account(keyFormat?: "checksummed" | "plain") {
  return provision(keyFormat === undefined ? {} : { keyFormat });
}

describe("an account's key format", () => {
  it("is checksummed for a new account, shown in reads, with a prefix and start the key begins with", async () => {
    const p = await provision({ keyPrefix: "rbtk" });
    expect(p.account).toMatchObject({ keyFormat: "checksummed" });
    expect(p.key.key).toMatch(/^kg_rbtk_[0-9A-Za-z]{49}$/);
    expect(p.key).toMatchObject({ prefix: "kg_rbtk", start: p.key.key.slice(8, 16) });
    expect(p.key.key.startsWith(`${p.key.prefix}_${p.key.start}`)).toBe(true);
    const listed = await (await call("/v1/api-keys", { key: p.key.key })).json<{ data: { prefix: string; start: string }[] }>();
    expect(listed.data[0]).toMatchObject({ prefix: "kg_rbtk", start: p.key.start });
    expect(JSON.stringify(listed)).not.toContain(p.key.key);
    expect(await (await call("/v1/account", { key: p.key.key })).json()).toMatchObject({ keyFormat: "checksummed" });
    // Stored as its SHA-256 only, as plain keys are.
    const [stored] = await rows<{ hash: string }>("SELECT hash FROM api_keys WHERE id = ?", p.key.id);
    expect(stored?.hash).toBe(await hashKey(p.key.key));
    expect((await call("/v1/whoami", { key: p.key.key })).status).toBe(200);
  });

  it("stays plain for an account that chooses it: its first key, its new keys and its rotations", async () => {
    const p = await account("plain");
    expect(p.account).toMatchObject({ keyFormat: "plain" });
    expect(p.key.key).toMatch(/^sk_[0-9a-f]{64}$/);
    expect(p.key).toMatchObject({ prefix: "sk", start: p.key.key.slice(3, 11) });
    const made = await createKey(p.key.key);
    expect(made.key).toMatch(/^sk_[0-9a-f]{64}$/);
    const rotated = await call(`/v1/api-keys/${made.id}/rotate`, { key: p.key.key, body: {} });
    expect(rotated.status).toBe(201);
    expect((await rotated.json<{ key: string }>()).key).toMatch(/^sk_[0-9a-f]{64}$/);
  });

  it("refuses a key format that is neither, storing nothing", async () => {
    const res = await call("/v1/accounts", {
      headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` },
      body: { name: "Odd", admin: { email: "odd@example.com" }, keyFormat: "base64" },
    });
    const body = await expectProblem(res, 400, "invalid_request");
    expect(JSON.stringify(body)).toContain("keyFormat");
    expect(await rows("SELECT id FROM users WHERE email = 'odd@example.com'")).toEqual([]);
  });

  it("changes for keys issued afterwards only: the keys issued before keep working, and rotation takes the new format", async () => {
    const p = await account("plain");
    const plainKey = await createKey(p.key.key, { name: "plain one" });
    const changed = await call("/v1/account", { method: "PATCH", key: p.key.key, body: { keyFormat: "checksummed" } });
    expect(changed.status).toBe(200);
    expect(await changed.json()).toMatchObject({ keyFormat: "checksummed" });
    const [audited] = await rows<{ action: string }>(
      "SELECT action FROM audit_events WHERE account_id = ? AND action = 'account.updated'",
      p.account.id,
    );
    expect(audited?.action).toBe("account.updated");

    // The plain keys issued before work as they did.
    for (const key of [p.key.key, plainKey.key]) expect((await call("/v1/whoami", { key })).status).toBe(200);
    const fresh = await createKey(p.key.key, { name: "checksummed one" });
    expect(fresh.key).toMatch(/^kg_sk_[0-9A-Za-z]{49}$/);
    expect((await call("/v1/whoami", { key: fresh.key })).status).toBe(200);
    // Rotating a plain key issues the account's format now.
    const rotated = await call(`/v1/api-keys/${plainKey.id}/rotate`, { key: p.key.key, body: {} });
    expect(rotated.status).toBe(201);
    const successor = await rotated.json<{ key: string; prefix: string }>();
    expect(successor.key).toMatch(/^kg_sk_[0-9A-Za-z]{49}$/);
    expect(successor.prefix).toBe("kg_sk");

    // And back: checksummed keys issued before keep working too.
    const back = await call("/v1/account", { method: "PATCH", key: p.key.key, body: { keyFormat: "plain" } });
    expect(await back.json()).toMatchObject({ keyFormat: "plain" });
    expect((await createKey(p.key.key)).key).toMatch(/^sk_[0-9a-f]{64}$/);
    for (const key of [fresh.key, successor.key, p.key.key]) expect((await call("/v1/whoami", { key })).status).toBe(200);
  });

  it("is the admins' to change: a member's PATCH is refused and changes nothing", async () => {
    const p = await account("plain");
    const memberRes = await call("/v1/users", { key: p.key.key, body: { email: `m-${crypto.randomUUID()}@example.com`, role: "member" } });
    const member = await memberRes.json<{ id: string }>();
    const memberKey = await createKey(p.key.key, { ownerId: member.id, name: "member key" });
    const res = await call("/v1/account", { method: "PATCH", key: memberKey.key, body: { keyFormat: "checksummed" } });
    await expectProblem(res, 403, "insufficient_role");
    const [row] = await rows<{ key_format: string }>("SELECT key_format FROM accounts WHERE id = ?", p.account.id);
    expect(row?.key_format).toBe("plain");
  });
});

/** Every method of every object of the namespace throws; `calls` counts the calls of any method. */
function allThrow<T extends Rpc.DurableObjectBranded | undefined>(namespace: DurableObjectNamespace<T>, calls: { n: number }) {
  const fault: Fault = { kind: "throw", error: new Error("no object may be called") };
  // The seam looks up each call's fault by its method's name: every lookup is a call.
  const faults = new Proxy({} as Record<string, Fault>, {
    get: () => {
      calls.n += 1;
      return fault;
    },
  });
  return faultyObjects(namespace, faults);
}

/** Bindings under which any D1 statement or object call fails, and what reached each. */
function nothingAnswers() {
  const statements: string[] = [];
  const DB = faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: no read may be made") }, (sql) => {
    statements.push(sql);
    return true;
  });
  const calls = { n: 0 };
  return {
    bindings: { DB, KEYS: allThrow(env.KEYS, calls), ACCOUNTS: allThrow(env.ACCOUNTS, calls), COUNTERS: allThrow(env.COUNTERS, calls) },
    /** The D1 statements made, and how many calls any object got. */
    reached: () => ({ statements, calls: calls.n }),
  };
}

const GATEWAY = { UPSTREAM_URL: UPSTREAM, GATEWAY_ROUTES: JSON.stringify([{ pattern: "/*", access: "full" }]), PUBLIC_ORIGIN: ORIGIN };

describe("a checksummed key with one character changed", () => {
  it("is 401 invalid_key on every path that takes a key, with no D1 read and no object call", async () => {
    const p = await account();
    const mistyped = retyped(p.key.key, 20);
    expect(readKey(mistyped, NS)).toBe("mistyped");
    const world = nothingAnswers();
    const { bindings } = world;

    for (const headers of [{ Authorization: `Bearer ${mistyped}` }, { "X-API-Key": mistyped }] as Record<string, string>[]) {
      const res = await callWith(bindings, "/v1/whoami", { headers });
      await expectProblem(res, 401, "invalid_key");
      expect(res.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');
    }
    // The deprecated query parameter, still before its sunset.
    const query = await callWith({ ...bindings, QUERY_TOKEN_SUNSET: "2999-01-01T00:00:00Z" }, `/v1/whoami?userApiToken=${mistyped}`);
    await expectProblem(query, 401, "invalid_key");
    expect(query.headers.get("Deprecation")).not.toBeNull();
    // The gateway: refused before the upstream.
    const gateway = await through({ ...GATEWAY, ...bindings }, "/anything", { key: mistyped });
    await expectProblem(gateway, 401, "invalid_key");
    expect(gateway.headers.get("X-Upstream")).toBeNull();
    // The verify API and the verify entrypoint a service binding reaches.
    const verified = await callWith(bindings, "/v1/keys/verify", {
      headers: { Authorization: `Bearer ${VERIFY_TOKEN}` },
      body: { key: mistyped },
    });
    expect(verified.status).toBe(200);
    expect(await verified.json()).toEqual({ valid: false, code: "invalid_key" });
    const ctx = createExecutionContext();
    const entry = await new KeygateVerifier(ctx, { ...env, ...bindings }).verify({ key: mistyped });
    await waitOnExecutionContext(ctx);
    expect(entry).toEqual({ valid: false, code: "invalid_key" });

    expect(world.reached()).toEqual({ statements: [], calls: 0 });
  });

  it("is refused unread through the service binding of another Worker too", async () => {
    const p = await account();
    const res = await env.CALLER.fetch("http://caller/", { method: "POST", body: JSON.stringify({ key: retyped(p.key.key, 30) }) });
    expect(await res.json()).toEqual({ valid: false, code: "invalid_key" });
    // The key itself is fine.
    const ok = await env.CALLER.fetch("http://caller/", { method: "POST", body: JSON.stringify({ key: p.key.key }) });
    expect(await ok.json()).toMatchObject({ valid: true, keyId: p.key.id });
  });

  it("costs no failure of the address's budget, while a well-formed unknown key is asked after and spends one, as before", async () => {
    const p = await account();
    const unknown = generateKey("checksummed", "sk", NS);
    const world = nothingAnswers();
    // A key with a right checksum is a claim only its object (which reads D1) can judge: with it down, 503, not a guess.
    await expectProblem(await callWith(world.bindings, "/v1/whoami", { key: unknown }), 503, "rate_limiter_unavailable");
    expect(world.reached().calls).toBeGreaterThan(0);
    // With everything up, it is an unknown key.
    await expectProblem(await call("/v1/whoami", { key: unknown }), 401, "invalid_key");

    // 30 failures a minute per address (IP_FAILURE_RATE_LIMIT): mistyped keys spend none of them...
    const ip = { "CF-Connecting-IP": "192.0.2.77" };
    for (let i = 0; i < 40; i++)
      await expectProblem(await call("/v1/whoami", { headers: { ...ip, "X-API-Key": retyped(p.key.key, 6 + i) } }), 401, "invalid_key");
    // ...while unknown keys do, and past the budget are 429.
    for (let i = 0; i < 30; i++)
      await expectProblem(
        await call("/v1/whoami", { headers: { ...ip, "X-API-Key": generateKey("checksummed", "sk", NS) } }),
        401,
        "invalid_key",
      );
    await expectProblem(await call("/v1/whoami", { headers: { ...ip, "X-API-Key": unknown } }), 429, "rate_limited");
  });
});

describe("KEY_PREFIX_NAMESPACE", () => {
  it("starts the checksummed keys issued under it; keys of the namespace before keep working", async () => {
    const before = await account();
    const ns = { KEY_PREFIX_NAMESPACE: "acme" };
    const made = await callWith(ns, "/v1/api-keys", { key: before.key.key, body: { name: "under acme" } });
    expect(made.status).toBe(201);
    const fresh = await made.json<{ key: string; prefix: string }>();
    expect(fresh.key).toMatch(/^acme_sk_[0-9A-Za-z]{49}$/);
    expect(fresh.prefix).toBe("acme_sk");
    // Both namespaces' keys, under either setting: each is read by its own checksum.
    for (const overrides of [ns, {}])
      for (const key of [before.key.key, fresh.key]) expect((await callWith(overrides, "/v1/whoami", { key })).status).toBe(200);
    // Under the new namespace, anything else starting with it is refused unread.
    await expectProblem(await callWith(ns, "/v1/whoami", { key: "acme_sk_tooShort" }), 401, "invalid_key");
    await expectProblem(await callWith({}, "/v1/whoami", { key: "acme_sk_tooShort" }), 401, "malformed_credentials");
  });

  it("answers 500 configuration_error on the paths that take a key when malformed", async () => {
    const p = await account();
    await expectProblem(
      await callWith({ KEY_PREFIX_NAMESPACE: "Not Valid" }, "/v1/whoami", { key: p.key.key }),
      500,
      "configuration_error",
    );
  });
});
