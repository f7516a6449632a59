import { describe, expect, it } from "vitest";
import { callWith, createAgent, expectProblem, provision, WIDGET_ORIGIN } from "./helpers";

// Every variable Keygate reads, a value it must refuse and one it must accept.
const table: [string, string, string][] = [
  ["OPERATOR_TOKEN", "too-short", "x".repeat(32)],
  ["RESOURCE_TYPES", "mailbox,Bad Type", "mailbox, process"],
  ["KEY_PREFIX_NAMESPACE", "Acme-Keys", "acme9"],
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
    it(`${name}: /health names it when it is ${JSON.stringify(bad)} (never the value), and accepts ${JSON.stringify(good)}`, async () => {
      const res = await callWith({ [name]: bad }, "/health");
      const problem = await expectProblem(res, 500, "configuration_error");
      expect(problem.variables).toEqual([name]);
      if (bad.length > 4) expect(JSON.stringify(problem)).not.toContain(bad);
      expect((await callWith({ [name]: good }, "/health")).status).toBe(200);
    });
  }

  it("fails only the routes that need a malformed variable, and logs its name, never its value", async () => {
    const { key } = await provision();
    const agent = await createAgent(key.key);
    const broken = { HANDSHAKE_AGENT_RATE_LIMIT: "lots", CHAT_RATE_LIMIT: "many/minute" };
    expect((await callWith(broken, "/v1/whoami", { key: key.key })).status).toBe(200);
    const lines: string[] = [];
    const error = console.error;
    console.error = (line: string) => lines.push(line);
    try {
      const res = await callWith(broken, "/v1/handshake", { headers: { Origin: WIDGET_ORIGIN }, body: { agentId: agent.id } });
      await expectProblem(res, 500, "configuration_error");
    } finally {
      console.error = error;
    }
    expect(lines.map((l) => JSON.parse(l))).toEqual([
      expect.objectContaining({ event: "configuration_error", variable: "HANDSHAKE_AGENT_RATE_LIMIT" }),
    ]);
    expect(lines.join()).not.toContain("lots");
  });
});
