import { describe, expect, it } from "vitest";
import { type KeyRecord, keyPrincipal, refusal, type SessionRecord, sessionPrincipal } from "../../src/core/principal";

const account = (maxRateLimit: number | null, maxRateLimitWindowSeconds: number | null = 60, rateLimits: string | null = null) => ({
  rateLimit: 1000,
  rateLimitWindowSeconds: 60,
  rateLimits,
  maxRateLimit,
  maxRateLimitWindowSeconds: maxRateLimit === null ? null : maxRateLimitWindowSeconds,
});

function key(
  role: "admin" | "member",
  over: Partial<KeyRecord["key"]> = {},
  grants = '["*"]',
  maxRateLimit: number | null = 10,
): KeyRecord {
  return {
    key: {
      id: "key_1",
      accountId: "acc_1",
      ownerId: "usr_1",
      credits: null,
      scopes: '["*"]',
      rateLimit: null,
      rateLimitWindowSeconds: null,
      rateLimits: null,
      revokedAt: null,
      expiresAt: null,
      externalId: null,
      meta: null,
      allowedIps: null,
      ...over,
    },
    role,
    disabled: false,
    grants,
    keyPrefix: "sk",
    accountSlug: "acme",
    account: account(maxRateLimit),
    accountExternal: { externalId: null, meta: null },
    accountAllowedIps: null,
  };
}

function session(role: "admin" | "member", grants = '["*"]', maxRateLimit: number | null = 10): SessionRecord {
  return {
    id: "ses_1",
    userId: "usr_1",
    accountId: "acc_1",
    role,
    grants,
    keyPrefix: "sk",
    accountSlug: "acme",
    account: account(maxRateLimit),
  };
}

describe("the principal builders", () => {
  it("hold a member's key and a member's session to the members' ceiling, and an admin's to the default", () => {
    expect(keyPrincipal(key("member")).limits).toEqual([{ name: "default", limit: 10, windowSeconds: 60 }]);
    expect(sessionPrincipal(session("member")).limits).toEqual([{ name: "default", limit: 10, windowSeconds: 60 }]);
    expect(keyPrincipal(key("admin")).limits).toEqual([{ name: "default", limit: 1000, windowSeconds: 60 }]);
    expect(sessionPrincipal(session("admin")).limits).toEqual([{ name: "default", limit: 1000, windowSeconds: 60 }]);
  });

  it("give a member the default when it is within the ceiling, by size and by rate", () => {
    expect(keyPrincipal(key("member", {}, '["*"]', null)).limits).toEqual([{ name: "default", limit: 1000, windowSeconds: 60 }]);
    expect(sessionPrincipal(session("member", '["*"]', null)).limits).toEqual([{ name: "default", limit: 1000, windowSeconds: 60 }]);
    expect(sessionPrincipal(session("member", '["*"]', 5000)).limits).toEqual([{ name: "default", limit: 1000, windowSeconds: 60 }]);
    // 1000 a minute is a higher rate than 1000 an hour: the ceiling holds.
    const hourly = { ...session("member"), account: account(1000, 3600) };
    expect(sessionPrincipal(hourly).limits).toEqual([{ name: "default", limit: 1000, windowSeconds: 3600 }]);
  });

  it("give a key its own limit, whoever owns it", () => {
    expect(keyPrincipal(key("member", { rateLimit: 5, rateLimitWindowSeconds: 1 })).limits).toEqual([
      { name: "default", limit: 5, windowSeconds: 1 },
    ]);
  });

  it("give a key its own named limits, and hold each of an account's default limits to the members' ceiling", () => {
    const plan = JSON.stringify([
      { name: "minute", limit: 10, windowSeconds: 60 },
      { name: "day", limit: 100, windowSeconds: 86_400 },
    ]);
    expect(keyPrincipal(key("member", { rateLimit: 10, rateLimitWindowSeconds: 60, rateLimits: plan })).limits).toEqual(JSON.parse(plan));
    // A ceiling of 5 a minute: "minute" (10 a minute) is above it, and so is "day" (100 in one window): each becomes it.
    const capped = { ...session("member"), account: account(5, 60, plan) };
    expect(sessionPrincipal(capped).limits).toEqual([
      { name: "minute", limit: 5, windowSeconds: 60 },
      { name: "day", limit: 5, windowSeconds: 60 },
    ]);
    // A ceiling of 500 an hour: "minute" (a higher rate) becomes it, "day" is within it.
    expect(sessionPrincipal({ ...capped, account: account(500, 3600, plan) }).limits).toEqual([
      { name: "minute", limit: 500, windowSeconds: 3600 },
      { name: "day", limit: 100, windowSeconds: 86_400 },
    ]);
    expect(sessionPrincipal({ ...capped, role: "admin" }).limits).toEqual(JSON.parse(plan));
    // With no ceiling of their own, the account's default limits are the members' too.
    expect(keyPrincipal({ ...key("member"), account: account(null, null, plan) }).limits).toEqual(JSON.parse(plan));
  });

  it("give a key its scopes within its owner's grants, and a session its person's grants", () => {
    expect(keyPrincipal(key("member", {}, '["mailbox:a"]')).scopes).toEqual(["mailbox:a"]);
    expect(keyPrincipal(key("member", { scopes: '["mailbox:a","mailbox:b"]' }, '["mailbox:a"]')).scopes).toEqual(["mailbox:a"]);
    expect(keyPrincipal(key("admin", { scopes: '["mailbox:b"]' }, '["mailbox:a"]')).scopes).toEqual(["mailbox:b"]);
    expect(sessionPrincipal(session("member", '["mailbox:a"]')).scopes).toEqual(["mailbox:a"]);
    expect(sessionPrincipal(session("admin", '["mailbox:a"]')).scopes).toEqual(["*"]);
  });

  it("name the key, or the session and no key", () => {
    expect(keyPrincipal(key("member"))).toMatchObject({ keyId: "key_1", userId: "usr_1", accountId: "acc_1", accountSlug: "acme" });
    expect(keyPrincipal(key("member")).sessionId).toBeUndefined();
    expect(sessionPrincipal(session("member"))).toMatchObject({ keyId: null, sessionId: "ses_1", userId: "usr_1", accountSlug: "acme" });
  });
});

describe("what a route needs", () => {
  const scoped = keyPrincipal(key("member", {}, '["mailbox:a"]'));
  const full = keyPrincipal(key("admin"));
  it("answers why a principal falls short", () => {
    expect(refusal(scoped, "any")).toBeNull();
    expect(refusal(scoped, "full")).toBe("insufficient_scope");
    expect(refusal(keyPrincipal(key("member")), "admin")).toBe("insufficient_role");
    expect(refusal(full, "admin")).toBeNull();
    expect(refusal(scoped, { resource: "mailbox:a" })).toBeNull();
    expect(refusal(scoped, { resource: "mailbox:b" })).toBe("not_granted");
    expect(refusal(scoped, {})).toBe("insufficient_scope");
    expect(refusal(full, { resource: "mailbox:b", account: "acme" })).toBeNull();
    expect(refusal(full, { resource: "mailbox:b", account: "acc_2" })).toBe("other_account");
  });
});
