import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { PASSWORD, person } from "../dashboard/helpers";
import { GATEWAY } from "../gateway/table";
import { call, createKey, expectProblem, memberWithKey, OPERATOR_TOKEN, provision, rows, through, VERIFY_TOKEN } from "../helpers";

// A balance per person (`userCredits`): every key and session of theirs spends it, beside each key's own and the pool.

const ROUTES = [
  { pattern: "/v1/messages/*", credits: 1 },
  { pattern: "/v1/completions/*", credits: { reserve: 100, settle: true } },
  { pattern: "/*", access: "full" },
];
const gw = (path: string, key: string, headers: Record<string, string> = {}) =>
  through({ ...GATEWAY, GATEWAY_ROUTES: JSON.stringify(ROUTES), RATE_LIMIT_TIMEOUT_MS: "10000" }, path, { key, headers });

const balance = async (key: string, userId: string) => {
  const res = await call(`/v1/users/${userId}/credits`, { method: "GET", key });
  expect(res.status, await res.clone().text()).toBe(200);
  return ((await res.json()) as { remaining: number } | null)?.remaining;
};

/** An account giving each person `remaining` credits, its admin with two keys, and a member with one. */
async function people(remaining: number) {
  const provisioned = await provision({ userCredits: { remaining } });
  const admin = provisioned.key;
  const [one, two] = await Promise.all([createKey(admin.key), createKey(admin.key)]);
  const member = await memberWithKey(admin.key);
  return { accountId: provisioned.account.id, adminId: provisioned.admin.id, admin, one, two, member };
}

describe("a balance per person", () => {
  it("all of a person's keys spend one balance: 60 concurrent requests over two keys against 20 credits admit exactly 20", async () => {
    const { adminId, admin, one, two, member } = await people(20);
    const answers = await Promise.all(Array.from({ length: 60 }, (_, i) => gw("/v1/messages/send", (i % 2 ? one : two).key)));
    expect(answers.filter((r) => r.status === 200)).toHaveLength(20);
    const refused = answers.filter((r) => r.status === 402);
    expect(refused).toHaveLength(40);
    expect(await expectProblem(refused[0] as Response, 402, "credits_exhausted")).toMatchObject({ required: 1, remaining: 0 });
    expect(await balance(admin.key, adminId)).toBe(0);
    // Another person has a balance of their own, untouched.
    expect(await balance(admin.key, member.user.id)).toBe(20);
    const theirs = await gw("/v1/messages/send", member.key.key);
    expect(theirs.status).toBe(200);
    expect(theirs.headers.get("X-Credits-Remaining")).toBe("19");
    // Every credit that moved is in the ledger, the opening balance included, and the entries sum to the balance.
    await runDurableObjectAlarm(env.ACCOUNTS.getByName(`user:${adminId}`));
    const [sum] = await rows<{ total: number; spent: number }>(
      "SELECT sum(delta) AS total, sum(CASE WHEN kind = 'spend' THEN delta END) AS spent FROM credit_ledger WHERE user_id = ?",
      adminId,
    );
    expect(sum).toEqual({ total: 0, spent: -20 });
  });

  it("refused by the person's balance, the key's own credits and the pool spend nothing", async () => {
    const provisioned = await provision({ userCredits: { remaining: 2 }, credits: { remaining: 50 } });
    const key = await createKey(provisioned.key.key, { credits: { remaining: 10 } });
    expect((await gw("/v1/messages/a", key.key)).status).toBe(200);
    expect((await gw("/v1/messages/b", key.key)).status).toBe(200);
    await expectProblem(await gw("/v1/messages/c", key.key), 402, "credits_exhausted");
    const read = await call(`/v1/api-keys/${key.id}`, { method: "GET", key: provisioned.key.key });
    expect(await read.json()).toMatchObject({ credits: { remaining: 8 } });
    const account = await call("/v1/account", { method: "GET", key: provisioned.key.key });
    expect(await account.json()).toMatchObject({ credits: { remaining: 48 }, userCredits: { remaining: 2, refill: null } });
  });

  it("an admin adjusts a person's balance, audited and once per Idempotency-Key; members read only their own", async () => {
    const { accountId, adminId, admin, member } = await people(5);
    const adjust = (key: string, userId: string, body: unknown, idem = "adj-1") =>
      call(`/v1/users/${userId}/credits`, { key, body, headers: { "Idempotency-Key": idem } });
    const added = await adjust(admin.key, member.user.id, { operation: "add", amount: 10, reason: "support" });
    expect(added.status).toBe(200);
    expect(await added.json()).toMatchObject({ remaining: 15 });
    // The same change again applies once.
    expect(await (await adjust(admin.key, member.user.id, { operation: "add", amount: 10, reason: "support" })).json()).toMatchObject({
      remaining: 15,
    });
    await expectProblem(
      await adjust(admin.key, member.user.id, { operation: "subtract", amount: 99 }, "adj-2"),
      409,
      "credits_insufficient",
    );
    // A member may not adjust, not even their own, and sees no one else's balance.
    await expectProblem(await adjust(member.key.key, member.user.id, { operation: "add", amount: 1 }, "adj-3"), 403, "insufficient_role");
    expect(await balance(member.key.key, member.user.id)).toBe(15);
    await expectProblem(await call(`/v1/users/${adminId}/credits`, { method: "GET", key: member.key.key }), 404, "not_found");
    // Another account's person is not found.
    const other = await provision();
    await expectProblem(await call(`/v1/users/${member.user.id}/credits`, { method: "GET", key: other.key.key }), 404, "not_found");
    const audited = await rows("SELECT action, target FROM audit_events WHERE account_id = ? AND action LIKE 'user.credits%'", accountId);
    expect(audited).toEqual([{ action: "user.credits_add", target: member.user.id }]);
    // The ledger: the adjustment with its actor and reason, which the member reads as their own.
    await runDurableObjectAlarm(env.ACCOUNTS.getByName(`user:${member.user.id}`));
    const ledger = await call(`/v1/users/${member.user.id}/credits/ledger`, { method: "GET", key: member.key.key });
    expect(ledger.status).toBe(200);
    const { data } = (await ledger.json()) as { data: Record<string, unknown>[] };
    expect(data).toHaveLength(2);
    expect(data).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: "adjust", delta: 5, balanceAfter: 5, reason: "opening balance" }),
        expect.objectContaining({ kind: "adjust", delta: 10, balanceAfter: 15, actor: adminId, reason: "support" }),
      ]),
    );
    // Not the account pool's: its ledger has none of it.
    const pool = await call("/v1/account/credits/ledger", { method: "GET", key: admin.key });
    expect(((await pool.json()) as { data: unknown[] }).data).toEqual([]);
  });

  it("a reservation is settled in the person's balance too, through the API, and only for a person of the account named", async () => {
    const { accountId, adminId, admin, one } = await people(1000);
    const res = await gw("/v1/completions/stream", one.key);
    expect(res.status).toBe(200);
    const requestId = res.headers.get("X-Request-Id") as string;
    expect(await balance(admin.key, adminId)).toBe(900);
    const settle = (body: Record<string, unknown>) =>
      call("/v1/credits/settle", { headers: { Authorization: `Bearer ${VERIFY_TOKEN}` }, body: { requestId, used: 37, ...body } });
    const other = await provision();
    await expectProblem(await settle({ accountId: other.account.id, userId: adminId }), 404, "not_found");
    expect(await balance(admin.key, adminId)).toBe(900);
    expect(await (await settle({ accountId, keyId: one.id, userId: adminId })).json()).toEqual({ requestId, charged: 37, overrun: 0 });
    expect(await balance(admin.key, adminId)).toBe(963);
  });

  it("a plan gives each person of its accounts a balance, which the account's own setting overrides", async () => {
    const plan = await call("/v1/plans/per-seat", {
      method: "PUT",
      headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` },
      body: { name: "Per seat", rateLimits: [{ name: "minute", limit: 100, windowSeconds: 60 }], userCredits: { remaining: 3 } },
    });
    expect(plan.status).toBeLessThan(300);
    expect(await plan.json()).toMatchObject({ userCredits: { remaining: 3, refill: null } });
    const onPlan = await provision({ plan: "per-seat" });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await gw("/v1/messages/send", onPlan.key.key)).status);
    expect(statuses).toEqual([200, 200, 200, 402]);
    const own = await provision({ plan: "per-seat", userCredits: null });
    const change = await call(`/v1/accounts/${own.account.id}`, {
      method: "PATCH",
      headers: { Authorization: `Bearer ${OPERATOR_TOKEN}` },
      body: { userCredits: { remaining: 1 } },
    });
    expect(await change.json()).toMatchObject({ userCredits: { remaining: 1, refill: null } });
    expect((await gw("/v1/messages/send", own.key.key)).status).toBe(200);
    await expectProblem(await gw("/v1/messages/send", own.key.key), 402, "credits_exhausted");
  });

  it("a limit per person holds across their keys and their sessions together", async () => {
    const provisioned = await provision({
      rateLimits: [
        { name: "minute", limit: 1000, windowSeconds: 60 },
        { name: "person", limit: 4, windowSeconds: 60, shared: "user" },
      ],
    });
    const member = await person(provisioned.key.key);
    const key = await createKey(provisioned.key.key, { ownerId: member.id });
    const login = await call("/v1/auth/login", { body: { email: member.email, password: PASSWORD } });
    const { access_token } = await login.json<{ access_token: string }>();
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await call("/v1/whoami", { key: i % 2 ? key.key : access_token })).status);
    expect(statuses).toEqual([200, 200, 200, 200]);
    expect(await expectProblem(await call("/v1/whoami", { key: access_token }), 429, "rate_limited")).toMatchObject({ limit: "person" });
    await expectProblem(await call("/v1/whoami", { key: key.key }), 429, "rate_limited");
    // The admin is another person: the member's use takes nothing of theirs.
    expect((await call("/v1/whoami", { key: provisioned.key.key })).status).toBe(200);
  });
});
