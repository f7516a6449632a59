import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { LedgerEntry } from "../../src/core/balance";
import { LEDGER_FLUSH_ROWS, LedgerOutbox, type LedgerOwner } from "../../src/counters/ledger";
import { faultyDatabase } from "../faults";
import { rows } from "../helpers";

/** The top of a minute: entries at T + n seconds (n < 60) fall in one minute. */
const T = Date.parse("2026-11-23T14:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();

let objects = 0;
/** A fresh object's storage (a key object that is never called): each test its own. */
const anObject = () => env.KEYS.getByName(`ledger-test:${++objects}:${crypto.randomUUID()}`);
const owner = (keyId: string | null = `key_${crypto.randomUUID().slice(0, 8)}`): LedgerOwner => ({
  accountId: `acc_${crypto.randomUUID()}`,
  keyId,
});

type Stored = {
  id: string;
  key_id: string | null;
  at: string;
  delta: number;
  balance_after: number;
  kind: string;
  count: number;
  request_id: string | null;
  actor: string | null;
  reason: string | null;
};
const stored = (o: LedgerOwner) =>
  rows<Stored>(
    "SELECT id, key_id, at, delta, balance_after, kind, count, request_id, actor, reason FROM credit_ledger WHERE account_id = ? ORDER BY at, kind, id",
    o.accountId,
  );
const sum = (list: { delta: number }[]) => list.reduce((n, e) => n + e.delta, 0);

/** `n` spends of 1-3 credits from `start`, one second apart, each with its request and the balance after it. */
function spends(n: number, start: number, balance: number): LedgerEntry[] {
  return Array.from({ length: n }, (_, i) => {
    balance -= (i % 3) + 1;
    return { at: start + i * 1000, delta: -((i % 3) + 1), balanceAfter: balance, kind: "spend" as const, requestId: `req_${i}` };
  });
}

describe("the credits ledger's outbox", () => {
  it("sums a minute's spends into one D1 row: their summed delta, their count and the last balance", async () => {
    const o = owner();
    const entries = spends(50, T, 1000);
    await runInDurableObject(anObject(), async (_, state) => {
      const outbox = new LedgerOutbox(state.storage.sql, Date.now);
      // One request at a time, as the object records them.
      for (const e of entries) outbox.record(o, [e]);
      expect(outbox.pending()).toBe(true);
      await outbox.flush(env.DB);
      expect(outbox.pending()).toBe(false);
    });
    const last = entries[entries.length - 1] as LedgerEntry;
    expect(await stored(o)).toEqual([
      {
        id: expect.stringMatching(/^cle_[0-9a-f]{24}$/),
        key_id: o.keyId,
        at: iso(last.at),
        delta: sum(entries),
        balance_after: last.balanceAfter,
        kind: "spend",
        count: 50,
        // A row standing for fifty requests names none.
        request_id: null,
        actor: null,
        reason: null,
      },
    ]);
  });

  it("writes one row per minute: spends across the top of a minute are two rows", async () => {
    const o = owner();
    const entries = spends(10, T + 55_000, 100);
    await runInDurableObject(anObject(), async (_, state) => {
      const outbox = new LedgerOutbox(state.storage.sql, Date.now);
      outbox.record(o, entries);
      await outbox.flush(env.DB);
    });
    const found = await stored(o);
    expect(found.map((r) => [r.at, r.count, r.delta, r.balance_after])).toEqual([
      [iso(T + 59_000), 5, sum(entries.slice(0, 5)), entries[4]?.balanceAfter],
      [iso(T + 64_000), 5, sum(entries.slice(5)), entries[9]?.balanceAfter],
    ]);
  });

  it("keeps refills, adjustments, reservations, settles and a request's refund one row each; sums lease returns apart from spends", async () => {
    const o = owner();
    const entries: LedgerEntry[] = [
      { at: T, delta: 100, balanceAfter: 100, kind: "refill" },
      { at: T + 1000, delta: -1, balanceAfter: 99, kind: "spend", requestId: "req_a" },
      { at: T + 2000, delta: -10, balanceAfter: 89, kind: "reserve", requestId: "req_b" },
      { at: T + 3000, delta: 7, balanceAfter: 96, kind: "settle", requestId: "req_b" },
      { at: T + 4000, delta: 1, balanceAfter: 97, kind: "refund", requestId: "req_a" },
      { at: T + 5000, delta: 50, balanceAfter: 147, kind: "adjust", reason: "goodwill", actor: "usr_1" },
      { at: T + 6000, delta: -5, balanceAfter: 142, kind: "spend" },
      // What leases gave back unspent: no request named.
      { at: T + 7000, delta: 2, balanceAfter: 144, kind: "refund" },
      { at: T + 8000, delta: 3, balanceAfter: 147, kind: "refund" },
      { at: T + 9000, delta: 0, balanceAfter: 147, kind: "settle", requestId: "req_c" },
    ];
    await runInDurableObject(anObject(), async (_, state) => {
      const outbox = new LedgerOutbox(state.storage.sql, Date.now);
      outbox.record(o, entries);
      await outbox.flush(env.DB);
    });
    const found = await stored(o);
    const shown = (r: Stored) => [r.kind, r.delta, r.count, r.request_id, r.actor, r.reason];
    expect(found.map(shown)).toEqual([
      ["refill", 100, 1, null, null, null],
      ["reserve", -10, 1, "req_b", null, null],
      ["settle", 7, 1, "req_b", null, null],
      ["refund", 1, 1, "req_a", null, null],
      ["adjust", 50, 1, null, "usr_1", "goodwill"],
      ["spend", -6, 2, null, null, null],
      ["refund", 5, 2, null, null, null],
      ["settle", 0, 1, "req_c", null, null],
    ]);
    expect(sum(found)).toBe(sum(entries));
    expect(found.find((r) => r.kind === "refund" && r.count === 2)?.balance_after).toBe(147);
  });

  it("keeps a key's entries and the account pool's apart", async () => {
    const key = owner();
    const pool = { accountId: key.accountId, keyId: null };
    await runInDurableObject(anObject(), async (_, state) => {
      const outbox = new LedgerOutbox(state.storage.sql, Date.now);
      outbox.record(key, spends(3, T, 10));
      outbox.record(pool, spends(4, T, 100));
      await outbox.flush(env.DB);
    });
    const found = await stored(key);
    expect(found.map((r) => [r.key_id, r.count, r.delta]).sort()).toEqual(
      [
        [key.keyId, 3, -6],
        [null, 4, -7],
      ].sort(),
    );
  });

  it("keeps everything when D1 fails, and a later flush writes each row exactly once, after a write that landed but answered nothing too", async () => {
    const o = owner();
    const first = spends(20, T, 1000);
    const more = spends(20, T + 20_000, 960);
    const adjust: LedgerEntry = { at: T + 50_000, delta: 5, balanceAfter: 925, kind: "adjust", actor: "operator" };
    const late = spends(5, T + 51_000, 925);
    const stub = anObject();
    await runInDurableObject(stub, async (_, state) => {
      const outbox = new LedgerOutbox(state.storage.sql, Date.now);
      outbox.record(o, first);
      const down = faultyDatabase(env.DB, { kind: "throw", error: new Error("D1_ERROR: Network connection lost.") });
      await expect(outbox.flush(down)).rejects.toThrow("Network connection lost");
      expect(outbox.pending()).toBe(true);
      // The same minute goes on while D1 is away.
      outbox.record(o, more);
      outbox.record(o, [adjust]);
      // D1 writes the batch but the answer is lost: the object cannot know, and sends it all again later.
      const lost = faultyDatabase(env.DB, { kind: "lost-answer" });
      await expect(outbox.flush(lost)).rejects.toThrow();
      expect(outbox.pending()).toBe(true);
      // Spends of the same minute after the write that landed: they must not vanish into a row D1 already holds.
      outbox.record(o, late);
    });
    expect((await stored(o)).length).toBeGreaterThan(0);
    await runInDurableObject(stub, async (_, state) => {
      const outbox = new LedgerOutbox(state.storage.sql, Date.now);
      await outbox.flush(env.DB);
      expect(outbox.pending()).toBe(false);
      // Nothing left to send: a flush more writes nothing.
      await outbox.flush(env.DB);
    });
    const found = await stored(o);
    const recorded = [...first, ...more, adjust, ...late];
    expect(sum(found)).toBe(sum(recorded));
    expect(found.reduce((n, r) => n + r.count, 0)).toBe(recorded.length);
    expect(new Set(found.map((r) => r.id)).size).toBe(found.length);
  });

  it("never changes a row a flush is writing: what is recorded meanwhile waits in a row of its own", async () => {
    const o = owner();
    const before = spends(10, T, 100);
    const during = spends(10, T + 10_000, 80);
    await runInDurableObject(anObject(), async (_, state) => {
      const outbox = new LedgerOutbox(state.storage.sql, Date.now);
      outbox.record(o, before);
      const writing = outbox.flush(faultyDatabase(env.DB, { kind: "late-answer", ms: 50 }));
      outbox.record(o, during);
      await writing;
      expect(outbox.pending()).toBe(true);
      await outbox.flush(env.DB);
    });
    const found = await stored(o);
    expect(found.map((r) => [r.count, r.delta])).toEqual([
      [10, sum(before)],
      [10, sum(during)],
    ]);
  });

  it("loses nothing to an eviction: a new outbox over the object's storage still has what was pending", async () => {
    const o = owner();
    const entries = [...spends(5, T, 50), { at: T + 30_000, delta: 10, balanceAfter: 50, kind: "adjust" as const }];
    const stub = anObject();
    await runInDurableObject(stub, (_, state) => {
      new LedgerOutbox(state.storage.sql, () => T + 31_000).record(o, entries);
    });
    await evictDurableObject(stub);
    await runInDurableObject(stub, async (_, state) => {
      const outbox = new LedgerOutbox(state.storage.sql, Date.now);
      expect(outbox.pending()).toBe(true);
      expect(outbox.waitingSince()).toBe(T + 31_000);
      await outbox.flush(env.DB);
      expect(outbox.waitingSince()).toBeNull();
    });
    const found = await stored(o);
    expect(found.map((r) => [r.kind, r.count, r.delta])).toEqual([
      ["spend", 5, sum(entries.slice(0, 5))],
      ["adjust", 1, 10],
    ]);
  });

  it("writes a long backlog over several flushes, oldest first, each row once", async () => {
    const o = owner();
    const n = LEDGER_FLUSH_ROWS + 5;
    const entries = Array.from({ length: n }, (_, i) => ({ at: T + i, delta: 1, balanceAfter: i + 1, kind: "adjust" as const }));
    await runInDurableObject(anObject(), async (_, state) => {
      const outbox = new LedgerOutbox(state.storage.sql, Date.now);
      outbox.record(o, entries);
      await outbox.flush(env.DB);
      expect(outbox.pending()).toBe(true);
      expect((await stored(o)).map((r) => r.balance_after)).toEqual(entries.slice(0, LEDGER_FLUSH_ROWS).map((e) => e.balanceAfter));
      await outbox.flush(env.DB);
      expect(outbox.pending()).toBe(false);
    });
    expect((await stored(o)).length).toBe(n);
  });
});
