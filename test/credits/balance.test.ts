import { describe, expect, it } from "vitest";
import { Balance, type LedgerEntry } from "../../src/core/balance";

const at = (iso: string) => Date.parse(iso);
const T0 = at("2026-03-10T10:00:00Z");
const sum = (entries: LedgerEntry[]) => entries.reduce((n, e) => n + e.delta, 0);
const limited = (remaining: number, refill: Balance["state"]["refill"] = null) =>
  new Balance({ remaining, refill, judgedAt: T0, reserved: {} });

describe("a credits balance (pure)", () => {
  it("spends all of a request's credits or none, never going below zero", () => {
    const b = limited(5);
    expect(b.spend(T0, 3, "req_1")).toEqual({ ok: true });
    expect(b.moved()).toEqual([{ at: T0, delta: -3, balanceAfter: 2, kind: "spend", requestId: "req_1" }]);
    expect(b.spend(T0, 3, "req_2")).toEqual({ ok: false, required: 3, remaining: 2, nextRefillAt: null });
    expect(b.moved()).toEqual([]);
    expect(b.spend(T0, 2, "req_3")).toEqual({ ok: true });
    expect(b.state.remaining).toBe(0);
  });

  it("spends nothing and records nothing when unlimited", () => {
    const b = Balance.unlimited(T0);
    expect(b.spend(T0, 1_000_000, "req_1")).toEqual({ ok: true });
    expect(b.moved()).toEqual([]);
    expect(b.state.remaining).toBeNull();
  });

  it("refills when next judged, and says when the next refill comes to a request it refuses", () => {
    const b = limited(0, { amount: 10, interval: "day", mode: "set" });
    expect(b.spend(T0, 1, "req_1")).toEqual({ ok: false, required: 1, remaining: 0, nextRefillAt: at("2026-03-11T00:00:00Z") });
    expect(b.spend(at("2026-03-11T00:00:01Z"), 4, "req_2")).toEqual({ ok: true });
    expect(b.moved()).toMatchObject([
      { at: at("2026-03-11T00:00:00Z"), delta: 10, balanceAfter: 10, kind: "refill" },
      { delta: -4, balanceAfter: 6, kind: "spend" },
    ]);
  });

  it("records the refill a refused request brought about", () => {
    const b = limited(0, { amount: 10, interval: "day", mode: "add" });
    expect(b.spend(at("2026-03-11T00:00:01Z"), 11, "req_1")).toMatchObject({ ok: false, remaining: 10 });
    expect(b.moved()).toMatchObject([{ delta: 10, balanceAfter: 10, kind: "refill" }]);
  });

  it("settles a reservation at what the upstream used, once; more than reserved is charged only up to the reserve", () => {
    const b = limited(100);
    const until = T0 + 900_000;
    expect(b.spend(T0, 100, "req_1", { until })).toEqual({ ok: true });
    expect(b.moved()).toMatchObject([{ delta: -100, kind: "reserve" }]);
    expect(b.state.remaining).toBe(0);
    expect(b.settle(T0 + 1000, "req_1", 37)).toEqual({ overrun: 0 });
    expect(b.moved()).toMatchObject([{ delta: 63, balanceAfter: 63, kind: "settle", requestId: "req_1" }]);
    // A second settle, or one for a request that reserved nothing, changes nothing.
    expect(b.settle(T0 + 2000, "req_1", 0)).toBeNull();
    expect(b.settle(T0 + 2000, "req_other", 0)).toBeNull();
    expect(b.state.remaining).toBe(63);

    b.spend(T0, 10, "req_2", { until });
    expect(b.settle(T0 + 3000, "req_2", 25)).toEqual({ overrun: 15 });
    expect(b.state.remaining).toBe(53);
  });

  it("settles a reservation nobody settled at its reserve once its time is up, and refuses a late settle", () => {
    const b = limited(50);
    b.spend(T0, 20, "req_1", { until: T0 + 900_000 });
    b.moved();
    b.judge(T0 + 900_000);
    expect(b.moved()).toEqual([{ at: T0 + 900_000, delta: 0, balanceAfter: 30, kind: "settle", requestId: "req_1" }]);
    expect(b.settle(T0 + 900_001, "req_1", 1)).toBeNull();
    expect(b.state.remaining).toBe(30);
  });

  it("gives back a refunded request's spend, or its whole reservation", () => {
    const b = limited(10);
    b.spend(T0, 4, "req_1");
    b.spend(T0, 5, "req_2", { until: T0 + 60_000 });
    b.moved();
    b.refund(T0, 4, "req_1");
    b.refund(T0, 1, "req_2");
    expect(b.moved()).toMatchObject([
      { delta: 4, kind: "refund" },
      { delta: 5, kind: "refund" },
    ]);
    expect(b.state.remaining).toBe(10);
    expect(b.settle(T0, "req_2", 1)).toBeNull();
  });

  it("adjusts by add, subtract and set, never below zero, with the reason and who did it", () => {
    const b = limited(10);
    expect(b.adjust(T0, { operation: "add", amount: 5, reason: "goodwill", actor: "usr_1" })).toEqual({ ok: true });
    expect(b.moved()).toEqual([{ at: T0, delta: 5, balanceAfter: 15, kind: "adjust", reason: "goodwill", actor: "usr_1" }]);
    expect(b.adjust(T0, { operation: "subtract", amount: 16 })).toEqual({ ok: false, remaining: 15 });
    expect(b.adjust(T0, { operation: "set", amount: 3 })).toEqual({ ok: true });
    expect(b.moved()).toMatchObject([{ delta: -12, balanceAfter: 3 }]);
    const unlimited = Balance.unlimited(T0);
    expect(unlimited.adjust(T0, { operation: "add", amount: 5 })).toEqual({ ok: false, remaining: null });
    expect(unlimited.adjust(T0, { operation: "set", amount: 5 })).toEqual({ ok: true });
    expect(unlimited.moved()).toMatchObject([{ delta: 5, balanceAfter: 5 }]);
  });

  it("keeps opening balance + the ledger's deltas = the balance, never below zero, over any sequence of movements", () => {
    let seed = 42;
    const rand = () => {
      seed = (seed * 48271) % 2147483647;
      return seed / 2147483647;
    };
    const pickOne = (ids: string[]) => ids.splice(Math.floor(rand() * ids.length), 1)[0] as string;
    for (let run = 0; run < 20; run++) {
      const opening = Math.floor(rand() * 50);
      const b = limited(opening, rand() < 0.5 ? { amount: 20, interval: "hour", mode: rand() < 0.5 ? "set" : "add" } : null);
      const ledger: LedgerEntry[] = [];
      const open: string[] = [];
      let now = T0;
      for (let i = 0; i < 300; i++) {
        now += Math.floor(rand() * 600_000);
        const pick = rand();
        const id = `req_${run}_${i}`;
        if (pick < 0.4) b.spend(now, 1 + Math.floor(rand() * 10), id);
        else if (pick < 0.6) {
          if (b.spend(now, 1 + Math.floor(rand() * 10), id, { until: now + 900_000 }).ok) open.push(id);
        } else if (pick < 0.75 && open.length > 0) b.settle(now, pickOne(open), Math.floor(rand() * 15));
        else if (pick < 0.85 && open.length > 0) b.refund(now, 0, pickOne(open));
        else
          b.adjust(now, {
            operation: (["add", "subtract", "set"] as const)[Math.floor(rand() * 3)] ?? "add",
            amount: Math.floor(rand() * 30),
          });
        ledger.push(...b.moved());
        expect(b.state.remaining).toBeGreaterThanOrEqual(0);
        expect(opening + sum(ledger)).toBe(b.state.remaining);
        expect(ledger.at(-1)?.balanceAfter ?? opening).toBe(b.state.remaining);
      }
      expect(ledger.map((e) => e.kind)).toEqual(expect.arrayContaining(["spend", "reserve", "settle", "refund", "adjust"]));
    }
  });
});
