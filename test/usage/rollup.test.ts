import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { type KeyHour, UsageRollup } from "../../src/counters/rollup";

const HOUR = 3_600_000;

/** A small deterministic generator, so a failure can be run again. */
function random(seed: number) {
  let s = seed;
  return () => {
    s = (s * 1_103_515_245 + 12_345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

describe("an account's usage rollup", () => {
  it("answers every range, aligned to days or not, exactly as the keys' latest copies sum, whatever order the copies came in", async () => {
    const rand = random(20);
    const now = Date.parse("2026-12-03T08:30:00.000Z");
    const start = Date.parse("2026-11-29T00:00:00.000Z");
    const keys = ["key_a", "key_b", "key_c", "key_d"];
    // Every copy each key's object sent: several revisions of each hour, delivered shuffled and some twice.
    const sent: KeyHour[] = [];
    for (const keyId of keys)
      for (let h = 0; h < 4 * 24; h += 1 + Math.floor(rand() * 3)) {
        const hour = new Date(start + h * HOUR).toISOString();
        for (let rev = 1; rev <= 1 + Math.floor(rand() * 3); rev++)
          sent.push({
            keyId,
            hour,
            admitted: Math.floor(rand() * 100),
            rateLimited: Math.floor(rand() * 5),
            creditsSpent: Math.floor(rand() * 20) - 3,
            rev,
          });
      }
    const delivered = [...sent, ...sent.filter(() => rand() < 0.2)].sort(() => rand() - 0.5);
    // What the keys counted: each hour's copy of the highest revision.
    const latest = new Map<string, KeyHour>();
    for (const c of sent) {
      const k = `${c.keyId} ${c.hour}`;
      if ((latest.get(k)?.rev ?? 0) < c.rev) latest.set(k, c);
    }

    const ranges: [string, string][] = [
      ["2026-11-29T00:00:00.000Z", "2026-12-03T00:00:00.000Z"],
      ["2026-11-29T05:00:00.000Z", "2026-12-02T17:00:00.000Z"],
      ["2026-11-30T13:00:00.000Z", "2026-11-30T20:00:00.000Z"],
      ["2026-11-30T00:00:00.000Z", "2026-12-01T09:00:00.000Z"],
      ["2026-11-28T22:00:00.000Z", "2026-12-04T00:00:00.000Z"],
    ];
    await runInDurableObject(env.ACCOUNTS.getByName(`rollup:${crypto.randomUUID()}`), (_, state) => {
      const rollup = new UsageRollup(state.storage.sql);
      for (let i = 0; i < delivered.length; i += 25) rollup.record(delivered.slice(i, i + 25), now);
      // Read again by a fresh instance (an object woken after eviction) as well.
      for (const reader of [rollup, new UsageRollup(state.storage.sql)])
        for (const [from, to] of ranges)
          for (const only of [null, ["key_b", "key_d"]]) {
            const inRange = [...latest.values()].filter((c) => c.hour >= from && c.hour < to && (only === null || only.includes(c.keyId)));
            const byHour = new Map<string, { admitted: number; rateLimited: number; creditsSpent: number }>();
            const byKey = new Map<string, { admitted: number; rateLimited: number; creditsSpent: number }>();
            for (const c of inRange)
              for (const [map, k] of [
                [byHour, c.hour],
                [byKey, c.keyId],
              ] as const) {
                const t = map.get(k) ?? { admitted: 0, rateLimited: 0, creditsSpent: 0 };
                map.set(k, {
                  admitted: t.admitted + c.admitted,
                  rateLimited: t.rateLimited + c.rateLimited,
                  creditsSpent: t.creditsSpent + c.creditsSpent,
                });
              }
            const series = [...byHour].map(([hour, t]) => ({ hour, ...t })).sort((a, b) => a.hour.localeCompare(b.hour));
            const totals = [...byKey].map(([keyId, t]) => ({ keyId, ...t })).sort((a, b) => a.keyId.localeCompare(b.keyId));
            expect(reader.series(from, to, only), `${from} ${to} ${only}`).toEqual(series);
            expect(reader.totals(from, to, only), `${from} ${to} ${only}`).toEqual(totals);
          }
    });
  });
});
