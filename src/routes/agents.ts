import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { newIdentitySecret } from "../agents/identity";
import { agentView, DEFAULT_TOKEN_TTL_SECONDS, findAgent, MAX_ORIGINS, originProblem } from "../agents/store";
import { authenticate } from "../auth/middleware";
import { Fields, readJson } from "../body";
import { auditInsert } from "../db/audit";
import { batch, db } from "../db/client";
import { listPage, readPage } from "../db/pagination";
import { type Agent, agentOrigins, agents } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { newId } from "../keys/format";
import { MAX_TOKEN_TTL_SECONDS } from "../tokens/handshake";
import { allow } from "./method-not-allowed";

/** Browser widgets of the caller's account; admins only. */
export const agentsRoutes = new Hono<AppEnv>()
  .use(authenticate("admin"))
  .post("/", async (c) => {
    const p = c.get("principal");
    const f = new Fields(await readJson(c));
    const name = f.string("name", { required: true, max: 100 });
    const allowedOrigins = readOrigins(f, true);
    const tokenTtlSeconds = f.integer("tokenTtlSeconds", 60, MAX_TOKEN_TTL_SECONDS) ?? DEFAULT_TOKEN_TTL_SECONDS;
    f.done();

    const now = new Date();
    const agent: Agent = {
      id: newId("agt"),
      accountId: p.accountId,
      name: name as string,
      allowedOrigins: JSON.stringify(allowedOrigins),
      tokenTtlSeconds,
      identitySecret: newIdentitySecret(),
      disabled: false,
      createdAt: now.toISOString(),
    };
    const d = db(c.env.DB);
    await batch(c.env.DB, [
      d.insert(agents).values(agent),
      ...(allowedOrigins as string[]).map((origin) => d.insert(agentOrigins).values({ agentId: agent.id, origin })),
      auditInsert(
        d,
        { accountId: p.accountId, actor: p.userId, action: "agent.created", target: agent.id, requestId: c.get("requestId") },
        now,
      ),
    ]);
    // The identity secret is shown this once; POST /v1/agents/:id/identity-secret replaces it.
    c.header("Cache-Control", "no-store");
    return c.json({ ...agentView(agent), identitySecret: agent.identitySecret }, 201);
  })
  .get("/", async (c) => {
    const p = c.get("principal");
    const page = readPage(new URL(c.req.url).searchParams);
    const { rows, nextCursor } = await listPage(db(c.env.DB), agents, eq(agents.accountId, p.accountId), page);
    return c.json({ data: rows.map(agentView), nextCursor });
  })
  .get("/:id", async (c) => c.json(agentView(await accountAgent(c.env.DB, c.get("principal").accountId, c.req.param("id")))))
  .patch("/:id", async (c) => {
    const p = c.get("principal");
    const f = new Fields(await readJson(c));
    const name = f.string("name", { max: 100 });
    const allowedOrigins = readOrigins(f, false);
    const tokenTtlSeconds = f.integer("tokenTtlSeconds", 60, MAX_TOKEN_TTL_SECONDS);
    const disabled = f.boolean("disabled");
    f.done();

    const agent = await accountAgent(c.env.DB, p.accountId, c.req.param("id"));
    const change = {
      ...(name === undefined ? {} : { name }),
      ...(allowedOrigins === undefined ? {} : { allowedOrigins: JSON.stringify(allowedOrigins) }),
      ...(tokenTtlSeconds === undefined ? {} : { tokenTtlSeconds }),
      ...(disabled === undefined ? {} : { disabled }),
    };
    if (Object.keys(change).length > 0) {
      const d = db(c.env.DB);
      // Only the fields this request changes, and the origin index in the same batch as the list it indexes: two
      // concurrent edits cannot bring back what the other removed, nor leave the list and its index apart.
      await batch(c.env.DB, [
        d.update(agents).set(change).where(eq(agents.id, agent.id)),
        ...(allowedOrigins === undefined
          ? []
          : [
              d.delete(agentOrigins).where(eq(agentOrigins.agentId, agent.id)),
              ...allowedOrigins.map((origin) => d.insert(agentOrigins).values({ agentId: agent.id, origin })),
            ]),
        auditInsert(
          d,
          { accountId: p.accountId, actor: p.userId, action: "agent.updated", target: agent.id, requestId: c.get("requestId") },
          new Date(),
        ),
      ]);
    }
    return c.json(agentView(await accountAgent(c.env.DB, p.accountId, agent.id)));
  })
  .post("/:id/identity-secret", async (c) => {
    const p = c.get("principal");
    const agent = await accountAgent(c.env.DB, p.accountId, c.req.param("id"));
    const identitySecret = newIdentitySecret();
    const d = db(c.env.DB);
    // Replaced at once: proofs made with the old secret stop working, which is what rotating after a leak needs.
    await batch(c.env.DB, [
      d.update(agents).set({ identitySecret }).where(eq(agents.id, agent.id)),
      auditInsert(
        d,
        {
          accountId: p.accountId,
          actor: p.userId,
          action: "agent.identity_secret_rotated",
          target: agent.id,
          requestId: c.get("requestId"),
        },
        new Date(),
      ),
    ]);
    c.header("Cache-Control", "no-store");
    return c.json({ ...agentView(agent), identitySecret });
  })
  .all("/", allow("GET", "POST"))
  .all("/:id", allow("GET", "PATCH"))
  .all("/:id/identity-secret", allow("POST"));

function readOrigins(f: Fields, required: boolean): string[] | undefined {
  const origins = f.stringArray("allowedOrigins", {
    maxItems: MAX_ORIGINS,
    pattern: /^\S+$/,
    hint: "must be an origin such as https://app.example.com",
  });
  if (origins === undefined) return required ? f.fail("allowedOrigins", "is required") : undefined;
  origins.forEach((o, i) => {
    const problem = originProblem(o);
    if (problem) f.fail(`allowedOrigins[${i}]`, problem);
  });
  return origins;
}

async function accountAgent(d1: D1Database, accountId: string, id: string): Promise<Agent> {
  const agent = await findAgent(db(d1), id, accountId);
  if (!agent) throw new ApiError("not_found", "No agent with this id in this account.");
  return agent;
}
