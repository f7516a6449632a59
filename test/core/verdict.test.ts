import { describe, expect, it } from "vitest";
import type { KeyRecord } from "../../src/core/principal";
import { evaluateKey, keyStatus } from "../../src/core/verdict";

const NOW = new Date("2026-06-01T12:00:00.000Z");
const before = new Date(NOW.getTime() - 1).toISOString();
const after = new Date(NOW.getTime() + 1).toISOString();

function record(key: Partial<KeyRecord["key"]> = {}, rest: Partial<Omit<KeyRecord, "key">> = {}): KeyRecord {
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
      ...key,
    },
    role: "admin",
    disabled: false,
    grants: '["*"]',
    keyPrefix: "sk",
    accountSlug: "acme",
    account: { rateLimit: 60, rateLimitWindowSeconds: 60, rateLimits: null, maxRateLimit: null, maxRateLimitWindowSeconds: null },
    accountExternal: { externalId: null, meta: null },
    accountAllowedIps: null,
    ...rest,
  };
}

describe("the key verdict", () => {
  it("refuses a key no one has", () => {
    expect(evaluateKey(undefined, NOW)).toEqual({ ok: false, code: "invalid_key" });
  });

  it("refuses a key revoked or expired at the instant itself, and takes it until then", () => {
    expect(evaluateKey(record({ revokedAt: NOW.toISOString() }), NOW)).toEqual({ ok: false, code: "key_revoked" });
    expect(evaluateKey(record({ revokedAt: before }), NOW)).toEqual({ ok: false, code: "key_revoked" });
    expect(evaluateKey(record({ revokedAt: after }), NOW).ok).toBe(true);
    expect(evaluateKey(record({ expiresAt: NOW.toISOString() }), NOW)).toEqual({ ok: false, code: "key_expired" });
    expect(evaluateKey(record({ expiresAt: after }), NOW).ok).toBe(true);
    // A key both revoked and expired says revoked.
    expect(keyStatus({ revokedAt: before, expiresAt: before }, NOW)).toBe("revoked");
    expect(keyStatus({ revokedAt: null, expiresAt: null }, NOW)).toBe("active");
  });

  it("refuses the key of a disabled owner, after its own state", () => {
    expect(evaluateKey(record({}, { disabled: true }), NOW)).toEqual({ ok: false, code: "key_owner_disabled" });
    expect(evaluateKey(record({ revokedAt: before }, { disabled: true }), NOW)).toEqual({ ok: false, code: "key_revoked" });
  });

  it("answers a usable key's principal", () => {
    expect(evaluateKey(record(), NOW)).toEqual({
      ok: true,
      principal: {
        accountId: "acc_1",
        keyId: "key_1",
        external: { account: { externalId: null, meta: null }, key: { externalId: null, meta: null } },
        userId: "usr_1",
        role: "admin",
        scopes: ["*"],
        accountSlug: "acme",
        keyPrefix: "sk",
        limits: [{ name: "default", limit: 60, windowSeconds: 60 }],
        credits: { key: null, account: null, user: null },
        shared: [],
      },
    });
  });
});
