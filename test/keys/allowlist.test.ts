import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { Holdings, holdings } from "../../src/counters/held";
import { authorizeKey } from "../../src/keys/authorize";
import { CHANGE_IN_FORCE_MS } from "../../src/keys/reload";
import { makeDeps } from "../../src/platform/deps";
import { KeygateVerifier } from "../../src/verifier";
import { faultyObjects } from "../faults";
import { GATEWAY } from "../gateway/table";
import { call, callWith, createKey, createUser, expectProblem, ORIGIN, provision, rows, through, VERIFY_TOKEN } from "../helpers";

// A key's allowed addresses: judged on CF-Connecting-IP only, in the key's object with its record (or an isolate's
// lease of it), refused with 403 ip_not_allowed before anything is spent, and in force on the next request after a
// change, as a revocation is.

/** GET /v1/whoami with `key` from `ip` (null: no CF-Connecting-IP at all), and any other headers a client sends. */
function whoami(key: string, ip: string | null, headers: Record<string, string> = {}): Promise<Response> {
  if (ip !== null) return call("/v1/whoami", { key, headers: { "CF-Connecting-IP": ip, ...headers } });
  return through({}, new Request(`${ORIGIN}/v1/whoami`, { headers: { Authorization: `Bearer ${key}`, ...headers } }));
}

const patchKey = (admin: string, id: string, body: unknown, ip = "192.0.2.10") =>
  call(`/v1/api-keys/${id}`, { method: "PATCH", key: admin, body, headers: { "CF-Connecting-IP": ip } });
const patchAccount = (admin: string, body: unknown) => call("/v1/account", { method: "PATCH", key: admin, body });
const verify = (body: Record<string, unknown>) => call("/v1/keys/verify", { headers: { Authorization: `Bearer ${VERIFY_TOKEN}` }, body });

/** A key's `allowedIps` as an answer shows it. */
const ipsOf = (key: object) => (key as { allowedIps: string[] | null }).allowedIps;

async function refused(res: Response): Promise<void> {
  const body = await expectProblem(res, 403, "ip_not_allowed");
  expect(body.detail).toContain("CF-Connecting-IP");
  // Nothing was spent, so no limit is shown.
  expect(res.headers.get("X-RateLimit-Remaining")).toBeNull();
}

describe("a key's allowedIps", () => {
  it("admits IPv4 addresses inside its blocks only, and nothing without CF-Connecting-IP", async () => {
    const { key: admin } = await provision();
    const key = await createKey(admin.key, { allowedIps: ["198.51.100.0/24", "203.0.113.7"] });
    expect(ipsOf(key)).toEqual(["198.51.100.0/24", "203.0.113.7/32"]);
    for (const ip of ["198.51.100.0", "198.51.100.255", "203.0.113.7", "::ffff:203.0.113.7"])
      expect((await whoami(key.key, ip)).status, ip).toBe(200);
    for (const ip of ["198.51.101.0", "198.51.99.255", "203.0.113.8", "2001:db8::1", "not-an-ip", ""])
      await refused(await whoami(key.key, ip));
    await refused(await whoami(key.key, null));
    // Another key of the account, with no list and none on the account, is used from anywhere.
    expect((await whoami(admin.key, null)).status).toBe(200);
  });

  it("admits IPv6 addresses inside its blocks, in any spelling", async () => {
    const { key: admin } = await provision();
    const key = await createKey(admin.key, { allowedIps: ["2001:DB8:0:0::/48"] });
    expect(ipsOf(key)).toEqual(["2001:db8::/48"]);
    expect((await whoami(key.key, "2001:db8:0:ffff:ffff:ffff:ffff:ffff")).status).toBe(200);
    expect((await whoami(key.key, "2001:0db8:0000::1")).status).toBe(200);
    await refused(await whoami(key.key, "2001:db8:1::"));
    await refused(await whoami(key.key, "203.0.113.7"));
  });

  it("ignores X-Forwarded-For and every other header a client writes", async () => {
    const { key: admin } = await provision();
    const key = await createKey(admin.key, { allowedIps: ["203.0.113.0/24"] });
    const claims = {
      "X-Forwarded-For": "203.0.113.5",
      "X-Real-IP": "203.0.113.5",
      "True-Client-IP": "203.0.113.5",
      Forwarded: "for=203.0.113.5",
    };
    await refused(await whoami(key.key, "198.51.100.1", claims));
    await refused(await whoami(key.key, null, claims));
    expect((await whoami(key.key, "203.0.113.5", { "X-Forwarded-For": "198.51.100.1" })).status).toBe(200);
  });

  it("spends nothing when it refuses: no limit, no credits, no use recorded", async () => {
    const { key: admin } = await provision();
    const key = await createKey(admin.key, {
      allowedIps: ["203.0.113.0/24"],
      rateLimit: { limit: 5, windowSeconds: 60 },
      credits: { remaining: 10 },
    });
    for (let i = 0; i < 7; i++) await refused(await whoami(key.key, "198.51.100.1"));
    for (let i = 0; i < 3; i++)
      expect(await (await verify({ key: key.key, credits: 2, clientIp: "198.51.100.1" })).json()).toEqual({
        valid: false,
        code: "ip_not_allowed",
      });
    // Far past the limit had it counted; instead the first admitted request finds it whole.
    const first = await whoami(key.key, "203.0.113.9");
    expect(first.status).toBe(200);
    expect(first.headers.get("X-RateLimit-Remaining")).toBe("4");
    const spent = await (await verify({ key: key.key, credits: 2, clientIp: "203.0.113.9" })).json();
    expect(spent).toMatchObject({ valid: true, credits: { remaining: 8 }, rateLimit: { remaining: 3 } });
  });

  it("is judged at the gateway on CF-Connecting-IP, before anything is spent or forwarded", async () => {
    const routes = [
      { pattern: "/v1/messages/*", credits: 3 },
      { pattern: "/*", access: "full" },
    ];
    const gw = (key: string, ip: string, headers: Record<string, string> = {}) =>
      through({ ...GATEWAY, GATEWAY_ROUTES: JSON.stringify(routes) }, "/v1/messages/send", {
        key,
        headers: { "CF-Connecting-IP": ip, ...headers },
      });
    const { key: admin } = await provision();
    const key = await createKey(admin.key, {
      allowedIps: ["2001:db8::/32"],
      rateLimit: { limit: 10, windowSeconds: 60 },
      credits: { remaining: 100 },
    });
    const outside = await gw(key.key, "198.51.100.1", { "X-Forwarded-For": "2001:db8::1" });
    expect(outside.headers.get("X-Upstream")).toBeNull();
    await refused(outside);
    expect(outside.headers.get("X-Credits-Remaining")).toBeNull();
    const inside = await gw(key.key, "2001:db8::1");
    expect(inside.status).toBe(200);
    expect(inside.headers.get("X-Upstream")).toBe("yes");
    expect(inside.headers.get("X-RateLimit-Remaining")).toBe("9");
    expect(inside.headers.get("X-Credits-Remaining")).toBe("97");
  });

  it("is judged in D1 too when the key's object is down and the deployment fails open", async () => {
    const { key: admin } = await provision();
    const key = await createKey(admin.key, { allowedIps: ["203.0.113.0/24"] });
    const open = { KEYS: faultyObjects(env.KEYS, { authorize: { kind: "throw" } }), RATE_LIMIT_FAILURE_MODE: "open" };
    const from = (ip: string) =>
      callWith(open, "/v1/whoami", { key: key.key, headers: { "CF-Connecting-IP": ip, "X-Forwarded-For": "203.0.113.1" } });
    await refused(await from("198.51.100.1"));
    const inside = await from("203.0.113.1");
    expect(inside.status).toBe(200);
    expect(inside.headers.get("X-RateLimit-Status")).toBe("unavailable");
    expect(open.KEYS.calls("authorize")).toBeGreaterThan(0);
  });

  it("is validated: each bad block by its index, at most 100, never empty; null clears it", async () => {
    const { key: admin } = await provision();
    const bad = await call("/v1/api-keys", {
      key: admin.key,
      body: { name: "x", allowedIps: ["10.0.0.0/8", "10.1.2.3/8", "2001:db8::/129", "not-an-ip"] },
    });
    const body = await expectProblem(bad, 400, "invalid_request");
    expect(body.errors).toEqual([
      { field: "allowedIps[1]", message: "has bits set past its /8 prefix; the block is 10.0.0.0/8" },
      { field: "allowedIps[2]", message: "must have a prefix length from 0 to 128" },
      { field: "allowedIps[3]", message: "must be an IPv4 or IPv6 address or CIDR block, such as 203.0.113.0/24 or 2001:db8::/32" },
    ]);
    const notText = await call("/v1/api-keys", { key: admin.key, body: { name: "x", allowedIps: ["10.0.0.0/8", 7] } });
    expect((await expectProblem(notText, 400, "invalid_request")).errors).toEqual([
      { field: "allowedIps[1]", message: "must be a string" },
    ]);
    const many = Array.from({ length: 101 }, (_, i) => `10.0.${i}.0/24`);
    const tooMany = await call("/v1/api-keys", { key: admin.key, body: { name: "x", allowedIps: many } });
    expect((await expectProblem(tooMany, 400, "invalid_request")).errors).toEqual([
      { field: "allowedIps", message: "must have at most 100 items" },
    ]);
    const empty = await call("/v1/api-keys", { key: admin.key, body: { name: "x", allowedIps: [] } });
    expect((await expectProblem(empty, 400, "invalid_request")).errors).toEqual([
      { field: "allowedIps", message: "must not be empty; send null to allow every address" },
    ]);
    const mapped = await patchAccount(admin.key, { allowedIps: ["::ffff:10.0.0.0/104"] });
    expect((await expectProblem(mapped, 400, "invalid_request")).errors).toEqual([
      { field: "allowedIps[0]", message: "is an IPv4-mapped IPv6 block; write it as IPv4" },
    ]);
    expect(
      await rows("SELECT id FROM api_keys WHERE account_id = (SELECT account_id FROM api_keys WHERE id = ?) AND name = 'x'", admin.id),
    ).toEqual([]);

    // 100 blocks are fine, duplicates kept once; reads show what is stored.
    const key = await createKey(admin.key, { allowedIps: [...many.slice(0, 99), "10.0.0.0/24"] });
    expect(ipsOf(key)).toHaveLength(99);
    expect(await rows("SELECT allowed_ips FROM api_keys WHERE id = ?", key.id)).toEqual([
      { allowed_ips: JSON.stringify(many.slice(0, 99)) },
    ]);
    const cleared = await patchKey(admin.key, key.id, { allowedIps: null });
    expect(await cleared.json()).toMatchObject({ allowedIps: null });
    expect(await (await call(`/v1/api-keys/${key.id}`, { key: admin.key })).json()).toMatchObject({ allowedIps: null });
    expect((await whoami(key.key, "198.51.100.1")).status).toBe(200);
  });

  it("comes along in a rotation, unless the rotation sends its own or null", async () => {
    const { key: admin } = await provision();
    const old = await createKey(admin.key, { allowedIps: ["203.0.113.0/24"] });
    const rotate = (id: string, body: unknown) => call(`/v1/api-keys/${id}/rotate`, { key: admin.key, body });
    const kept = await (await rotate(old.id, {})).json<{ id: string; key: string; allowedIps: string[] | null }>();
    expect(kept.allowedIps).toEqual(["203.0.113.0/24"]);
    await refused(await whoami(kept.key, "198.51.100.1"));
    const own = await (await rotate(kept.id, { allowedIps: ["198.51.100.0/24"] })).json<{
      id: string;
      key: string;
      allowedIps: string[];
    }>();
    expect(own.allowedIps).toEqual(["198.51.100.0/24"]);
    expect((await whoami(own.key, "198.51.100.1")).status).toBe(200);
    const none = await (await rotate(own.id, { allowedIps: null })).json<{ key: string; allowedIps: null }>();
    expect(none.allowedIps).toBeNull();
    expect((await whoami(none.key, "192.0.2.1")).status).toBe(200);
  });
});

describe("the verify API's clientIp", () => {
  it("is judged as CF-Connecting-IP is: missing or outside, ip_not_allowed and nothing spent", async () => {
    const { key: admin } = await provision();
    const key = await createKey(admin.key, { allowedIps: ["203.0.113.0/24", "2001:db8::/32"], rateLimit: { limit: 5, windowSeconds: 60 } });
    for (const clientIp of [undefined, "198.51.100.1", "2001:db9::1"]) {
      const res = await verify({ key: key.key, ...(clientIp === undefined ? {} : { clientIp }) });
      expect(await res.json(), String(clientIp)).toEqual({ valid: false, code: "ip_not_allowed" });
    }
    // The verify call's own client address is the backend's, never the key's user's.
    const fromBackend = await call("/v1/keys/verify", {
      headers: { Authorization: `Bearer ${VERIFY_TOKEN}`, "CF-Connecting-IP": "203.0.113.1" },
      body: { key: key.key },
    });
    expect(await fromBackend.json()).toEqual({ valid: false, code: "ip_not_allowed" });
    expect(await (await verify({ key: key.key, clientIp: "203.0.113.1" })).json()).toMatchObject({
      valid: true,
      rateLimit: { remaining: 4 },
    });
    expect(await (await verify({ key: key.key, clientIp: "2001:db8::5" })).json()).toMatchObject({
      valid: true,
      rateLimit: { remaining: 3 },
    });
    // A key without a list needs no clientIp.
    expect(await (await verify({ key: admin.key })).json()).toMatchObject({ valid: true });
  });

  it("must be an address: anything else is 400 over HTTP and an invalid_request error through the binding", async () => {
    const { key: admin } = await provision();
    for (const clientIp of ["203.0.113.0/24", "not-an-ip", "fe80::1%eth0", ""]) {
      const res = await verify({ key: admin.key, clientIp });
      expect((await expectProblem(res, 400, "invalid_request")).errors, clientIp).toEqual([
        { field: "clientIp", message: "must be an IPv4 or IPv6 address" },
      ]);
    }
    const ctx = createExecutionContext();
    const verifier = new KeygateVerifier(ctx, env);
    await expect(verifier.verify({ key: admin.key, clientIp: "nope" })).rejects.toThrow(
      "invalid_request: clientIp must be an IPv4 or IPv6 address",
    );
    const key = await createKey(admin.key, { allowedIps: ["203.0.113.0/24"] });
    expect(await verifier.verify({ key: key.key })).toEqual({ valid: false, code: "ip_not_allowed" });
    expect(await verifier.verify({ key: key.key, clientIp: "198.51.100.1" })).toEqual({ valid: false, code: "ip_not_allowed" });
    expect(await verifier.verify({ key: key.key, clientIp: "203.0.113.200" })).toMatchObject({ valid: true, keyId: key.id });
    await waitOnExecutionContext(ctx);
  });
});

describe("a change of allowedIps", () => {
  it("that narrows a key's list refuses its very next request, a lease of this isolate's included", async () => {
    const { key: admin } = await provision();
    const key = await createKey(admin.key, { allowedIps: ["10.0.0.0/8"], rateLimit: { limit: 100_000, windowSeconds: 60 } });
    // Hot: this isolate holds a lease of it, from which its requests are judged with no call.
    for (let i = 0; holdings.available(`key:${key.id}`) === 0; i++) {
      expect((await whoami(key.key, "10.1.2.3")).status).toBe(200);
      expect(i).toBeLessThan(200);
    }
    const res = await patchKey(admin.key, key.id, { allowedIps: ["10.9.0.0/16"] });
    expect(await res.json()).toMatchObject({ allowedIps: ["10.9.0.0/16"] });
    await refused(await whoami(key.key, "10.1.2.3"));
    expect((await whoami(key.key, "10.9.8.7")).status).toBe(200);
    expect(await rows("SELECT action FROM audit_events WHERE target = ? AND action = 'key.updated'", key.id)).toEqual([
      { action: "key.updated" },
    ]);
  });

  it("is judged by a lease an isolate holds, with no call", async () => {
    const { key: admin } = await provision();
    const hot = await createKey(admin.key, { allowedIps: ["203.0.113.0/24"], rateLimit: { limit: 100_000, windowSeconds: 60 } });
    const isolate = new Holdings();
    const attempt = async (ip: string | null, KEYS = env.KEYS) => {
      const ctx = createExecutionContext();
      const verdict = await authorizeKey(makeDeps({ ...env, KEYS }, ctx), { key: hot.key, method: "bearer", need: "any", ip }, isolate);
      await waitOnExecutionContext(ctx);
      return verdict;
    };
    for (let i = 0; i < 500 && isolate.available(`key:${hot.id}`) === 0; i++) expect((await attempt("203.0.113.1")).ok).toBe(true);
    expect(isolate.available(`key:${hot.id}`)).toBeGreaterThan(0);
    // The object cannot be reached: whatever is decided now is decided from the lease.
    const cut = faultyObjects(env.KEYS, { authorize: { kind: "throw" } });
    expect(await attempt("198.51.100.1", cut)).toEqual({ ok: false, refusal: "ip_not_allowed" });
    expect(await attempt(null, cut)).toEqual({ ok: false, refusal: "ip_not_allowed" });
    expect(await attempt("203.0.113.2", cut)).toMatchObject({ ok: true });
    expect(cut.calls("authorize")).toBe(0);
  });

  it("answered 503 change_pending when the key's object cannot be told, is stored and in force all the same", async () => {
    const { key: admin } = await provision();
    const key = await createKey(admin.key, { allowedIps: ["10.0.0.0/8"] });
    expect((await whoami(key.key, "10.1.2.3")).status).toBe(200);
    const broken = { KEYS: faultyObjects(env.KEYS, { reload: { kind: "throw" } }), RATE_LIMIT_TIMEOUT_MS: "100" };
    const res = await callWith(broken, `/v1/api-keys/${key.id}`, {
      method: "PATCH",
      key: admin.key,
      body: { allowedIps: ["10.9.0.0/16"] },
    });
    await expectProblem(res, 503, "change_pending");
    expect(res.headers.get("Retry-After")).toBe("1");
    expect(await rows("SELECT allowed_ips FROM api_keys WHERE id = ?", key.id)).toEqual([{ allowed_ips: '["10.9.0.0/16"]' }]);
    // Never repeated: in force within the bound, in the isolate that answered first of all.
    const answered = Date.now();
    await refused(await callWith(broken, "/v1/whoami", { key: key.key, headers: { "CF-Connecting-IP": "10.1.2.3" } }));
    while ((await whoami(key.key, "10.1.2.4")).status === 200) {
      expect(Date.now() - answered, "still not in force").toBeLessThan(CHANGE_IN_FORCE_MS);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await refused(await whoami(key.key, "10.1.2.5"));
    // A repeat completes it at once.
    expect((await patchKey(admin.key, key.id, { allowedIps: ["10.9.0.0/16"] })).status).toBe(200);
    await refused(await whoami(key.key, "10.1.2.6"));
  });

  it("of the account's default reaches every key without a list of its own before it is answered", async () => {
    const { key: admin } = await provision();
    const plain = await createKey(admin.key, { name: "plain" });
    const own = await createKey(admin.key, { name: "own", allowedIps: ["198.51.100.0/24"] });
    // Both in use: their objects hold their records.
    expect((await whoami(plain.key, "192.0.2.1")).status).toBe(200);
    expect((await whoami(own.key, "198.51.100.1")).status).toBe(200);

    const res = await patchAccount(admin.key, { allowedIps: ["192.0.2.0/24", "2001:db8::1"] });
    expect(await res.json()).toMatchObject({ allowedIps: ["192.0.2.0/24", "2001:db8::1/128"] });
    expect(await (await call("/v1/account", { key: admin.key, headers: { "CF-Connecting-IP": "192.0.2.7" } })).json()).toMatchObject({
      allowedIps: ["192.0.2.0/24", "2001:db8::1/128"],
    });
    await refused(await whoami(plain.key, "198.51.100.1"));
    expect((await whoami(plain.key, "2001:db8::1")).status).toBe(200);
    // An admin's key with a list of its own keeps it, in place of the account's.
    expect((await whoami(own.key, "198.51.100.1")).status).toBe(200);
    await refused(await whoami(own.key, "192.0.2.1"));
    // The admin's own key is under the default too: its next request comes from inside.
    await refused(await whoami(admin.key, "198.51.100.1"));

    const fault = { KEYS: faultyObjects(env.KEYS, { reload: { kind: "throw" } }), RATE_LIMIT_TIMEOUT_MS: "100" };
    const narrowed = await callWith(fault, "/v1/account", {
      method: "PATCH",
      key: admin.key,
      headers: { "CF-Connecting-IP": "192.0.2.1" },
      body: { allowedIps: ["192.0.2.128/25"] },
    });
    await expectProblem(narrowed, 503, "change_pending");
    await refused(await callWith(fault, "/v1/whoami", { key: plain.key, headers: { "CF-Connecting-IP": "192.0.2.1" } }));

    const cleared = await call("/v1/account", {
      method: "PATCH",
      key: admin.key,
      headers: { "CF-Connecting-IP": "192.0.2.200" },
      body: { allowedIps: null },
    });
    expect(await cleared.json()).toMatchObject({ allowedIps: null });
    expect((await whoami(plain.key, "198.51.100.1")).status).toBe(200);
  });

  it("of the account's default is an admin's: a member's request is 403 and changes nothing", async () => {
    const { key: admin } = await provision({ membersCanCreateKeys: true });
    const member = await createUser(admin.key, "member");
    const memberKey = await createKey(admin.key, { ownerId: member.id });
    const res = await patchAccount(memberKey.key, { allowedIps: ["192.0.2.0/24"] });
    await expectProblem(res, 403, "insufficient_role");
    expect(await rows("SELECT allowed_ips FROM accounts WHERE id = (SELECT account_id FROM api_keys WHERE id = ?)", admin.id)).toEqual([
      { allowed_ips: null },
    ]);
  });
});

describe("a member's key", () => {
  async function memberAccount() {
    const { key: admin } = await provision({ membersCanCreateKeys: true });
    expect((await patchAccount(admin.key, { allowedIps: ["10.0.0.0/8", "2001:db8::/32"] })).status).toBe(200);
    const member = await createUser(admin.key, "member");
    const memberKey = await createKey(admin.key, { ownerId: member.id, name: "member's own" });
    return { admin: admin.key, member, memberKey };
  }
  const create = (key: string, body: Record<string, unknown>) =>
    call("/v1/api-keys", { key, body: { name: "m", ...body }, headers: { "CF-Connecting-IP": "10.0.0.1" } });

  it("may narrow the account's list, never widen it, whoever sets it", async () => {
    const { admin, member, memberKey } = await memberAccount();
    const wide = await create(memberKey.key, { allowedIps: ["10.1.0.0/16", "10.1.0.0/16", "0.0.0.0/0", "2001:db8:5::/48", "2001::/16"] });
    expect((await expectProblem(wide, 400, "invalid_request")).errors).toEqual([
      { field: "allowedIps[2]", message: "lies outside the account's allowedIps; a member's key may only narrow them" },
      { field: "allowedIps[4]", message: "lies outside the account's allowedIps; a member's key may only narrow them" },
    ]);
    // An admin setting a member's key's list is held to the same.
    const forMember = await create(admin, { ownerId: member.id, allowedIps: ["192.0.2.0/24"] });
    expect((await expectProblem(forMember, 400, "invalid_request")).errors).toEqual([
      { field: "allowedIps[0]", message: "lies outside the account's allowedIps; a member's key may only narrow them" },
    ]);
    const change = call(`/v1/api-keys/${memberKey.id}`, {
      method: "PATCH",
      key: memberKey.key,
      headers: { "CF-Connecting-IP": "10.0.0.1" },
      body: { allowedIps: ["192.0.2.0/24"] },
    });
    await expectProblem(await change, 400, "invalid_request");
    const rotation = call(`/v1/api-keys/${memberKey.id}/rotate`, {
      key: memberKey.key,
      headers: { "CF-Connecting-IP": "10.0.0.1" },
      body: { allowedIps: ["192.0.2.0/24"] },
    });
    await expectProblem(await rotation, 400, "invalid_request");
    expect(await rows("SELECT allowed_ips FROM api_keys WHERE id = ?", memberKey.id)).toEqual([{ allowed_ips: null }]);

    const narrow = await create(memberKey.key, { allowedIps: ["10.1.0.0/16"] });
    expect(narrow.status).toBe(201);
    const { key } = await narrow.json<{ key: string }>();
    expect((await whoami(key, "10.1.2.3")).status).toBe(200);
    await refused(await whoami(key, "10.2.0.1"));
  });

  it("takes the account's list when it has none, and may clear its own back to it, not beyond", async () => {
    const { memberKey } = await memberAccount();
    expect((await whoami(memberKey.key, "10.200.0.1")).status).toBe(200);
    await refused(await whoami(memberKey.key, "192.0.2.1"));
    const own = { method: "PATCH", key: memberKey.key, headers: { "CF-Connecting-IP": "10.0.0.1" } };
    expect((await call(`/v1/api-keys/${memberKey.id}`, { ...own, body: { allowedIps: ["10.5.0.0/16"] } })).status).toBe(200);
    await refused(await whoami(memberKey.key, "10.200.0.1"));
    const cleared = await call(`/v1/api-keys/${memberKey.id}`, {
      ...own,
      headers: { "CF-Connecting-IP": "10.5.0.1" },
      body: { allowedIps: null },
    });
    expect(await cleared.json()).toMatchObject({ allowedIps: null });
    expect((await whoami(memberKey.key, "10.200.0.1")).status).toBe(200);
    await refused(await whoami(memberKey.key, "192.0.2.1"));
  });

  it("stays within an account list narrowed after its own was set; an admin's key does not", async () => {
    const { admin, memberKey } = await memberAccount();
    const own = { method: "PATCH", key: admin, headers: { "CF-Connecting-IP": "10.0.0.1" } };
    expect((await call(`/v1/api-keys/${memberKey.id}`, { ...own, body: { allowedIps: ["10.1.0.0/16", "10.2.0.0/16"] } })).status).toBe(200);
    const adminKey = await createKey(admin, { allowedIps: ["10.1.0.0/16", "10.2.0.0/16"] });
    expect((await call("/v1/account", { ...own, body: { allowedIps: ["10.2.3.0/24", "10.0.0.1"] } })).status).toBe(200);
    // The member's key: where both lists allow.
    await refused(await whoami(memberKey.key, "10.1.0.1"));
    await refused(await whoami(memberKey.key, "10.2.4.1"));
    expect((await whoami(memberKey.key, "10.2.3.4")).status).toBe(200);
    // Reads show the key's own list as set.
    expect(
      await (await call(`/v1/api-keys/${memberKey.id}`, { key: memberKey.key, headers: { "CF-Connecting-IP": "10.2.3.4" } })).json(),
    ).toMatchObject({
      allowedIps: ["10.1.0.0/16", "10.2.0.0/16"],
    });
    // The admin's key: its own list, in place of the account's.
    expect((await whoami(adminKey.key, "10.1.0.1")).status).toBe(200);
  });
});
