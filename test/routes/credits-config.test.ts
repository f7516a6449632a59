import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { CreditsConfig } from "../../src/core/credits";
import { call, createKey, expectProblem, memberWithKey, OPERATOR_TOKEN, provision, rows } from "../helpers";

// Credits and shared limits as keys, accounts and plans are given them: what each route accepts, what D1 keeps, what
// reads show, and what the keys' objects are told.

const operator = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const monthly = { remaining: 500, refill: { amount: 500, interval: "month", mode: "set", dayOfMonth: 15 } } as const;
const daily = { remaining: 20, refill: { amount: 20, interval: "day", mode: "add" } } as const;
const hourly = { remaining: 7, refill: { amount: 3, interval: "hour", mode: "add" } } as const;

/** The next 00:00 UTC on the 15th after now: the next refill of `monthly`. */
function next15th(): string {
  const d = new Date();
  const thisMonth = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 15);
  return new Date(thisMonth > d.getTime() ? thisMonth : Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 15)).toISOString();
}
const nextMidnight = () => new Date(Math.floor(Date.now() / DAY) * DAY + DAY).toISOString();
const nextHour = () => new Date(Math.floor(Date.now() / HOUR) * HOUR + HOUR).toISOString();

/** A column of one row as D1 holds it, JSON parsed. */
async function stored(table: "api_keys" | "accounts" | "plans", column: string, id: string): Promise<unknown> {
  const [row] = await rows<Record<string, string | null>>(`SELECT ${column} AS v FROM ${table} WHERE id = ?`, id);
  expect(row, `${table} ${id}`).toBeDefined();
  return row?.v == null ? null : JSON.parse(row.v);
}

/** The principal the key's object answers with now, asked by a call that spends nothing. */
async function principalOf(keyId: string) {
  const tag = { id: crypto.randomUUID(), deadline: Date.now() + 10_000 };
  const answer = await env.KEYS.getByName(`key:${keyId}`).authorize({ keyId, method: "bearer", need: "any", tag, cost: 0 });
  if (!answer.ok) throw new Error("the object refused the key");
  return answer.principal;
}

const INTEGER = "must be an integer from 0 to 1000000000000";
const AMOUNT = "must be an integer from 1 to 1000000000000";
const DAY_OF_MONTH = "must be an integer from 1 to 28";

/** Bodies' credits that no route accepts, each with the one field its 400 names and why. */
const BAD_CREDITS: [unknown, string, string][] = [
  [5, "credits", "must be an object"],
  [{ remaining: -1 }, "credits.remaining", INTEGER],
  [{ remaining: 1.5 }, "credits.remaining", INTEGER],
  [{ remaining: 1_000_000_000_001 }, "credits.remaining", INTEGER],
  [{ remaining: "10" }, "credits.remaining", INTEGER],
  [{ refill: daily.refill }, "credits.remaining", INTEGER],
  [{ remaining: 10, extra: true }, "credits.extra", "is not a known field"],
  [{ remaining: null, refill: daily.refill }, "credits.refill", "needs a number in remaining: an unlimited balance has nothing to refill"],
  [{ remaining: 10, refill: { ...daily.refill, amount: 0 } }, "credits.refill.amount", AMOUNT],
  [{ remaining: 10, refill: { ...daily.refill, interval: "week" } }, "credits.refill.interval", "must be one of: hour, day, month"],
  [{ remaining: 10, refill: { ...daily.refill, mode: "reset" } }, "credits.refill.mode", "must be one of: set, add"],
  [{ remaining: 10, refill: { ...daily.refill, dayOfMonth: 3 } }, "credits.refill.dayOfMonth", "is only for interval month"],
  [{ remaining: 10, refill: { ...monthly.refill, dayOfMonth: 29 } }, "credits.refill.dayOfMonth", DAY_OF_MONTH],
  [{ remaining: 10, refill: { ...monthly.refill, dayOfMonth: 0 } }, "credits.refill.dayOfMonth", DAY_OF_MONTH],
];

/** Asserts a 400 that names exactly this one field, for this reason. */
async function refused(res: Response, field: string, message: string): Promise<void> {
  const problem = await expectProblem(res, 400, "invalid_request");
  expect(problem.errors).toEqual([{ field, message }]);
}

describe("a key's credits", () => {
  it("are stored as sent and shown with the next refill; none sent or null is none", async () => {
    const { key } = await provision();
    const created = await createKey(key.key, { credits: monthly });
    const view = { ...monthly, nextRefillAt: next15th() };
    expect(created).toMatchObject({ credits: view });
    expect(await stored("api_keys", "credits", created.id)).toEqual(monthly);
    expect(await (await call(`/v1/api-keys/${created.id}`, { key: key.key })).json()).toMatchObject({ credits: view });
    const list = await (await call("/v1/api-keys", { key: key.key })).json<{ data: { id: string; credits: unknown }[] }>();
    expect(list.data.find((k) => k.id === created.id)?.credits).toEqual(view);

    // A monthly refill without its day comes on the 1st.
    const firstOfMonth = { remaining: 9, refill: { amount: 9, interval: "month", mode: "add" } };
    const d = new Date();
    const nextFirst = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)).toISOString();
    expect(await createKey(key.key, { credits: firstOfMonth })).toMatchObject({ credits: { ...firstOfMonth, nextRefillAt: nextFirst } });

    // No refill: never refilled, and nothing to wait for.
    const fixed = await createKey(key.key, { credits: { remaining: 0 } });
    expect(fixed).toMatchObject({ credits: { remaining: 0, refill: null, nextRefillAt: null } });
    expect(await stored("api_keys", "credits", fixed.id)).toEqual({ remaining: 0, refill: null });

    for (const credits of [undefined, null]) {
      const plain = await createKey(key.key, credits === undefined ? {} : { credits });
      expect(plain).toMatchObject({ credits: null });
      expect(await stored("api_keys", "credits", plain.id)).toBeNull();
    }
    // The key's object has them for the lead's balance to open with.
    expect((await principalOf(created.id)).credits).toEqual({ key: monthly, account: null, user: null });
  });

  it("answers 400 naming the field for credits it cannot hold, or a shared limit, and stores no key", async () => {
    const { account, key } = await provision();
    const keys = async () => rows("SELECT id FROM api_keys WHERE account_id = ?", account.id);
    const before = await keys();
    for (const [credits, field, message] of BAD_CREDITS)
      await refused(await call("/v1/api-keys", { key: key.key, body: { name: "x", credits } }), field, message);
    const shared = await call("/v1/api-keys", {
      key: key.key,
      body: {
        name: "x",
        rateLimits: [
          { name: "minute", limit: 10, windowSeconds: 60 },
          { name: "day", limit: 100, windowSeconds: 86_400, shared: "account" },
        ],
      },
    });
    await refused(shared, "rateLimits[1].shared", "a key's own limits cannot be shared: shared limits belong to the account or its plan");
    expect(await keys()).toEqual(before);
  });

  it("may be set by a member creating a key: they only restrict it", async () => {
    const { key } = await provision({ membersCanCreateKeys: true });
    const member = await memberWithKey(key.key);
    const res = await call("/v1/api-keys", { key: member.key.key, body: { name: "metered", credits: daily } });
    expect(res.status).toBe(201);
    const body = await res.json<{ id: string; ownerId: string }>();
    expect(body).toMatchObject({ ownerId: member.user.id, credits: { ...daily, nextRefillAt: nextMidnight() } });
    expect(await stored("api_keys", "credits", body.id)).toEqual(daily);
  });

  it("come with a rotation unless it sends its own; null leaves the new key none", async () => {
    const { key } = await provision();
    const rotate = async (id: string, body: Record<string, unknown>) => {
      const res = await call(`/v1/api-keys/${id}/rotate`, { key: key.key, body });
      expect(res.status, await res.clone().text()).toBe(201);
      return res.json<{ id: string; credits: unknown; rotatedFrom: string }>();
    };
    const old = await createKey(key.key, { credits: monthly });
    const kept = await rotate(old.id, {});
    expect(kept).toMatchObject({ rotatedFrom: old.id, credits: { ...monthly, nextRefillAt: next15th() } });
    // The new key opens empty and the old key's balance moves over: a rotation never refills a key.
    expect(await stored("api_keys", "credits", kept.id)).toEqual({ ...monthly, remaining: 0 });
    expect(await env.KEYS.getByName(`key:${old.id}`).credits(old.id)).toMatchObject({ remaining: 0 });
    expect(await env.KEYS.getByName(`key:${kept.id}`).credits(kept.id)).toMatchObject({ remaining: monthly.remaining });

    const replaced = await rotate(kept.id, { credits: hourly });
    expect(replaced.credits).toEqual({ ...hourly, nextRefillAt: nextHour() });
    expect(await stored("api_keys", "credits", replaced.id)).toEqual(hourly);

    const cleared = await rotate(replaced.id, { credits: null });
    expect(cleared.credits).toBeNull();
    expect(await stored("api_keys", "credits", cleared.id)).toBeNull();

    // A bad one, or a shared limit, rotates nothing.
    const live = await createKey(key.key, { credits: daily });
    for (const [body, field] of [
      [{ credits: { remaining: -5 } }, "credits.remaining"],
      [{ rateLimits: [{ name: "day", limit: 100, windowSeconds: 86_400, shared: "account" }] }, "rateLimits[0].shared"],
    ] as const) {
      const problem = await expectProblem(await call(`/v1/api-keys/${live.id}/rotate`, { key: key.key, body }), 400, "invalid_request");
      expect(problem.errors).toEqual([{ field, message: expect.any(String) }]);
      expect(await rows("SELECT id FROM api_keys WHERE rotated_from = ?", live.id)).toEqual([]);
      expect(await rows("SELECT revoked_at FROM api_keys WHERE id = ?", live.id)).toEqual([{ revoked_at: null }]);
    }
  });
});

describe("an account's credits and shared limits (operator)", () => {
  it("are set when it is provisioned, stored, shown by every read of it, and in its keys' principal", async () => {
    const rateLimits = [
      { name: "second", limit: 5, windowSeconds: 1 },
      { name: "day", limit: 1000, windowSeconds: 86_400, shared: "account" },
    ];
    const { account, key } = await provision({ credits: daily, rateLimits });
    const view = { ...daily, nextRefillAt: nextMidnight() };
    expect(account).toMatchObject({ credits: view, rateLimits });
    expect(await stored("accounts", "credits", account.id)).toEqual(daily);
    expect(await stored("accounts", "rate_limits", account.id)).toEqual(rateLimits);
    expect(await (await call("/v1/account", { key: key.key })).json()).toMatchObject({ credits: view, rateLimits });
    expect(await (await call("/v1/whoami", { key: key.key })).json()).toMatchObject({ rateLimits });
    const principal = await principalOf(key.id);
    expect(principal.credits).toEqual({ key: null, account: daily, user: null });
    expect([...principal.limits, ...principal.shared]).toEqual(rateLimits);
    // The provisioned admin key has none of its own.
    expect(key).toMatchObject({ credits: null });

    // An admin's change of the account's limits may share them as well.
    const shared = [{ name: "hour", limit: 100, windowSeconds: 3600, shared: "account" }];
    const changed = await call("/v1/account", { method: "PATCH", key: key.key, body: { rateLimits: shared } });
    expect(await changed.json()).toMatchObject({ rateLimits: shared, credits: view });
    expect(await stored("accounts", "rate_limits", account.id)).toEqual(shared);
  });

  it("an account with none shows null; bad credits or limits provision nothing", async () => {
    const { account } = await provision();
    expect(account).toMatchObject({ credits: null });
    expect(await stored("accounts", "credits", account.id)).toBeNull();
    for (const [credits, field, message] of BAD_CREDITS) {
      const name = `Bad credits ${field} ${crypto.randomUUID()}`;
      await refused(
        await call("/v1/accounts", { headers: operator, body: { name, admin: { email: "a@bad.example" }, credits } }),
        field,
        message,
      );
      expect(await rows("SELECT id FROM accounts WHERE name = ?", name)).toEqual([]);
    }
    const name = `Bad limit ${crypto.randomUUID()}`;
    const res = await call("/v1/accounts", {
      headers: operator,
      body: { name, admin: { email: "a@bad.example" }, rateLimits: [{ name: "day", limit: 10, windowSeconds: 60, shared: "team" }] },
    });
    await refused(res, "rateLimits[0].shared", "must be one of: account, user");
    expect(await rows("SELECT id FROM accounts WHERE name = ?", name)).toEqual([]);
  });

  it("are changed and cleared by the operator's PATCH, in the keys' objects before it is answered", async () => {
    const { account, key } = await provision();
    const other = await createKey(key.key, { credits: hourly });
    // Both objects hold their key's record before the change.
    expect((await principalOf(key.id)).credits).toEqual({ key: null, account: null, user: null });
    expect((await principalOf(other.id)).credits).toEqual({ key: hourly, account: null, user: null });

    const patch = (body: unknown) => call(`/v1/accounts/${account.id}`, { method: "PATCH", headers: operator, body });
    const set = await patch({ credits: monthly });
    expect(set.status).toBe(200);
    expect(await set.json()).toMatchObject({ id: account.id, credits: { ...monthly, nextRefillAt: next15th() } });
    expect(await stored("accounts", "credits", account.id)).toEqual(monthly);
    expect((await principalOf(key.id)).credits).toEqual({ key: null, account: monthly, user: null });
    expect((await principalOf(other.id)).credits).toEqual({ key: hourly, account: monthly, user: null });
    expect(await rows("SELECT actor FROM audit_events WHERE account_id = ? AND action = 'account.updated'", account.id)).toEqual([
      { actor: "operator" },
    ]);

    // Bad credits change nothing, there or in the objects.
    for (const [credits, field, message] of BAD_CREDITS) await refused(await patch({ credits }), field, message);
    expect(await stored("accounts", "credits", account.id)).toEqual(monthly);

    // Each person's balance: stored, shown, and in the keys' objects before it is answered.
    expect(await (await patch({ userCredits: hourly })).json()).toMatchObject({ userCredits: hourly });
    expect(await stored("accounts", "user_credits", account.id)).toEqual(hourly);
    expect((await principalOf(other.id)).credits).toEqual({ key: hourly, account: monthly, user: hourly });
    for (const [userCredits, field, message] of BAD_CREDITS)
      await refused(await patch({ userCredits }), `userCredits${field.slice("credits".length)}`, message);
    expect(await stored("accounts", "user_credits", account.id)).toEqual(hourly);
    expect(await (await patch({ userCredits: null })).json()).toMatchObject({ userCredits: null });
    expect((await principalOf(other.id)).credits).toEqual({ key: hourly, account: monthly, user: null });

    // A PATCH without credits leaves them.
    expect(await (await patch({ meta: { tier: "gold" } })).json()).toMatchObject({ credits: { ...monthly } });
    expect(await stored("accounts", "credits", account.id)).toEqual(monthly);

    const cleared = await patch({ credits: null });
    expect(await cleared.json()).toMatchObject({ credits: null });
    expect(await stored("accounts", "credits", account.id)).toBeNull();
    expect((await principalOf(key.id)).credits).toEqual({ key: null, account: null, user: null });
    expect(await (await call("/v1/account", { key: key.key })).json()).toMatchObject({ credits: null });
  });
});

describe("a plan's credits and shared limits", () => {
  let n = 0;
  const planId = () => `credits-${++n}-${crypto.randomUUID().slice(0, 8)}`;
  const put = (id: string, body: unknown) => call(`/v1/plans/${id}`, { method: "PUT", headers: operator, body });
  const rateLimits = [
    { name: "minute", limit: 10, windowSeconds: 60 },
    { name: "day", limit: 100, windowSeconds: 86_400, shared: "account" },
  ];

  it("are stored and shown as set; a PUT without credits makes the plan unlimited", async () => {
    const id = planId();
    const created = await put(id, { name: "Metered", rateLimits, credits: monthly });
    expect(created.status).toBe(201);
    expect(await created.json()).toMatchObject({ id, rateLimits, credits: monthly });
    expect(await stored("plans", "credits", id)).toEqual(monthly);
    expect(await stored("plans", "rate_limits", id)).toEqual(rateLimits);
    expect(await (await call(`/v1/plans/${id}`, { headers: operator })).json()).toMatchObject({ credits: monthly, rateLimits });
    const list = await (await call("/v1/plans", { headers: operator })).json<{ data: { id: string; credits: unknown }[] }>();
    expect(list.data.find((p) => p.id === id)?.credits).toEqual(monthly);

    const replaced = await put(id, { name: "Metered", rateLimits });
    expect(replaced.status).toBe(200);
    expect(await replaced.json()).toMatchObject({ credits: null });
    expect(await stored("plans", "credits", id)).toBeNull();
  });

  it("refuses bad credits, naming the field, and stores no plan", async () => {
    for (const [credits, field, message] of BAD_CREDITS) {
      const id = planId();
      await refused(await put(id, { name: "x", rateLimits, credits }), field, message);
      expect(await rows("SELECT id FROM plans WHERE id = ?", id)).toEqual([]);
    }
  });

  it("are the pool and limits of its accounts that set none, in their keys and reads; an account's own win; a change reaches the keys", async () => {
    const id = planId();
    await put(id, { name: "Metered", rateLimits, credits: monthly });
    const onPlan = await provision({ plan: id });
    const poolView = { ...monthly, nextRefillAt: next15th() };
    expect(onPlan.account).toMatchObject({ plan: id, credits: poolView });
    expect(await stored("accounts", "credits", onPlan.account.id)).toBeNull();
    expect(await (await call("/v1/account", { key: onPlan.key.key })).json()).toMatchObject({ credits: poolView });
    const principal = await principalOf(onPlan.key.id);
    expect(principal.credits).toEqual({ key: null, account: monthly, user: null });
    expect([...principal.limits, ...principal.shared]).toEqual(rateLimits);
    expect(await (await call("/v1/whoami", { key: onPlan.key.key })).json()).toMatchObject({ rateLimits });

    // The account's own pool wins over its plan's.
    const own = await provision({ plan: id, credits: daily });
    expect(own.account).toMatchObject({ credits: { ...daily, nextRefillAt: nextMidnight() } });
    expect((await principalOf(own.key.id)).credits).toEqual({ key: null, account: daily, user: null });

    // The plan's new credits reach its accounts' keys right after the answer.
    const next: CreditsConfig = { remaining: 50, refill: null };
    expect((await put(id, { name: "Metered", rateLimits, credits: next })).status).toBe(200);
    await expect
      .poll(async () => (await principalOf(onPlan.key.id)).credits, { timeout: 2000 })
      .toEqual({ key: null, account: next, user: null });
    expect((await principalOf(own.key.id)).credits).toEqual({ key: null, account: daily, user: null });

    // Moved onto the plan by the operator: its view and keys have the plan's pool; cleared, its own is gone and the plan's applies.
    const moved = await provision({ credits: hourly });
    const patch = (body: unknown) => call(`/v1/accounts/${moved.account.id}`, { method: "PATCH", headers: operator, body });
    expect(await (await patch({ plan: id })).json()).toMatchObject({ plan: id, credits: { ...hourly, nextRefillAt: nextHour() } });
    const off = await patch({ credits: null });
    expect(await off.json()).toMatchObject({ plan: id, credits: { ...next, nextRefillAt: null } });
    expect((await principalOf(moved.key.id)).credits).toEqual({ key: null, account: next, user: null });
    expect(await (await patch({ plan: null })).json()).toMatchObject({ plan: null, credits: null });
    expect((await principalOf(moved.key.id)).credits).toEqual({ key: null, account: null, user: null });
  });
});
