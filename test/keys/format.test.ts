import { describe, expect, it } from "vitest";
import { generateKey, hashKey, parseKey } from "../../src/core/ids";

describe("key format", () => {
  it("is the prefix, an underscore and 64 lowercase hex characters, unique over many draws", () => {
    const keys = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const key = generateKey("rm");
      expect(key).toMatch(/^rm_[0-9a-f]{64}$/);
      // "rm_" + 64 hex = 67 characters (Robotomail documents 68, which its own format cannot produce).
      expect(key).toHaveLength(67);
      keys.add(key);
    }
    expect(keys.size).toBe(10_000);
  });

  it("uses every hex digit about equally often: 256 random bits, not a biased encoding", () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 2_000; i++) for (const ch of generateKey("sk").slice(3)) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect(counts.size).toBe(16);
    // 128,000 digits: each expected 8,000 times; 5% tolerance is far beyond chance for a uniform source.
    for (const n of counts.values()) expect(Math.abs(n - 8_000)).toBeLessThan(400);
  });

  it("parses only the key shape and reads the display start", () => {
    const key = `rpakey_${"ab12".repeat(16)}`;
    expect(parseKey(key)).toEqual({ prefix: "rpakey", start: "ab12ab12" });
    for (const bad of [
      "",
      "sk_",
      `sk_${"a".repeat(63)}`,
      `sk_${"a".repeat(65)}`,
      `SK_${"a".repeat(64)}`,
      `sk_${"A".repeat(64)}`,
      `s_${"a".repeat(64)}`,
      `1k_${"a".repeat(64)}`,
      `sk-${"a".repeat(64)}`,
      ` sk_${"a".repeat(64)}`,
    ]) {
      expect(parseKey(bad), bad).toBeNull();
    }
  });

  it("hashes with SHA-256 over the whole key", async () => {
    expect(await hashKey("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});
