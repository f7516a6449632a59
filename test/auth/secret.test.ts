// The recogniser runs on every header, cookie, query parameter and path the gateway forwards, before any credential
// is checked on a public route: its cost must not grow faster than the text a client sends.
import { expect, it } from "vitest";
import { carriesSecret } from "../../src/guards/secret";

it("reads 64 KB of text that looks like the start of many tokens in linear time", () => {
  const text = "eyJ".repeat(64_000 / 3);
  const started = performance.now();
  expect(carriesSecret(text, ["operator-token-0123456789abcdef0123"])).toBe(false);
  // Quadratic scanning took about 700 ms here; linear takes about 10.
  expect(performance.now() - started).toBeLessThan(150);
});
