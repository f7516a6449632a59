import { createExecutionContext, createMessageBatch, getQueueResult, runDurableObjectAlarm, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { getTableName, is } from "drizzle-orm";
import { SQLiteTable } from "drizzle-orm/sqlite-core";
import { beforeAll, describe, expect, it } from "vitest";
import { hashKey } from "../../src/core/ids";
import worker from "../../src/index";
import type { EventMessage } from "../../src/platform/db/events";
import * as schema from "../../src/platform/db/schema";
import type { UsageMessage } from "../../src/usage/queue";
import { html, PASSWORD, page, person, signIn } from "../dashboard/helpers";
import { objectDatabase, type Recorded, recordingDatabase } from "../faults";
import { gw } from "../gateway/table";
import { callWith, OPERATOR_TOKEN, rows, VERIFY_TOKEN, WIDGET_ORIGIN } from "../helpers";

/**
 * Every statement Keygate sends to D1 while it serves a broad set of real requests (the API's management routes,
 * logins and sessions, verify and the gateway, the dashboard's pages, the objects' loads and flushes, the queue's
 * consumer and the cron), each asked of SQLite's planner. None may read the whole of a table that grows with the
 * deployment: with a million keys a full scan is a request that takes seconds and a D1 that serves nothing else.
 *
 * What counts as a full scan: a plan step `SCAN <table>` of a guarded table, whatever index it walks. SQLite walks a
 * whole index (`SCAN t USING [COVERING] INDEX i`) when it wants the index's order or its columns but has no bound on
 * it: that still reads every entry, so it grows with the table like a scan of its rows. A `SEARCH` is bounded by the
 * index's leading columns (one key, one account's keys, one user's sessions) and passes.
 *
 * Guarded: every table of the schema but the operator's plans (a handful of rows that only the operator writes), so a
 * table added later is guarded without anyone remembering to list it.
 */
const GUARDED: string[] = Object.values(schema)
  .filter((t) => is(t, SQLiteTable))
  .map((t) => getTableName(t))
  .filter((name) => name !== "plans");

const seen: Recorded = new Map();
/** The worker's D1, recorded: requests, the queue's batches and the cron's sweep get it through their bindings. */
const DB = recordingDatabase(env.DB, seen);
const operator = { Authorization: `Bearer ${OPERATOR_TOKEN}` };
const backend = { Authorization: `Bearer ${VERIFY_TOKEN}` };
const local = { DB, ALLOW_HTTP: "true" };

type Init = Parameters<typeof callWith>[2];
/** A request to the worker with the recorded D1, expecting `status`. */
async function send(status: number, path: string, init: Init = {}) {
  const res = await callWith(local, path, init);
  expect(res.status, `${init.method ?? (init.body ? "POST" : "GET")} ${path}: ${await res.clone().text()}`).toBe(status);
  return res;
}
const json = async <T = Record<string, unknown>>(status: number, path: string, init: Init = {}) =>
  (await send(status, path, init)).json<T>();

/** The object of this key (or account, or person) reads and writes D1 through a recorded handle from now on. */
const watchKey = (id: string) => objectDatabase(env.KEYS.getByName(`key:${id}`), () => recordingDatabase(env.DB, seen));
const watchCounter = (name: string) => objectDatabase(env.ACCOUNTS.getByName(name), () => recordingDatabase(env.DB, seen));

type Key = { id: string; key: string };

async function drive(): Promise<void> {
  // An operator provisions an account and a plan; the account's admin key does the rest.
  await send(201, "/v1/plans/query-plans", {
    method: "PUT",
    headers: operator,
    body: { name: "Plans", rateLimits: [{ name: "default", limit: 1000, windowSeconds: 60 }] },
  });
  const provisioned = await json<{ account: { id: string }; admin: { id: string }; key: Key }>(201, "/v1/accounts", {
    headers: operator,
    body: {
      name: "Query plans",
      slug: "query-plans",
      admin: { email: "plans-admin@example.com" },
      credits: { remaining: 1000 },
      userCredits: { remaining: 100 },
    },
  });
  const { account } = provisioned;
  const admin = provisioned.key.key;
  await watchKey(provisioned.key.id);
  await watchCounter(`account:${account.id}`);
  await send(200, `/v1/accounts/${account.id}`, { method: "PATCH", headers: operator, body: { plan: "query-plans" } });
  await send(200, `/v1/accounts/${account.id}/credits/ledger`, { headers: operator });

  // Keys: created, listed page by page, read, changed, used, rotated, revoked, their usage and hygiene.
  const made: Key[] = [];
  for (let i = 0; i < 3; i++)
    made.push(await json<Key>(201, "/v1/api-keys", { key: admin, body: { name: `k${i}`, credits: { remaining: 100 } } }));
  for (const k of made) await watchKey(k.id);
  const [first, second, third] = made as [Key, Key, Key];
  const page1 = await json<{ nextCursor: string }>(200, "/v1/api-keys?limit=2", { key: admin });
  await send(200, `/v1/api-keys?limit=2&cursor=${page1.nextCursor}`, { key: admin });
  await send(200, `/v1/api-keys/${first.id}`, { key: admin });
  await send(200, `/v1/api-keys/${first.id}`, { method: "PATCH", key: admin, body: { externalId: "ext-plans", meta: { team: "plans" } } });
  for (let i = 0; i < 3; i++) await send(200, "/v1/whoami", { key: first.key });
  await send(200, "/v1/keys/verify", { headers: backend, body: { key: second.key } });
  await send(200, "/v1/keys/verify", { headers: backend, body: { key: "sk_not_a_key_of_anyone_0000000000000000" } });
  await send(200, `/v1/api-keys/${first.id}/credits`, { key: admin, body: { operation: "add", amount: 5 } });
  expect(await runDurableObjectAlarm(env.KEYS.getByName(`key:${first.id}`))).toBe(true);
  await send(200, `/v1/api-keys/${first.id}/usage`, { key: admin });
  await send(200, `/v1/api-keys/${first.id}/credits/ledger`, { key: admin });
  await send(200, "/v1/account/usage", { key: admin });
  await send(200, "/v1/account/credits/ledger", { key: admin });
  await send(200, "/v1/account/key-hygiene", { key: admin });
  await send(200, "/v1/account", { key: admin });
  await send(200, "/v1/account", { method: "PATCH", key: admin, body: { membersCanCreateKeys: true } });
  const rotated = await json<Key>(201, `/v1/api-keys/${second.id}/rotate`, { key: admin, body: { gracePeriodSeconds: 3600 } });
  await watchKey(rotated.id);
  await send(200, "/v1/whoami", { key: rotated.key });
  await send(200, `/v1/api-keys/${third.id}`, { method: "DELETE", key: admin });

  // The gateway: a resource the provider registered, and a key scoped to it.
  await send(200, "/v1/resource-owners/mailbox/mbx_plans", { method: "PUT", headers: backend, body: { accountId: account.id } });
  await send(200, "/v1/resource-owners/mailbox/mbx_plans", { headers: backend });
  await send(200, "/v1/keys/verify", { headers: backend, body: { key: first.key, resource: "mailbox:mbx_plans" } });
  await send(200, "/v1/resource-owners/project/prj_plans", { method: "PUT", headers: backend, body: { accountId: account.id } });
  expect((await gw("/api/v1/organizations/query-plans/projects/prj_plans/tasks", { key: first.key }, { DB })).status).toBe(200);
  const scoped = await json<Key>(201, "/v1/api-keys", { key: admin, body: { name: "scoped", mailboxIds: ["mbx_plans"] } });
  await watchKey(scoped.id);
  expect((await gw("/v1/mailboxes/mbx_plans/messages", { key: scoped.key }, { DB })).status).toBe(200);
  expect((await gw("/v1/mailboxes/mbx_unknown/messages", { key: scoped.key }, { DB })).status).toBe(404);

  // People: invited, set a password, log in, refresh, list and end sessions, change the password, log out.
  const member = await json<{ id: string; email: string; invitation: { token: string } }>(201, "/v1/users", {
    key: admin,
    body: { email: "plans-member@example.com", role: "member" },
  });
  await watchCounter(`user:${member.id}`);
  await send(200, "/v1/users?limit=1", { key: admin });
  await send(200, `/v1/users/${member.id}`, { key: admin });
  await send(201, `/v1/users/${member.id}/invitation`, { method: "POST", key: admin });
  const invitation = await json<{ token: string }>(201, `/v1/users/${member.id}/invitation`, { method: "POST", key: admin });
  await send(200, "/v1/auth/accept-invitation", { body: { token: invitation.token, password: PASSWORD } });
  type Pair = { access_token: string; refresh_token: string };
  const pair = await json<Pair>(200, "/v1/auth/login", { body: { email: member.email, password: PASSWORD, accountId: account.id } });
  const other = await json<Pair>(200, "/v1/auth/login", { body: { email: member.email, password: PASSWORD } });
  await send(401, "/v1/auth/login", { body: { email: member.email, password: "not the password at all" } });
  await send(200, "/v1/whoami", { key: pair.access_token });
  const next = await json<Pair>(200, "/v1/auth/refresh", { body: { refresh_token: pair.refresh_token } });
  const memberKey = await json<Key>(201, "/v1/api-keys", { key: next.access_token, body: { name: "member's own" } });
  await watchKey(memberKey.id);
  await send(200, "/v1/api-keys", { key: next.access_token });
  await send(200, "/v1/account/usage", { key: memberKey.key });
  await send(200, "/v1/auth/sessions", { key: next.access_token });
  await send(204, `/v1/auth/sessions/${other.refresh_token.split(".")[0]}`, { method: "DELETE", key: next.access_token });
  await send(204, "/v1/auth/password", { key: next.access_token, body: { currentPassword: PASSWORD, newPassword: `${PASSWORD} two` } });
  const after = await json<Pair>(200, "/v1/auth/login", { body: { email: member.email, password: `${PASSWORD} two` } });
  await send(204, "/v1/auth/logout", { method: "POST", key: after.access_token });
  const onBehalf = await json<Key>(201, "/v1/api-keys", { key: admin, body: { name: "on behalf", ownerId: member.id } });
  await send(200, `/v1/users/${member.id}`, { method: "PATCH", key: admin, body: { grants: ["mailbox:mbx_plans"] } });
  await send(200, `/v1/users/${member.id}`, { method: "PATCH", key: admin, body: { role: "admin" } });
  await send(200, `/v1/users/${member.id}`, { method: "PATCH", key: admin, body: { role: "member", grants: ["*"] } });
  await send(200, `/v1/users/${member.id}`, { method: "PATCH", key: admin, body: { disabled: true } });
  expect(onBehalf.id).toMatch(/^key_/);
  await send(201, `/v1/accounts/${account.id}/recovery-key`, { method: "POST", headers: operator, body: {} });

  // Webhooks: an endpoint, its test event, its deliveries; the queue's consumer and the cron's sweep.
  const hook = await json<{ id: string }>(201, "/v1/webhooks", {
    key: admin,
    body: { url: `${env.TEST_UPSTREAM_URL}/hooks/query-plans`, events: ["*"] },
  });
  await send(200, "/v1/webhooks", { key: admin });
  await send(200, `/v1/webhooks/${hook.id}`, { key: admin });
  await send(200, `/v1/webhooks/${hook.id}`, { method: "PATCH", key: admin, body: { description: "plans" } });
  await send(202, `/v1/webhooks/${hook.id}/test`, { method: "POST", key: admin });
  const events = await rows<{ id: string }>(
    "SELECT id FROM webhook_events WHERE account_id = ? ORDER BY created_at DESC LIMIT 3",
    account.id,
  );
  await consume(events.map(({ id }) => ({ event: id })));
  const deliveries = await json<{ data: { id: string }[] }>(200, `/v1/webhooks/${hook.id}/deliveries`, { key: admin });
  const delivery = deliveries.data[0]?.id as string;
  await consume([{ delivery, attempt: 1 }]);
  await send(202, `/v1/webhooks/${hook.id}/deliveries/${delivery}/retry`, { method: "POST", key: admin });
  const expiring = await json<Key>(201, "/v1/api-keys", {
    key: admin,
    body: { name: "expiring", expiresAt: new Date(Date.now() + 3 * 86_400_000).toISOString() },
  });
  expect(expiring.id).toMatch(/^key_/);
  await sweep();
  // What a counting object tells, and a leak the request could not act on, come through the queue as well.
  const [told] = await rows<{ id: string }>("SELECT id FROM webhook_events WHERE account_id = ? LIMIT 1", account.id);
  await consume([
    {
      emit: {
        id: `msg_plans_${crypto.randomUUID().slice(0, 8)}`,
        accountId: account.id,
        type: "credits.low",
        data: JSON.stringify({ told: told?.id }),
        createdAt: new Date().toISOString(),
      },
    },
    { leak: { hash: await hashKey(rotated.key), source: "report", url: "https://gist.example/again" } },
  ]);

  // A batch of keys' usage and last uses, as keys' objects send them.
  const hour = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000).toISOString();
  await consume(
    [first, second].map((k) => ({
      usage: {
        keyId: k.id,
        accountId: account.id,
        hours: [{ hour, admitted: 1, rateLimited: 0, creditsSpent: 0, rev: 1 }],
        lastUse: { at: new Date().toISOString(), method: "bearer" as const },
      },
    })),
    "keygate-usage",
  );

  // Credits: the account's pool (the operator's), a person's balance, a key's; their objects flush to the ledger.
  await send(200, `/v1/accounts/${account.id}/credits`, { headers: operator, body: { operation: "add", amount: 10 } });
  expect(await runDurableObjectAlarm(env.ACCOUNTS.getByName(`account:${account.id}`))).toBe(true);
  await send(200, `/v1/users/${provisioned.admin.id}/credits`, { method: "GET", key: admin });
  await send(200, `/v1/users/${provisioned.admin.id}/credits`, { key: admin, body: { operation: "add", amount: 3 } });
  await send(200, `/v1/users/${provisioned.admin.id}/credits/ledger`, { key: admin });
  await send(200, "/v1/plans", { headers: operator });
  await send(200, "/v1/plans/query-plans", { headers: operator });

  // The widget: an agent, a browser's handshake and chat, its preflight.
  const agent = await json<{ id: string }>(201, "/v1/agents", { key: admin, body: { name: "Widget", allowedOrigins: [WIDGET_ORIGIN] } });
  await send(200, "/v1/agents", { key: admin });
  await send(200, `/v1/agents/${agent.id}`, { key: admin });
  await send(200, `/v1/agents/${agent.id}`, { method: "PATCH", key: admin, body: { tokenTtlSeconds: 600 } });
  await send(200, `/v1/agents/${agent.id}/identity-secret`, { method: "POST", key: admin });
  const { token } = await json<{ token: string }>(200, "/v1/handshake", {
    headers: { Origin: WIDGET_ORIGIN },
    body: { agentId: agent.id },
  });
  await send(204, "/v1/chat/messages", { method: "OPTIONS", headers: { Origin: WIDGET_ORIGIN, "Access-Control-Request-Method": "POST" } });
  await send(200, "/v1/chat/messages", { key: token, headers: { Origin: WIDGET_ORIGIN }, body: { message: "hello" } });

  // A leaked key reported by anyone; a resource that leaves the account; an endpoint's secret rotated, then removed.
  await send(202, "/v1/leaks", { body: { key: scoped.key, url: "https://gist.example/plans" } });
  await send(204, "/v1/resource-owners/mailbox/mbx_plans", { method: "DELETE", headers: backend });
  await send(200, `/v1/webhooks/${hook.id}/secret`, { method: "POST", key: admin, body: {} });
  await send(200, "/v1/plans/query-plans", {
    method: "PUT",
    headers: operator,
    body: { name: "Plans", rateLimits: [{ name: "default", limit: 2000, windowSeconds: 60 }] },
  });

  // The dashboard: an admin's pages, read with a session cookie.
  const dashAdmin = await person(admin, "admin");
  const cookie = await signIn(dashAdmin.email);
  const bindings = local;
  for (const path of [
    "/dashboard/keys",
    `/dashboard/keys/${first.id}/revoke`,
    `/dashboard/keys/${first.id}/ledger`,
    "/dashboard/usage",
    "/dashboard/usage/ledger",
    "/dashboard/users",
    `/dashboard/users/${member.id}`,
    "/dashboard/agents",
    "/dashboard/webhooks",
    `/dashboard/webhooks/${hook.id}`,
    "/dashboard/activity",
  ])
    await html(await page(path, { cookie, bindings }));
  expect((await page("/dashboard/keys", { cookie, form: { name: "from the dashboard" }, bindings })).status).toBe(201);
  expect((await page(`/dashboard/keys/${memberKey.id}/revoke`, { cookie, form: {}, bindings })).status).toBe(303);
  expect((await page("/dashboard/login", { form: { email: dashAdmin.email, password: PASSWORD }, bindings })).status).toBe(303);
  expect((await page("/dashboard/logout", { cookie, form: {}, bindings })).status).toBe(303);
  await send(204, `/v1/webhooks/${hook.id}`, { method: "DELETE", key: admin });
}

/** Hands the messages to the queue's consumer, as the queue would, with the recorded D1. */
async function consume(bodies: (EventMessage | UsageMessage)[], queue = "keygate-events"): Promise<void> {
  const batch = createMessageBatch<EventMessage | UsageMessage>(
    queue,
    bodies.map((body, i) => ({ id: `m${i}`, timestamp: new Date(), attempts: 1, body })),
  );
  const ctx = createExecutionContext();
  await worker.queue(batch, { ...env, ...local }, ctx);
  const result = await getQueueResult(batch, ctx);
  expect(result.retryMessages).toEqual([]);
}

/** The cron's minute, with the recorded D1. */
async function sweep(): Promise<void> {
  const ctx = createExecutionContext();
  await worker.scheduled({ cron: "* * * * *", scheduledTime: Date.now(), noRetry() {} } as ScheduledController, { ...env, ...local }, ctx);
  await waitOnExecutionContext(ctx);
}

type Step = { id: number; parent: number; detail: string };

/** The tables a statement names, by the name (or alias) a plan step calls them. */
function tablesOf(sql: string): Map<string, string> {
  const names = new Map<string, string>();
  for (const m of sql.matchAll(/\b(?:from|join|update|into)\s+"?(\w+)"?(?:\s+(?:as\s+)?"?(\w+)"?)?/gi)) {
    const [, table, alias] = m as unknown as [string, string, string | undefined];
    names.set(table, table);
    if (alias && !/^(where|on|set|inner|left|cross|join|order|group|limit|values|select|using|natural)$/i.test(alias))
      names.set(alias, table);
  }
  return names;
}

/**
 * The steps of the statement's plan that read a whole guarded table, with the table's name. The statement is bound
 * with the values of its first run; with no statistics (no ANALYZE has run here) the plan depends on no value.
 */
async function scans(sql: string, params: unknown[]): Promise<string[]> {
  const plan = await env.DB.prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .bind(...params)
    .all<Step>();
  const names = tablesOf(sql);
  return plan.results.flatMap((step) => {
    const m = /^SCAN (\w+)/.exec(step.detail);
    // A name the statement does not spell as `FROM t` is taken as it stands: a scan is never waved through unnamed.
    const table = m && (names.get(m[1] as string) ?? m[1]);
    return table && GUARDED.includes(table) ? [`${table}: ${step.detail}`] : [];
  });
}

/** What the capture must hold (so that the test cannot pass by seeing nothing): one statement of each kind. */
const EXPECTED: [string, RegExp][] = [
  ["a key's record by the id its hash gives or by its hash, in its object", /where \("api_keys"\."id" = \? or "api_keys"\."hash" = \?\)/],
  ["a page of keys", /from "api_keys" where .*order by "api_keys"\."created_at" desc, "api_keys"\."id" desc limit \?/],
  ["the last uses of a usage batch", /update api_keys set last_used_at = u\.at/i],
  ["an audit event", /insert into "audit_events"/],
  ["the activity page", /from "audit_events"/],
  ["a login's user", /from "users".*"users"\."email" = \?/],
  ["a session made", /insert into "?sessions"? /i],
  ["a session read", /from "sessions"/],
  ["a session ended", /update "sessions"/],
  ["the credits ledger written", /insert or ignore into credit_ledger/i],
  ["the credits ledger read", /from "credit_ledger"/],
  ["a page after its cursor", /"api_keys"\."created_at" <= \? AND \("api_keys"\."created_at" < \? OR "api_keys"\."id" < \?\)/],
  ["a member's own keys, for their usage", /select "id" from "api_keys" where "api_keys"\."owner_id" = \?/],
  ["a person's keys, whose rights change with theirs", /from "api_keys" where \("api_keys"\."owner_id" = \?/],
  ["the cron's expiring keys", /from "api_keys" where .*"api_keys"\."expires_at" > \?/],
  [
    "the cron's overdue deliveries",
    /from "webhook_deliveries" where \("webhook_deliveries"\."status" = \? and "webhook_deliveries"\."next_attempt_at" < \?/,
  ],
  ["the consumer's event", /from "webhook_events" where "webhook_events"\."id" = \?/],
];

describe("query plans", () => {
  beforeAll(drive, 120_000);

  it("captures the statements of every kind of request", () => {
    const captured = [...seen.keys()];
    expect(GUARDED).toEqual(expect.arrayContaining(["api_keys", "users", "sessions", "audit_events", "credit_ledger"]));
    expect(captured.length).toBeGreaterThan(50);
    const missing = EXPECTED.filter(([, pattern]) => !captured.some((sql) => pattern.test(sql))).map(([name]) => name);
    expect(missing).toEqual([]);
  });

  it("reads no table that grows with the deployment from end to end", async () => {
    const found: string[] = [];
    for (const [sql, params] of seen) {
      const steps = await scans(sql, params);
      if (steps.length > 0) found.push(`${sql}\n    ${steps.join("\n    ")}`);
    }
    expect(found, found.join("\n\n")).toEqual([]);
  });
});
