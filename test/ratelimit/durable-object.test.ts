import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

const policy = { limit: 3, windowSeconds: 10 };

describe("RateLimiter Durable Object", () => {
  it("counts in its own storage, so a new instance keeps the count", async () => {
    const stub = env.RATE_LIMITER.getByName("test:persist");
    expect((await stub.consume(policy)).remaining).toBe(2);
    expect((await stub.consume(policy)).remaining).toBe(1);
    await evictDurableObject(stub);
    const again = env.RATE_LIMITER.getByName("test:persist");
    expect(await again.consume(policy)).toMatchObject({ allowed: true, remaining: 0 });
    expect(await again.consume(policy)).toMatchObject({ allowed: false, remaining: 0 });
    const stored = await runInDurableObject(again, (_, state) => state.storage.sql.exec("SELECT count(*) AS n FROM hits").one());
    expect(stored.n).toBe(3);
  });

  it("rolls the window over with an injected clock and forgets what left it", async () => {
    const stub = env.RATE_LIMITER.getByName("test:clock");
    let now = 1_000_000;
    await runInDurableObject(stub, (instance) => {
      instance.clock = () => now;
    });
    for (let i = 0; i < 3; i++) expect((await stub.consume(policy)).allowed).toBe(true);
    const refused = await stub.consume(policy);
    expect(refused).toMatchObject({ allowed: false, retryAfter: 10 });
    now += 9_999;
    expect((await stub.consume(policy)).allowed).toBe(false);
    now += 1;
    // All three were admitted at the same instant, so all three left the window together.
    expect(await stub.consume(policy)).toMatchObject({ allowed: true, remaining: 2 });
    const stored = await runInDurableObject(stub, (_, state) => state.storage.sql.exec("SELECT count(*) AS n FROM hits").one());
    expect(stored.n).toBe(1);
  });

  it("gives back a refunded request", async () => {
    const stub = env.RATE_LIMITER.getByName("test:refund");
    const first = await stub.consume(policy);
    await stub.consume(policy);
    await stub.consume(policy);
    await stub.refund(first.at);
    expect((await stub.consume(policy)).remaining).toBe(0);
    expect((await stub.consume(policy)).allowed).toBe(false);
  });
});
