import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import { UsageHistory } from "../../src/usage/tally";

export const EVER = ["2000-01-01T00:00:00.000Z", "2100-01-01T00:00:00.000Z"] as const;
export type Counts = { admitted: number; rateLimited: number; creditsSpent: number };
export const ZERO: Counts = { admitted: 0, rateLimited: 0, creditsSpent: 0 };
export const keyStub = (keyId: string) => env.KEYS.getByName(`key:${keyId}`);

export const sum = (hours: readonly Counts[]): Counts =>
  hours.reduce(
    (t, h) => ({
      admitted: t.admitted + h.admitted,
      rateLimited: t.rateLimited + h.rateLimited,
      creditsSpent: t.creditsSpent + h.creditsSpent,
    }),
    ZERO,
  );

/** The key's totals in its account's rollup (what GET /v1/account/usage sums). */
export async function rolledUp(accountId: string, keyId: string): Promise<Counts> {
  const { keys } = await env.ACCOUNTS.getByName(`account:${accountId}`).usage(...EVER, [keyId]);
  const { keyId: _, ...totals } = keys[0] ?? { keyId, ...ZERO };
  return totals;
}

/** Runs the key's alarm and waits until the usage queue has brought all the key counted to its account's rollup. */
export async function flush(keyId: string, accountId: string): Promise<void> {
  await runDurableObjectAlarm(keyStub(keyId));
  const own = sum(await keyStub(keyId).usageHours(...EVER));
  await vi.waitFor(async () => expect(await rolledUp(accountId, keyId)).toEqual(own), { timeout: 10_000, interval: 100 });
}

/**
 * Counts `hours` in the key's object as its requests would have been counted (past hours included, which no request
 * can reach now), then sends them the way its alarm does and waits for the account's rollup to have them.
 */
export async function seedUsage(
  accountId: string,
  keyId: string,
  hours: { hour: string; admitted: number; rateLimited: number; creditsSpent?: number }[],
): Promise<void> {
  await runInDurableObject(keyStub(keyId), async (_, state) => {
    const history = new UsageHistory(state.storage.sql);
    for (const h of hours) history.count(Date.parse(h.hour), h.admitted, h.rateLimited, h.creditsSpent ?? 0);
    await state.storage.put("usage-key", keyId);
    if ((await state.storage.getAlarm()) === null) await state.storage.setAlarm(Date.now() + 60_000);
  });
  await flush(keyId, accountId);
}

/** Runs the key's alarm (set by its requests, after their answers) and waits until D1 has the last use it sent. */
export async function lastUseSent(keyId: string): Promise<void> {
  const stub = keyStub(keyId);
  await vi.waitFor(async () => expect(await runDurableObjectAlarm(stub)).toBe(true), { timeout: 5_000, interval: 50 });
  const at = new Date((await runInDurableObject(stub, (instance) => instance.lastUseRecorded)) as number).toISOString();
  await vi.waitFor(
    async () => {
      const row = await env.DB.prepare("SELECT last_used_at FROM api_keys WHERE id = ?").bind(keyId).first<{ last_used_at: string }>();
      expect(row?.last_used_at).toBe(at);
    },
    { timeout: 10_000, interval: 100 },
  );
}
