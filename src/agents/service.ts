import type { z } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import { newId } from "../core/ids";
import type { Principal } from "../core/principal";
import { auditInsert } from "../platform/db/audit";
import { batch } from "../platform/db/client";
import type { Page } from "../platform/db/pagination";
import { type Agent, agentOrigins, agents } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import { newIdentitySecret } from "./identity";
import type { AgentChange, NewAgent } from "./schemas";
import { listAgents as agentsPage, findAgent } from "./store";

// The agent aggregate on Deps: its reads (store.ts, visibleTo) and its writes, each with its audit event and its
// origin index in one batch. Nothing caches an agent: chat requests read it, so a change is in force on the next
// request.

/** Registers an agent with a new identity secret (the caller shows it once). */
export async function createAgent(
  deps: Deps,
  p: Principal,
  { name, allowedOrigins, tokenTtlSeconds }: z.infer<typeof NewAgent>,
): Promise<Agent> {
  const now = deps.now();
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
  const d = deps.db;
  await batch(deps.env.DB, [
    d.insert(agents).values(agent),
    ...allowedOrigins.map((origin) => d.insert(agentOrigins).values({ agentId: agent.id, origin })),
    auditInsert(d, { accountId: p.accountId, actor: p.userId, action: "agent.created", target: agent.id, requestId: deps.requestId }, now),
  ]);
  return agent;
}

/** Changes only the fields given; the origin index changes in the same batch as the list it indexes. */
export async function updateAgent(
  deps: Deps,
  p: Principal,
  agentId: string,
  { name, allowedOrigins, tokenTtlSeconds, disabled }: z.infer<typeof AgentChange>,
): Promise<Agent> {
  const agent = await getAgent(deps, p, agentId);
  const change = {
    ...(name === undefined ? {} : { name }),
    ...(allowedOrigins === undefined ? {} : { allowedOrigins: JSON.stringify(allowedOrigins) }),
    ...(tokenTtlSeconds === undefined ? {} : { tokenTtlSeconds }),
    ...(disabled === undefined ? {} : { disabled }),
  };
  if (Object.keys(change).length > 0) {
    const d = deps.db;
    // Only the fields this request changes, and the origin index in the same batch as the list it indexes: two
    // concurrent edits cannot bring back what the other removed, nor leave the list and its index apart.
    await batch(deps.env.DB, [
      d.update(agents).set(change).where(eq(agents.id, agent.id)),
      ...(allowedOrigins === undefined
        ? []
        : [
            d.delete(agentOrigins).where(eq(agentOrigins.agentId, agent.id)),
            ...allowedOrigins.map((origin) => d.insert(agentOrigins).values({ agentId: agent.id, origin })),
          ]),
      auditInsert(
        d,
        { accountId: p.accountId, actor: p.userId, action: "agent.updated", target: agent.id, requestId: deps.requestId },
        deps.now(),
      ),
    ]);
  }
  return getAgent(deps, p, agent.id);
}

/** Replaces the agent's identity secret at once: proofs made with the old one stop working. */
export async function rotateIdentitySecret(deps: Deps, p: Principal, agentId: string) {
  const agent = await getAgent(deps, p, agentId);
  const identitySecret = newIdentitySecret();
  const d = deps.db;
  // Replaced at once: proofs made with the old secret stop working, which is what rotating after a leak needs.
  await batch(deps.env.DB, [
    d.update(agents).set({ identitySecret }).where(eq(agents.id, agent.id)),
    auditInsert(
      d,
      {
        accountId: p.accountId,
        actor: p.userId,
        action: "agent.identity_secret_rotated",
        target: agent.id,
        requestId: deps.requestId,
      },
      deps.now(),
    ),
  ]);
  return { agent, identitySecret };
}

/** An agent the caller may see; anything else is 404. */
export async function getAgent(deps: Deps, p: Principal, id: string): Promise<Agent> {
  const agent = await findAgent(deps.db, id, p);
  if (!agent) throw new ApiError("not_found", "No agent with this id in this account.");
  return agent;
}

/** A page of the agents the caller may see, newest first. */
export function listAgents(deps: Deps, p: Principal, page: Page) {
  return agentsPage(deps.db, p, page);
}

/**
 * The agent a handshake names: for a backend's key (`server`), one of its account's; for a browser, any (its id is
 * public, and the origin check follows). 404 otherwise.
 */
export async function handshakeAgent(deps: Deps, agentId: string, server: Principal | undefined): Promise<Agent> {
  const agent = await findAgent(deps.db, agentId, server);
  if (!agent) throw new ApiError("not_found", "No such agent.");
  return agent;
}
