import { describe, expect, it } from "vitest";
import { callWith, expectProblem } from "./helpers";

// Every variable Keygate reads, a value it must refuse and one it must accept.
const table: [string, string, string][] = [
  ["OPERATOR_TOKEN", "too-short", "x".repeat(32)],
  ["RESOURCE_TYPES", "mailbox,Bad Type", "mailbox, process"],
  ["QUERY_TOKEN_SUNSET", "someday", "2030-01-01T00:00:00Z"],
  ["QUERY_TOKEN_DEPRECATED_AT", "2026-13-45", "2026-01-01"],
  ["ALLOW_HTTP", "yes", "true"],
  ["RATE_LIMIT_FAILURE_MODE", "sometimes", "open"],
  ["RATE_LIMIT_TIMEOUT_MS", "0", "250"],
  ["D1_TIMEOUT_MS", "60001", "60000"],
  ["IP_FAILURE_RATE_LIMIT", "30", "30/60"],
  ["JWT_SIGNING_KEYS", '[{"kid":"a","secret":"short"}]', JSON.stringify([{ kid: "a", secret: "s".repeat(32) }])],
  ["HANDSHAKE_AGENT_RATE_LIMIT", "0/60", "1/1"],
  ["HANDSHAKE_IP_RATE_LIMIT", "20/86401", "20/86400"],
  ["HANDSHAKE_USER_RATE_LIMIT", "1000001/60", "1000000/60"],
  ["CHAT_RATE_LIMIT", "x/y", "30/60"],
  ["DEMO_API_ORIGINS", "https://api.example.com/path", "https://api.example.com,http://localhost:8787"],
];

describe("configuration", () => {
  for (const [name, bad, good] of table) {
    it(`${name}: refuses ${JSON.stringify(bad)} naming the variable (never its value), accepts ${JSON.stringify(good)}`, async () => {
      const lines: string[] = [];
      const error = console.error;
      console.error = (line: string) => lines.push(line);
      try {
        await expectProblem(await callWith({ [name]: bad }, "/health"), 500, "configuration_error");
      } finally {
        console.error = error;
      }
      expect(lines.map((l) => JSON.parse(l))).toEqual([expect.objectContaining({ event: "configuration_error", variable: name })]);
      if (bad.length > 4) expect(lines.join()).not.toContain(bad);
      expect((await callWith({ [name]: good }, "/health")).status).toBe(200);
    });
  }
});
