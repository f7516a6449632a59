import { describe, expect, it } from "vitest";
import { call, expectProblem, OPERATOR_TOKEN, provision, rows } from "../helpers";

const operator = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const free = {
  name: "Free",
  rateLimits: [
    { name: "minute", limit: 10, windowSeconds: 60 },
    { name: "day", limit: 100, windowSeconds: 86_400 },
  ],
};
let n = 0;
const planId = () => `plan-${++n}-${crypto.randomUUID().slice(0, 8)}`;

describe("plans (operator)", () => {
  it("creates a plan with PUT, replaces it with the next, and lists it with how many accounts are on it", async () => {
    const id = planId();
    const created = await call(`/v1/plans/${id}`, { method: "PUT", headers: operator, body: free });
    expect(created.status).toBe(201);
    expect(await created.json()).toMatchObject({ id, ...free, accounts: 0 });

    const pro = { name: "Pro", rateLimits: [{ name: "second", limit: 100, windowSeconds: 1 }] };
    const replaced = await call(`/v1/plans/${id}`, { method: "PUT", headers: operator, body: pro });
    expect(replaced.status).toBe(200);
    const body = await replaced.json<{ createdAt: string; updatedAt: string }>();
    expect(body).toMatchObject({ id, ...pro, accounts: 0 });
    expect(body.updatedAt >= body.createdAt).toBe(true);

    await provision({ plan: id });
    await provision({ plan: id });
    const one = await call(`/v1/plans/${id}`, { headers: operator });
    expect(await one.json()).toMatchObject({ id, name: "Pro", accounts: 2 });
    const list = await call("/v1/plans", { headers: operator });
    expect(list.status).toBe(200);
    const { data } = await list.json<{ data: { id: string; accounts: number }[] }>();
    expect(data.find((p) => p.id === id)).toMatchObject({ accounts: 2 });
    expect(data.map((p) => p.id)).toEqual([...data.map((p) => p.id)].sort());
  });

  it("creates a plan once when two PUTs race, the other replacing it", async () => {
    const id = planId();
    const answers = await Promise.all([free, free].map((body) => call(`/v1/plans/${id}`, { method: "PUT", headers: operator, body })));
    expect(answers.map((r) => r.status).sort()).toEqual([200, 201]);
    expect(await rows("SELECT id FROM plans WHERE id = ?", id)).toHaveLength(1);
  });

  it("answers 400 with field errors and stores nothing for limits it cannot sell", async () => {
    const bad = [
      { name: "x", rateLimits: [] },
      { name: "x", rateLimits: Array.from({ length: 9 }, (_, i) => ({ name: `l${i}`, limit: 1, windowSeconds: 1 })) },
      { name: "x", rateLimits: [{ name: "Minute", limit: 1, windowSeconds: 60 }] },
      {
        name: "x",
        rateLimits: [
          { name: "m", limit: 1, windowSeconds: 60 },
          { name: "m", limit: 2, windowSeconds: 60 },
        ],
      },
      { name: "x", rateLimits: [{ name: "m", limit: 0, windowSeconds: 60 }] },
      { name: "x", rateLimits: [{ name: "m", limit: 1, windowSeconds: 60 }], credits: 5 },
      { rateLimits: [{ name: "m", limit: 1, windowSeconds: 60 }] },
    ];
    for (const body of bad) {
      const id = planId();
      const res = await call(`/v1/plans/${id}`, { method: "PUT", headers: operator, body });
      const problem = await expectProblem(res, 400, "invalid_request");
      expect(Array.isArray(problem.errors)).toBe(true);
      expect(await rows("SELECT id FROM plans WHERE id = ?", id)).toEqual([]);
    }
    const badId = await call("/v1/plans/Not%20An%20Id", { method: "PUT", headers: operator, body: free });
    await expectProblem(badId, 400, "invalid_request");
  });

  it("is the operator's alone: no token 401, a wrong one 401, an account's admin key 401", async () => {
    const { key } = await provision();
    const id = planId();
    await expectProblem(await call(`/v1/plans/${id}`, { method: "PUT", body: free }), 401, "missing_credentials");
    await expectProblem(
      await call(`/v1/plans/${id}`, { method: "PUT", headers: { Authorization: "Bearer wrong" }, body: free }),
      401,
      "invalid_operator_token",
    );
    await expectProblem(await call("/v1/plans", { key: key.key }), 401, "invalid_operator_token");
    expect(await rows("SELECT id FROM plans WHERE id = ?", id)).toEqual([]);
    await expectProblem(await call("/v1/plans/none-such", { headers: operator }), 404, "not_found");
  });

  it("puts an account on a plan when it is provisioned, and refuses a plan that does not exist", async () => {
    const id = planId();
    await call(`/v1/plans/${id}`, { method: "PUT", headers: operator, body: free });
    const { account } = await provision({ plan: id });
    expect(account).toMatchObject({ plan: id });
    const res = await call("/v1/accounts", {
      headers: operator,
      body: { name: "Nope", plan: "no-such-plan", admin: { email: "x@nope.com" } },
    });
    const problem = await expectProblem(res, 400, "invalid_request");
    expect(problem.errors).toEqual([{ field: "plan", message: expect.stringContaining("not a plan") }]);
    expect(await rows("SELECT id FROM accounts WHERE name = 'Nope'")).toEqual([]);
  });

  it("moves an account onto a plan and off it with the operator's PATCH, refusing a plan that does not exist", async () => {
    const id = planId();
    await call(`/v1/plans/${id}`, { method: "PUT", headers: operator, body: free });
    const { account } = await provision();
    const patch = (body: unknown) => call(`/v1/accounts/${account.id}`, { method: "PATCH", headers: operator, body });
    const on = await patch({ plan: id });
    expect(on.status).toBe(200);
    expect(await on.json()).toMatchObject({ id: account.id, plan: id });
    expect(await rows("SELECT plan_id FROM accounts WHERE id = ?", account.id)).toEqual([{ plan_id: id }]);
    const unknown = await patch({ plan: "no-such-plan" });
    await expectProblem(unknown, 400, "invalid_request");
    expect(await rows("SELECT plan_id FROM accounts WHERE id = ?", account.id)).toEqual([{ plan_id: id }]);
    const off = await patch({ plan: null });
    expect(await off.json()).toMatchObject({ plan: null });
    expect(await rows("SELECT plan_id FROM accounts WHERE id = ?", account.id)).toEqual([{ plan_id: null }]);
  });

  it("gives the keys of an account on a plan its limits, unless the account or the key sets its own; a plan's change reaches them", async () => {
    const id = planId();
    await call(`/v1/plans/${id}`, { method: "PUT", headers: operator, body: free });
    const { key, account } = await provision({ plan: id });
    const policy = async (k: string) => (await call("/v1/whoami", { key: k })).headers.get("RateLimit-Policy");
    expect(await policy(key.key)).toBe('"minute";q=10;w=60, "day";q=100;w=86400');

    // The plan changes: the account's keys have its new limits right after the answer.
    await call(`/v1/plans/${id}`, {
      method: "PUT",
      headers: operator,
      body: { name: "Free", rateLimits: [{ name: "hour", limit: 50, windowSeconds: 3600 }] },
    });
    await expect.poll(() => policy(key.key), { timeout: 2000 }).toBe('"hour";q=50;w=3600');

    // A key's own limits win over the plan's.
    const own = await call("/v1/api-keys", { key: key.key, body: { name: "own", rateLimit: { limit: 7, windowSeconds: 60 } } });
    expect(own.status).toBe(201);
    expect(await policy((await own.json<{ key: string }>()).key)).toBe('"default";q=7;w=60');

    // An account provisioned with its own limits keeps them on a plan; off a plan, an account falls back to its default.
    const mine = await provision({ plan: id, rateLimits: [{ name: "burst", limit: 5, windowSeconds: 1 }] });
    expect(await policy(mine.key.key)).toBe('"burst";q=5;w=1');
    await call(`/v1/accounts/${account.id}`, { method: "PATCH", headers: operator, body: { plan: null } });
    expect(await policy(key.key)).toBe('"default";q=60;w=60');
  });
});
