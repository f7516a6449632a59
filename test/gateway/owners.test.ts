import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { faultyDatabase } from "../faults";
import { call, createKey, expectProblem, own, provision, rows, VERIFY_TOKEN } from "../helpers";
import { gw } from "./table";

const backend = { Authorization: `Bearer ${VERIFY_TOKEN}` };
const unique = (prefix: string) => `${prefix}_${crypto.randomUUID().slice(0, 8)}`;
const owners = (id: string) => rows("SELECT type, account_id FROM resource_owners WHERE resource_id = ?", id);

async function reaches(key: string, mailbox: string): Promise<number> {
  const res = await gw(`/v1/mailboxes/${mailbox}/messages`, { key });
  if (res.status === 404) await expectProblem(res, 404, "not_found");
  else expect(res.headers.get("X-Upstream")).toBe("yes");
  return res.status;
}

afterEach(() => {
  vi.useRealTimers();
});

describe("gateway: another account's resource id never matches", () => {
  it("refuses another account's mailbox, and one no account owns, to full-access and scoped keys alike, spending nothing", async () => {
    const victim = await provision();
    const mailbox = unique("mbx");
    await own(victim.account.id, `mailbox:${mailbox}`);
    const { account, key } = await provision();
    // Naming the victim's mailbox in its own key's scopes gains the attacker nothing.
    const scoped = await createKey(key.key, { mailboxIds: [mailbox], rateLimit: { limit: 2, windowSeconds: 60 } });
    for (const k of [key.key, scoped.key]) {
      expect(await reaches(k, mailbox)).toBe(404);
      expect(await reaches(k, unique("mbx"))).toBe(404);
    }
    expect(await reaches(victim.key.key, mailbox)).toBe(200);
    // The refusals spent nothing: the scoped key still has its whole budget for a mailbox of its own.
    const mine = unique("mbx");
    await own(account.id, `mailbox:${mine}`);
    const limited = await createKey(key.key, { mailboxIds: [mine], rateLimit: { limit: 2, windowSeconds: 60 } });
    expect(await reaches(limited.key, mailbox)).toBe(404);
    const res = await gw(`/v1/mailboxes/${mine}/messages`, { key: limited.key });
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("1");
  });

  it("takes a move of a resource to another account into account at once in this isolate, and within a second in any", async () => {
    const a = await provision();
    const b = await provision();
    const mailbox = unique("mbx");
    await own(a.account.id, `mailbox:${mailbox}`);
    expect(await reaches(a.key.key, mailbox)).toBe(200);
    await own(b.account.id, `mailbox:${mailbox}`);
    expect(await reaches(a.key.key, mailbox)).toBe(404);
    expect(await reaches(b.key.key, mailbox)).toBe(200);
    // Another isolate's move: the row changes under this isolate's memory of it, which lasts one second at most.
    await env.DB.prepare("UPDATE resource_owners SET account_id = ? WHERE resource_id = ?").bind(a.account.id, mailbox).run();
    vi.useFakeTimers({ now: Date.now() + 1001, toFake: ["Date"] });
    expect(await reaches(b.key.key, mailbox)).toBe(404);
    expect(await reaches(a.key.key, mailbox)).toBe(200);
  });
});

describe("gateway: owners recorded elsewhere", () => {
  it("finds at once a resource another isolate recorded a moment ago: no isolate remembers that a resource had no owner", async () => {
    const { account, key } = await provision();
    const mailbox = unique("mbx");
    expect(await reaches(key.key, mailbox)).toBe(404);
    // Recorded by another isolate: straight into D1, past this isolate's memory.
    await env.DB.prepare("INSERT INTO resource_owners (type, resource_id, account_id, created_at) VALUES ('mailbox', ?, ?, ?)")
      .bind(mailbox, account.id, new Date().toISOString())
      .run();
    expect(await reaches(key.key, mailbox)).toBe(200);
  });

  it("gives a new resource to one account only when two create it at once", async () => {
    const a = await provision();
    const b = await provision();
    for (let trial = 0; trial < 5; trial++) {
      const mailbox = unique("mbx");
      const headers = { "X-Test-Created": `mailbox:${mailbox}` };
      await Promise.all([a, b].map((p) => gw("/v1/mailboxes", { key: p.key.key, body: {}, headers })));
      const owner = await owners(mailbox);
      expect(owner).toHaveLength(1);
      const winner = owner[0]?.account_id === a.account.id ? a : b;
      const loser = winner === a ? b : a;
      expect(await reaches(winner.key.key, mailbox)).toBe(200);
      expect(await reaches(loser.key.key, mailbox)).toBe(404);
    }
  });
});

describe("gateway: resources the upstream says a request created or deleted", () => {
  it("become the caller's account's, reachable by its keys and by no other account's; the header never reaches the client", async () => {
    const a = await provision();
    const b = await provision();
    const mailbox = unique("mbx");
    const created = await gw("/v1/mailboxes", {
      key: a.key.key,
      body: { name: "new" },
      headers: { "X-Test-Created": `mailbox:${mailbox}` },
    });
    expect(created.status).toBe(200);
    expect(created.headers.get("Keygate-Resource-Created")).toBeNull();
    expect(await owners(mailbox)).toEqual([{ type: "mailbox", account_id: a.account.id }]);
    expect(await reaches(a.key.key, mailbox)).toBe(200);
    expect(await reaches(b.key.key, mailbox)).toBe(404);

    // Another account cannot claim it by creating "the same" resource: the first owner keeps it.
    const claim = await gw("/v1/mailboxes", { key: b.key.key, body: {}, headers: { "X-Test-Created": `mailbox:${mailbox}` } });
    expect(claim.status).toBe(200);
    expect(await owners(mailbox)).toEqual([{ type: "mailbox", account_id: a.account.id }]);
    expect(await reaches(b.key.key, mailbox)).toBe(404);
    // Nor release it.
    await gw("/v1/anything", { method: "DELETE", key: b.key.key, headers: { "X-Test-Deleted": `mailbox:${mailbox}` } });
    expect(await reaches(a.key.key, mailbox)).toBe(200);

    const deleted = await gw(`/v1/mailboxes/${mailbox}`, {
      method: "DELETE",
      key: a.key.key,
      headers: { "X-Test-Deleted": `mailbox:${mailbox}` },
    });
    expect(deleted.headers.get("Keygate-Resource-Deleted")).toBeNull();
    expect(await owners(mailbox)).toEqual([]);
    expect(await reaches(a.key.key, mailbox)).toBe(404);
  });

  it("are recorded only for a 2xx answer to an authenticated request, and a malformed list records nothing", async () => {
    const { key } = await provision();
    const [failed, open, bad] = [unique("mbx"), unique("mbx"), unique("mbx")];
    const refused = await gw("/v1/mailboxes", {
      key: key.key,
      body: {},
      headers: { "X-Test-Created": `mailbox:${failed}`, "X-Test-Status": "400" },
    });
    expect(refused.status).toBe(400);
    expect(refused.headers.get("Keygate-Resource-Created")).toBeNull();
    const anonymous = await gw("/v1/status", { headers: { "X-Test-Created": `mailbox:${open}` } });
    expect(anonymous.status).toBe(200);
    expect(anonymous.headers.get("Keygate-Resource-Created")).toBeNull();
    const malformed = await gw("/v1/mailboxes", {
      key: key.key,
      body: {},
      headers: { "X-Test-Created": `mailbox:${bad}/x, :${bad}, mailbox` },
    });
    expect(malformed.status).toBe(200);
    for (const id of [failed, open, bad]) expect(await owners(id)).toEqual([]);
  });

  it("answer what the upstream answered when the database cannot record them, and log it", async () => {
    const { account, key } = await provision();
    await call("/v1/whoami", { key: key.key });
    const mailbox = unique("mbx");
    const errors = vi.spyOn(console, "error");
    const down = faultyDatabase(env.DB, { kind: "throw" }, (sql) => sql.includes("resource_owners"));
    const res = await gw("/v1/mailboxes", { key: key.key, body: {}, headers: { "X-Test-Created": `mailbox:${mailbox}` } }, { DB: down });
    expect(res.status).toBe(200);
    expect(res.headers.get("Keygate-Resource-Created")).toBeNull();
    expect(await owners(mailbox)).toEqual([]);
    const logged = errors.mock.calls.map((args) => String(args[0])).find((line) => line.includes("resource_ownership_not_recorded"));
    expect(JSON.parse(logged as string)).toMatchObject({ resource: `mailbox:${mailbox}`, accountId: account.id });
    errors.mockRestore();
  });
});

describe("/v1/resource-owners", () => {
  it("lets the provider's backend set, read, move and forget a resource's owner", async () => {
    const a = await provision();
    const b = await provision();
    const id = unique("proc");
    const path = `/v1/resource-owners/process/${id}`;
    await expectProblem(await call(path, { headers: backend }), 404, "not_found");
    const set = await call(path, { method: "PUT", headers: backend, body: { accountId: a.account.id } });
    expect(set.status).toBe(200);
    expect(await set.json()).toEqual({ type: "process", id, accountId: a.account.id, createdAt: expect.any(String) });
    const moved = await call(path, { method: "PUT", headers: backend, body: { accountId: b.account.id } });
    expect(await moved.json()).toMatchObject({ accountId: b.account.id });
    expect(await (await call(path, { headers: backend })).json()).toMatchObject({ type: "process", id, accountId: b.account.id });
    expect(await owners(id)).toEqual([{ type: "process", account_id: b.account.id }]);
    expect((await call(path, { method: "DELETE", headers: backend })).status).toBe(204);
    expect(await owners(id)).toEqual([]);
    await expectProblem(await call(path, { method: "DELETE", headers: backend }), 404, "not_found");
  });

  it("needs the verify token, and refuses unknown accounts and ids a route could never name", async () => {
    const { account, key } = await provision();
    const id = unique("mbx");
    const path = `/v1/resource-owners/mailbox/${id}`;
    await expectProblem(await call(path, { method: "PUT", body: { accountId: account.id } }), 401, "missing_credentials");
    for (const wrong of [`${VERIFY_TOKEN}x`, key.key]) {
      const res = await call(path, { method: "PUT", headers: { Authorization: `Bearer ${wrong}` }, body: { accountId: account.id } });
      await expectProblem(res, 401, "invalid_verify_token");
    }
    // An admin's own key cannot claim resources either: only the provider knows who owns what.
    await expectProblem(await call(path, { method: "PUT", key: key.key, body: { accountId: account.id } }), 401, "invalid_verify_token");
    await expectProblem(await call(path, { method: "PUT", headers: backend, body: { accountId: "acc_nobody" } }), 404, "not_found");
    await expectProblem(await call(path, { method: "PUT", headers: backend, body: {} }), 400, "invalid_request");
    await expectProblem(await call(`/v1/resource-owners/Mail-Box/${id}`, { headers: backend }), 400, "invalid_request");
    await expectProblem(await call(`/v1/resource-owners/mailbox/${"x".repeat(200)}`, { headers: backend }), 400, "invalid_request");
    await expectProblem(await call(path, { method: "POST", headers: backend, body: {} }), 405, "method_not_allowed");
    expect(await owners(id)).toEqual([]);
  });

  it("refuses a type outside RESOURCE_TYPES, which no key can be scoped to, storing nothing", async () => {
    const { account } = await provision();
    const id = unique("ws");
    const path = `/v1/resource-owners/workspace/${id}`;
    for (const res of [
      await call(path, { method: "PUT", headers: backend, body: { accountId: account.id } }),
      await call(path, { headers: backend }),
      await call(path, { method: "DELETE", headers: backend }),
    ]) {
      const body = await expectProblem(res, 400, "invalid_request");
      expect(body.errors).toEqual([{ field: "type", message: expect.stringContaining("mailbox, process, project") }]);
    }
    expect(await owners(id)).toEqual([]);
  });
});
