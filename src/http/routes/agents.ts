import { createRoute } from "@hono/zod-openapi";
import { AgentChange, AgentView, AgentWithSecret, agentView, NewAgent } from "../../agents/schemas";
import { createAgent, getAgent, listAgents, rotateIdentitySecret, updateAgent } from "../../agents/service";
import { IdParam, PageQuery, page } from "../../core/schemas";
import { authenticate } from "../../guards/authenticate";
import { pageOf } from "../../platform/db/pagination";
import { BODY_PROBLEMS, json, jsonBody, KEY_PROBLEMS, KEY_SECURITY, problems, routes, withBody } from "../openapi";

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
      middleware: withBody(admin),
      request: { body: jsonBody(NewAgent) },
      responses: { 201: json(AgentWithSecret, "The new agent and its identity secret"), ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS) },
    }),
    async (c) => {
      const agent = await createAgent(c.get("deps"), c.get("principal"), c.req.valid("json"));
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
      middleware: admin,
      request: { query: PageQuery },
      responses: { 200: json(page(AgentView), "A page of agents"), ...problems(...KEY_PROBLEMS, "invalid_request") },
    }),
    async (c) => {
      const { rows, nextCursor } = await listAgents(c.get("deps"), c.get("principal"), pageOf(c.req.valid("query")));
      return c.json({ data: rows.map(agentView), nextCursor }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      summary: "Read an agent",
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: IdParam },
      responses: { 200: json(AgentView, "The agent"), ...problems(...KEY_PROBLEMS, "not_found") },
    }),
    async (c) => c.json(agentView(await getAgent(c.get("deps"), c.get("principal"), c.req.valid("param").id)), 200),
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      summary: "Change an agent; disabling it stops its tokens on their next request",
      security: KEY_SECURITY,
      middleware: withBody(admin),
      request: { params: IdParam, body: jsonBody(AgentChange) },
      responses: { 200: json(AgentView, "The agent as stored"), ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "not_found") },
    }),
    async (c) => {
      const agent = await updateAgent(c.get("deps"), c.get("principal"), c.req.valid("param").id, c.req.valid("json"));
      return c.json(agentView(agent), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/identity-secret",
      summary: "Replace an agent's identity secret",
      description: "Proofs made with the old secret stop working at once; the new one is shown this once.",
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: IdParam },
      responses: { 200: json(AgentWithSecret, "The agent and its new identity secret"), ...problems(...KEY_PROBLEMS, "not_found") },
    }),
    async (c) => {
      const { agent, identitySecret } = await rotateIdentitySecret(c.get("deps"), c.get("principal"), c.req.valid("param").id);
      c.header("Cache-Control", "no-store");
      return c.json({ ...agentView(agent), identitySecret }, 200);
    },
  );
