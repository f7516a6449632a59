import { createRoute } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import { newIdentitySecret } from "../agents/identity";
import { AgentChange, AgentView, AgentWithSecret, NewAgent } from "../agents/schemas";
import { agentView, findAgent } from "../agents/store";
import { authenticate } from "../auth/middleware";
import { auditInsert } from "../db/audit";
import { batch, db } from "../db/client";
import { listPage, pageOf } from "../db/pagination";
import { type Agent, agentOrigins, agents } from "../db/schema";
import { ApiError } from "../errors";
import { newId } from "../keys/format";
import { BODY_PROBLEMS, json, jsonBody, jsonObject, KEY_PROBLEMS, KEY_SECURITY, problems, routes } from "../openapi";
import { IdParam, PageQuery, page } from "../schemas";
import { allow } from "./method-not-allowed";

const admin = authenticate("admin");

/** Browser widgets of the caller's account; admins only. */
export const agentsRoutes = routes()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      summary: "Register a browser widget (agent)",
      description: "The answer shows the agent's identity secret, this once.",
      security: KEY_SECURITY,
      middleware: [admin, jsonObject],
      request: { body: jsonBody(NewAgent) },
      responses: { 201: json(AgentWithSecret, "The new agent and its identity secret"), ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS) },
    }),
    async (c) => {
      const p = c.get("principal");
      const { name, allowedOrigins, tokenTtlSeconds } = c.req.valid("json");
      const now = new Date();
      const agent: Agent = {
        id: newId("agt"),
        accountId: p.accountId,
        name,
        allowedOrigins: JSON.stringify(allowedOrigins),
        tokenTtlSeconds,
        identitySecret: newIdentitySecret(),
        disabled: false,
        createdAt: now.toISOString(),
      };
      const d = db(c.env.DB);
      await batch(c.env.DB, [
        d.insert(agents).values(agent),
        ...allowedOrigins.map((origin) => d.insert(agentOrigins).values({ agentId: agent.id, origin })),
        auditInsert(
          d,
          { accountId: p.accountId, actor: p.userId, action: "agent.created", target: agent.id, requestId: c.get("requestId") },
          now,
        ),
      ]);
      // The identity secret is shown this once; POST /v1/agents/:id/identity-secret replaces it.
      c.header("Cache-Control", "no-store");
      return c.json({ ...agentView(agent), identitySecret: agent.identitySecret as string }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      summary: "List agents, newest first",
      security: KEY_SECURITY,
      middleware: [admin],
      request: { query: PageQuery },
      responses: { 200: json(page(AgentView), "A page of agents"), ...problems(...KEY_PROBLEMS, "invalid_request") },
    }),
    async (c) => {
      const p = c.get("principal");
      const { rows, nextCursor } = await listPage(db(c.env.DB), agents, eq(agents.accountId, p.accountId), pageOf(c.req.valid("query")));
      return c.json({ data: rows.map(agentView), nextCursor }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      summary: "Read an agent",
      security: KEY_SECURITY,
      middleware: [admin],
      request: { params: IdParam },
      responses: { 200: json(AgentView, "The agent"), ...problems(...KEY_PROBLEMS, "not_found") },
    }),
    async (c) => c.json(agentView(await accountAgent(c.env.DB, c.get("principal").accountId, c.req.valid("param").id)), 200),
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      summary: "Change an agent; disabling it stops its tokens on their next request",
      security: KEY_SECURITY,
      middleware: [admin, jsonObject],
      request: { params: IdParam, body: jsonBody(AgentChange) },
      responses: { 200: json(AgentView, "The agent as stored"), ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "not_found") },
    }),
    async (c) => {
      const p = c.get("principal");
      const { name, allowedOrigins, tokenTtlSeconds, disabled } = c.req.valid("json");
      const agent = await accountAgent(c.env.DB, p.accountId, c.req.valid("param").id);
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
      return c.json(agentView(await accountAgent(c.env.DB, p.accountId, agent.id)), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/identity-secret",
      summary: "Replace an agent's identity secret",
      description: "Proofs made with the old secret stop working at once; the new one is shown this once.",
      security: KEY_SECURITY,
      middleware: [admin],
      request: { params: IdParam },
      responses: { 200: json(AgentWithSecret, "The agent and its new identity secret"), ...problems(...KEY_PROBLEMS, "not_found") },
    }),
    async (c) => {
      const p = c.get("principal");
      const agent = await accountAgent(c.env.DB, p.accountId, c.req.valid("param").id);
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
      return c.json({ ...agentView(agent), identitySecret }, 200);
    },
  )
  .all("/", allow("GET", "POST"))
  .all("/:id", allow("GET", "PATCH"))
  .all("/:id/identity-secret", allow("POST"));

async function accountAgent(d1: D1Database, accountId: string, id: string): Promise<Agent> {
  const agent = await findAgent(db(d1), id, accountId);
  if (!agent) throw new ApiError("not_found", "No agent with this id in this account.");
  return agent;
}
