import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { LedgerEntry } from "../../src/core/balance";
import { LedgerOutbox, type LedgerOwner } from "../../src/counters/ledger";
import { call, expectProblem, memberWithKey, OPERATOR_TOKEN, provision } from "../helpers";

const T = Date.parse("2026-11-23T14:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();

type Entry = {
  id: string;
  at: string;
  delta: number;
  balanceAfter: number;
  kind: string;
  count: number;
  requestId: string | null;
  actor: string | null;
  reason: string | null;
};
type LedgerPage = { data: Entry[]; nextCursor: string | null };

/** Records the entries in an object's outbox and flushes them to D1, as a balance's object does from its alarm. */
async function seed(owner: LedgerOwner, entries: LedgerEntry[]): Promise<void> {
  await runInDurableObject(env.KEYS.getByName(`ledger-seed:${crypto.randomUUID()}`), async (_, state) => {
    const outbox = new LedgerOutbox(state.storage.sql, Date.now);
    outbox.record(owner, entries);
    await outbox.flush(env.DB);
  });
}

/** A key's movements: five adjustments a minute apart, then three spends in one minute (one row). */
function keyEntries(): LedgerEntry[] {
  const adjustments = [1, 2, 3, 4, 5].map((i) => ({
    at: T + i * 60_000,
    delta: 10 * i,
    balanceAfter: 5 * i * (i + 1),
    kind: "adjust" as const,
    actor: "usr_admin",
    reason: `top-up ${i}`,
  }));
  const spent = [1, 2, 3].map((i) => ({
    at: T + 600_000 + i * 1000,
    delta: -i,
    balanceAfter: 150 - (i * (i + 1)) / 2,
    kind: "spend" as const,
  }));
  return [...adjustments, ...spent];
}

/** Every page of a ledger, following `nextCursor`; answers the entries and the pages' sizes. */
async function walk(path: string, key: string | undefined, limit: number): Promise<{ entries: Entry[]; sizes: number[] }> {
  const entries: Entry[] = [];
  const sizes: number[] = [];
  let cursor: string | null = null;
  do {
    const res = await call(`${path}?limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`, {
      ...(key ? { key } : { headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` } }),
    });
    expect(res.status).toBe(200);
    const page: LedgerPage = await res.json();
    entries.push(...page.data);
    sizes.push(page.data.length);
    cursor = page.nextCursor;
  } while (cursor !== null);
  return { entries, sizes };
}

describe("the credits ledger's routes", () => {
  it("pages a key's ledger newest first, each entry as stored, summed rows with their count", async () => {
    const { account, key } = await provision();
    const entries = keyEntries();
    await seed({ accountId: account.id, keyId: key.id }, entries);
    // The account pool's entries are not the key's.
    await seed({ accountId: account.id, keyId: null }, [{ at: T, delta: 1000, balanceAfter: 1000, kind: "refill" }]);

    const { entries: found, sizes } = await walk(`/v1/api-keys/${key.id}/credits/ledger`, key.key, 2);
    expect(sizes).toEqual([2, 2, 2]);
    expect(found.map((e) => [e.at, e.kind, e.delta, e.count])).toEqual([
      [iso(T + 603_000), "spend", -6, 3],
      ...[5, 4, 3, 2, 1].map((i) => [iso(T + i * 60_000), "adjust", 10 * i, 1]),
    ]);
    expect(found[0]).toEqual({
      id: expect.stringMatching(/^cle_[0-9a-f]{24}$/),
      at: iso(T + 603_000),
      delta: -6,
      balanceAfter: 144,
      kind: "spend",
      count: 3,
      requestId: null,
      actor: null,
      reason: null,
    });
    expect(found[1]).toMatchObject({ balanceAfter: 150, actor: "usr_admin", reason: "top-up 5", requestId: null });
    // The ledger sums to what moved.
    expect(found.reduce((n, e) => n + e.delta, 0)).toBe(entries.reduce((n, e) => n + e.delta, 0));

    const all: LedgerPage = await (await call(`/v1/api-keys/${key.id}/credits/ledger`, { key: key.key })).json();
    expect([all.data.map((e) => e.id), all.nextCursor]).toEqual([found.map((e) => e.id), null]);
    for (const query of ["cursor=nope", "limit=0", "limit=101"])
      await expectProblem(await call(`/v1/api-keys/${key.id}/credits/ledger?${query}`, { key: key.key }), 400, "invalid_request");
  });

  it("shows a member their own keys' ledgers only; another account's key is 404; the account pool is for admins", async () => {
    const { account, key: adminKey } = await provision({ membersCanCreateKeys: true });
    const member = await memberWithKey(adminKey.key);
    await seed({ accountId: account.id, keyId: member.key.id }, [{ at: T, delta: -3, balanceAfter: 7, kind: "spend" }]);
    await seed({ accountId: account.id, keyId: adminKey.id }, [{ at: T, delta: -4, balanceAfter: 6, kind: "spend" }]);
    await seed({ accountId: account.id, keyId: null }, [{ at: T, delta: 50, balanceAfter: 50, kind: "adjust", actor: "operator" }]);

    const own: LedgerPage = await (await call(`/v1/api-keys/${member.key.id}/credits/ledger`, { key: member.key.key })).json();
    expect(own.data.map((e) => e.delta)).toEqual([-3]);
    await expectProblem(await call(`/v1/api-keys/${adminKey.id}/credits/ledger`, { key: member.key.key }), 404, "not_found");
    await expectProblem(await call("/v1/account/credits/ledger", { key: member.key.key }), 403, "insufficient_role");
    // An admin sees every key of the account, and the pool.
    const ofMember: LedgerPage = await (await call(`/v1/api-keys/${member.key.id}/credits/ledger`, { key: adminKey.key })).json();
    expect(ofMember.data.map((e) => e.delta)).toEqual([-3]);
    const pool: LedgerPage = await (await call("/v1/account/credits/ledger", { key: adminKey.key })).json();
    expect(pool.data.map((e) => [e.kind, e.delta, e.actor])).toEqual([["adjust", 50, "operator"]]);

    const other = await provision();
    for (const id of [member.key.id, adminKey.id, "key_000000000000000000000000"])
      await expectProblem(await call(`/v1/api-keys/${id}/credits/ledger`, { key: other.key.key }), 404, "not_found");
    // Another account's pool is its own (empty here), never this one's.
    const theirs: LedgerPage = await (await call("/v1/account/credits/ledger", { key: other.key.key })).json();
    expect(theirs).toEqual({ data: [], nextCursor: null });
  });

  it("gives the operator any account pool's ledger, paged; an unknown account is 404", async () => {
    const { account, key } = await provision();
    const pool = [1, 2, 3].map((i) => ({ at: T + i * 60_000, delta: i, balanceAfter: i, kind: "refill" as const }));
    await seed({ accountId: account.id, keyId: null }, pool);
    await seed({ accountId: account.id, keyId: key.id }, [{ at: T, delta: -1, balanceAfter: 0, kind: "spend" }]);

    const { entries, sizes } = await walk(`/v1/accounts/${account.id}/credits/ledger`, undefined, 2);
    expect(sizes).toEqual([2, 1]);
    expect(entries.map((e) => e.delta)).toEqual([3, 2, 1]);
    const asAdmin = await walk("/v1/account/credits/ledger", key.key, 20);
    expect(asAdmin.entries).toEqual(entries);

    const operator = { headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` } };
    await expectProblem(await call("/v1/accounts/acc_000000000000000000000000/credits/ledger", operator), 404, "not_found");
    await expectProblem(await call(`/v1/accounts/${account.id}/credits/ledger`), 401, "missing_credentials");
    await expectProblem(await call(`/v1/accounts/${account.id}/credits/ledger`, { key: key.key }), 401, "invalid_operator_token");
  });
});
