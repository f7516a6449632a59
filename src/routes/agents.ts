import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { agentView, DEFAULT_TOKEN_TTL_SECONDS, findAgent, MAX_ORIGINS, MAX_TOKEN_TTL_SECONDS, originProblem } from "../agents/store";
import { authenticate, guard } from "../auth/middleware";
import { requireAdmin } from "../auth/principal";
import { Fields, readJson } from "../body";
import { auditInsert } from "../db/audit";
import { batch, db } from "../db/client";
import { listPage, readPage } from "../db/pagination";
import { type Agent, agentOrigins, agents } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { newId } from "../keys/format";
import { allow } from "./method-not-allowed";

/** Browser widgets of the caller's account; admins only. */
export const agentsRoutes = new Hono<AppEnv>()
  .use(authenticate, guard(requireAdmin))
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
    return c.json(agentView(agent), 201);
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
    const next: Agent = {
      ...agent,
      ...(name === undefined ? {} : { name }),
      ...(allowedOrigins === undefined ? {} : { allowedOrigins: JSON.stringify(allowedOrigins) }),
      ...(tokenTtlSeconds === undefined ? {} : { tokenTtlSeconds }),
      ...(disabled === undefined ? {} : { disabled }),
    };
    const d = db(c.env.DB);
    const now = new Date();
    await batch(c.env.DB, [
      d.update(agents).set(next).where(eq(agents.id, agent.id)),
      ...(allowedOrigins === undefined
        ? []
        : [
            d.delete(agentOrigins).where(eq(agentOrigins.agentId, agent.id)),
            ...allowedOrigins.map((origin) => d.insert(agentOrigins).values({ agentId: agent.id, origin })),
          ]),
      auditInsert(
        d,
        { accountId: p.accountId, actor: p.userId, action: "agent.updated", target: agent.id, requestId: c.get("requestId") },
        now,
      ),
    ]);
    return c.json(agentView(next));
  })
  .all("/", allow("GET", "POST"))
  .all("/:id", allow("GET", "PATCH"));

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
