import { describe, expect, it } from "vitest";
import { type AgentBody, call, createAgent, expectProblem, provision, rows } from "../helpers";

describe("/v1/agents", () => {
  it("creates, lists, reads and updates agents with public ids", async () => {
    const { account, admin, key } = await provision();
    const agent = await createAgent(key.key, { name: "Help", allowedOrigins: ["https://shop.example", "http://localhost:5173"] });
    expect(agent).toEqual({
      id: expect.stringMatching(/^agt_[0-9a-f]{24}$/),
      name: "Help",
      allowedOrigins: ["https://shop.example", "http://localhost:5173"],
      tokenTtlSeconds: 3600,
      identitySecret: expect.stringMatching(/^idsec_[0-9a-f]{64}$/),
      disabled: false,
      createdAt: expect.any(String),
    });
    const { identitySecret: _, ...view } = agent;
    const second = await createAgent(key.key, { name: "Sales", tokenTtlSeconds: 86_400 });
    const list = await (await call("/v1/agents", { key: key.key })).json<{ data: AgentBody[]; nextCursor: null }>();
    expect(list.data.map((a) => a.id)).toEqual([second.id, agent.id]);
    expect(await (await call(`/v1/agents/${agent.id}`, { key: key.key })).json()).toEqual(view);

    const res = await call(`/v1/agents/${agent.id}`, {
      method: "PATCH",
      key: key.key,
      body: { allowedOrigins: ["https://new.example"], tokenTtlSeconds: 120 },
    });
    expect(await res.json()).toMatchObject({ allowedOrigins: ["https://new.example"], tokenTtlSeconds: 120, name: "Help" });
    expect(await rows("SELECT origin FROM agent_origins WHERE agent_id = ?", agent.id)).toEqual([{ origin: "https://new.example" }]);
    expect(
      await rows("SELECT action, actor FROM audit_events WHERE account_id = ? AND target = ? ORDER BY action", account.id, agent.id),
    ).toEqual([
      { action: "agent.created", actor: admin.id },
      { action: "agent.updated", actor: admin.id },
    ]);
  });

  it("accepts only exact origins: scheme, host and optional port", async () => {
    const { key } = await provision();
    const bad = [
      "https://shop.example/",
      "https://shop.example/path",
      "https://*.example.com",
      "*",
      "https://shop.example.",
      "http://shop.example",
      "https://Shop.Example",
      "https://shop.example:443",
      "https://user@shop.example",
      "shop.example",
      "ftp://shop.example",
      "null",
    ];
    for (const origin of bad) {
      const res = await call("/v1/agents", { key: key.key, body: { name: "x", allowedOrigins: [origin] } });
      const problem = await expectProblem(res, 400, "invalid_request");
      expect((problem.errors as { field: string }[])[0]?.field, origin).toBe("allowedOrigins[0]");
    }
    for (const allowedOrigins of [[], undefined, ["https://a.example", 5]]) {
      await expectProblem(await call("/v1/agents", { key: key.key, body: { name: "x", allowedOrigins } }), 400, "invalid_request");
    }
    for (const tokenTtlSeconds of [0, 59, 86_401, 1.5]) {
      await expectProblem(
        await call("/v1/agents", { key: key.key, body: { name: "x", allowedOrigins: ["https://a.example"], tokenTtlSeconds } }),
        400,
        "invalid_request",
      );
    }
    const ok = await createAgent(key.key, {
      allowedOrigins: ["https://shop.example:8443", "http://127.0.0.1:3000", "https://xn--bcher-kva.example"],
    });
    expect(ok.allowedOrigins).toHaveLength(3);
  });

  it("never brings back a removed origin when two edits race, and keeps the origin index in step", async () => {
    const { key } = await provision();
    for (let trial = 0; trial < 10; trial++) {
      const agent = await createAgent(key.key, { allowedOrigins: ["https://a.example", "https://b.example"] });
      const edit = (body: unknown) => call(`/v1/agents/${agent.id}`, { method: "PATCH", key: key.key, body });
      const results = await Promise.all([edit({ allowedOrigins: ["https://a.example"] }), edit({ name: `renamed ${trial}` })]);
      expect(results.map((r) => r.status)).toEqual([200, 200]);
      const stored = await (await call(`/v1/agents/${agent.id}`, { key: key.key })).json<AgentBody>();
      expect(stored).toMatchObject({ name: `renamed ${trial}`, allowedOrigins: ["https://a.example"] });
      expect(await rows("SELECT origin FROM agent_origins WHERE agent_id = ?", agent.id)).toEqual([{ origin: "https://a.example" }]);
    }
  });
});
