import type { z } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import { newId } from "../core/ids";
import type { Principal } from "../core/principal";
import type { RequestContext } from "../guards/context";
import { auditInsert } from "../platform/db/audit";
import { batch, db } from "../platform/db/client";
import { type Agent, agentOrigins, agents } from "../platform/db/schema";
import { ApiError } from "../platform/errors";
import { newIdentitySecret } from "./identity";
import type { AgentChange, NewAgent } from "./schemas";
import { findAgent } from "./store";

// The agent aggregate's writes, each with its audit event and its origin index in one batch. Nothing caches an agent:
// chat requests read it, so a change is in force on the next request.

/** Registers an agent with a new identity secret (the caller shows it once). */
export async function createAgent(
  c: RequestContext,
  p: Principal,
  { name, allowedOrigins, tokenTtlSeconds }: z.infer<typeof NewAgent>,
): Promise<Agent> {
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
  return agent;
}

/** Changes only the fields given; the origin index changes in the same batch as the list it indexes. */
export async function updateAgent(
  c: RequestContext,
  p: Principal,
  agentId: string,
  { name, allowedOrigins, tokenTtlSeconds, disabled }: z.infer<typeof AgentChange>,
): Promise<Agent> {
  const agent = await accountAgent(c.env.DB, p.accountId, agentId);
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
  return accountAgent(c.env.DB, p.accountId, agent.id);
}

/** Replaces the agent's identity secret at once: proofs made with the old one stop working. */
export async function rotateIdentitySecret(c: RequestContext, p: Principal, agentId: string) {
  const agent = await accountAgent(c.env.DB, p.accountId, agentId);
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
  return { agent, identitySecret };
}

export async function accountAgent(d1: D1Database, accountId: string, id: string): Promise<Agent> {
  const agent = await findAgent(db(d1), id, accountId);
  if (!agent) throw new ApiError("not_found", "No agent with this id in this account.");
  return agent;
}
