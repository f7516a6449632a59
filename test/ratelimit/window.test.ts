import { describe, expect, it } from "vitest";
import { decide, type Policy } from "../../src/core/window";

/** Drives the pure decision with an injected clock, keeping the log as the Durable Object does. */
function limiter(policy: Policy) {
  const log: number[] = [];
  return (now: number) => {
    const d = decide(log, now, policy);
    if (d.allowed) log.push(now);
    return d;
  };
}

describe("sliding-log window", () => {
  it("admits `limit` requests, then refuses with the exact wait", () => {
    const hit = limiter({ limit: 60, windowSeconds: 60 });
    const t0 = 1_700_000_000_000;
    for (let i = 0; i < 60; i++) {
      const d = hit(t0 + i * 100);
      expect(d).toMatchObject({ allowed: true, limit: 60, remaining: 59 - i });
      expect(d.resetAt).toBe(t0 + i * 100 + 60_000);
    }
    const refused = hit(t0 + 6_000);
    expect(refused).toMatchObject({ allowed: false, remaining: 0, retryAfter: 54 });
    expect(refused.resetAt).toBe(t0 + 5_900 + 60_000);
  });

  it("rolls over: each request frees its slot exactly one window after it was admitted", () => {
    const hit = limiter({ limit: 2, windowSeconds: 10 });
    expect(hit(0).allowed).toBe(true);
    expect(hit(4_000).allowed).toBe(true);
    expect(hit(9_999)).toMatchObject({ allowed: false, retryAfter: 1 });
    expect(hit(10_000)).toMatchObject({ allowed: true, remaining: 0 });
    expect(hit(13_999)).toMatchObject({ allowed: false, retryAfter: 1 });
    expect(hit(14_000).allowed).toBe(true);
  });

  it("never tells a client to come back before it would be admitted", () => {
    const hit = limiter({ limit: 3, windowSeconds: 7 });
    let now = 0;
    let admitted = 0;
    while (admitted < 50) {
      const d = hit(now);
      if (d.allowed) {
        admitted += 1;
        now += 137;
      } else {
        // One millisecond before the advertised time is still too early; the advertised time works.
        expect(hit(now + d.retryAfter * 1000).allowed).toBe(true);
        admitted += 1;
        now += d.retryAfter * 1000;
      }
    }
  });

  it("never admits more than `limit` in any window, whatever the arrival pattern", () => {
    let seed = 42;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (const policy of [
      { limit: 5, windowSeconds: 1 },
      { limit: 60, windowSeconds: 60 },
    ]) {
      const hit = limiter(policy);
      const admitted: number[] = [];
      let now = 0;
      for (let i = 0; i < 5_000; i++) {
        now += Math.floor(random() * random() * 3_000);
        if (hit(now).allowed) admitted.push(now);
      }
      const w = policy.windowSeconds * 1000;
      for (let i = 0; i + policy.limit < admitted.length; i++) {
        // The request `limit` places later must be a full window after this one.
        expect((admitted[i + policy.limit] as number) - (admitted[i] as number)).toBeGreaterThanOrEqual(w);
      }
      expect(admitted.length).toBeGreaterThan(policy.limit);
    }
  });
});
