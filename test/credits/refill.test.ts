import { describe, expect, it } from "vitest";
import { nextBoundary, type Refill, refilled } from "../../src/core/credits";

const at = (iso: string) => Date.parse(iso);

describe("credit refills (pure, UTC)", () => {
  it("fall on the top of the hour, at midnight, and at midnight of the plan's day of the month", () => {
    expect(nextBoundary(at("2026-03-10T10:15:00Z"), { interval: "hour" })).toBe(at("2026-03-10T11:00:00Z"));
    expect(nextBoundary(at("2026-03-10T11:00:00Z"), { interval: "hour" })).toBe(at("2026-03-10T12:00:00Z"));
    expect(nextBoundary(at("2026-03-10T23:59:59Z"), { interval: "day" })).toBe(at("2026-03-11T00:00:00Z"));
    expect(nextBoundary(at("2026-03-10T10:00:00Z"), { interval: "month" })).toBe(at("2026-04-01T00:00:00Z"));
    expect(nextBoundary(at("2026-03-10T10:00:00Z"), { interval: "month", dayOfMonth: 15 })).toBe(at("2026-03-15T00:00:00Z"));
    expect(nextBoundary(at("2026-03-15T00:00:00Z"), { interval: "month", dayOfMonth: 15 })).toBe(at("2026-04-15T00:00:00Z"));
    // Across a year's end, and a February (28 is the last day every month has).
    expect(nextBoundary(at("2026-12-28T00:00:00Z"), { interval: "month", dayOfMonth: 28 })).toBe(at("2027-01-28T00:00:00Z"));
    expect(nextBoundary(at("2027-01-28T00:00:01Z"), { interval: "month", dayOfMonth: 28 })).toBe(at("2027-02-28T00:00:00Z"));
  });

  const monthlySet: Refill = { amount: 100, interval: "month", mode: "set" };
  const monthlyAdd: Refill = { amount: 100, interval: "month", mode: "add" };

  it("apply three months without traffic as one set, or as three adds, each a ledger entry that sums to the balance", () => {
    const since = at("2026-01-20T00:00:00Z");
    const now = at("2026-04-20T00:00:00Z");
    expect(refilled(7, monthlySet, since, now)).toEqual({
      balance: 100,
      entries: [{ at: at("2026-04-01T00:00:00Z"), delta: 93, balanceAfter: 100 }],
    });
    const added = refilled(7, monthlyAdd, since, now);
    expect(added.entries.map((e) => new Date(e.at).toISOString())).toEqual([
      "2026-02-01T00:00:00.000Z",
      "2026-03-01T00:00:00.000Z",
      "2026-04-01T00:00:00.000Z",
    ]);
    expect(added.balance).toBe(307);
    expect(7 + added.entries.reduce((n, e) => n + e.delta, 0)).toBe(added.balance);
  });

  it("apply each boundary exactly once, however the time since is split into judgements", () => {
    const refills: Refill[] = [
      { amount: 5, interval: "hour", mode: "add" },
      { amount: 50, interval: "day", mode: "set" },
      { amount: 1000, interval: "month", mode: "add", dayOfMonth: 28 },
    ];
    const start = at("2026-01-30T07:13:00Z");
    const end = at("2026-05-02T09:00:00Z");
    for (const refill of refills) {
      const once = refilled(3, refill, start, end);
      // The same span judged at 40 random instants (seeded), the balance carried from one to the next.
      let balance = 3;
      let since = start;
      const entries = [];
      let seed = 7;
      const cuts = Array.from({ length: 40 }, () => {
        seed = (seed * 48271) % 2147483647;
        return start + (seed / 2147483647) * (end - start);
      });
      // And judgements exactly on boundaries of each interval: a boundary belongs to the interval it ends.
      cuts.push(at("2026-02-28T00:00:00Z"), at("2026-03-01T00:00:00Z"), at("2026-03-28T00:00:00Z"), at("2026-04-01T05:00:00Z"));
      cuts.sort((a, b) => a - b);
      for (const t of [...cuts, end]) {
        const step = refilled(balance, refill, since, t);
        balance = step.balance;
        entries.push(...step.entries);
        since = t;
      }
      expect(balance).toBe(once.balance);
      if (refill.mode === "add") expect(entries).toEqual(once.entries);
      expect(3 + entries.reduce((n, e) => n + e.delta, 0)).toBe(balance);
    }
  });

  it("change nothing before the first boundary, and nothing without a refill", () => {
    expect(refilled(4, monthlyAdd, at("2026-03-02T00:00:00Z"), at("2026-03-31T23:59:59Z"))).toEqual({ balance: 4, entries: [] });
    expect(refilled(4, null, 0, at("2030-01-01T00:00:00Z"))).toEqual({ balance: 4, entries: [] });
    // A set that finds the balance already full writes no entry.
    expect(refilled(100, monthlySet, at("2026-03-02T00:00:00Z"), at("2026-05-02T00:00:00Z"))).toEqual({ balance: 100, entries: [] });
  });
});
