import { and, eq } from "drizzle-orm";
import type { Principal } from "../core/principal";
import type { Db } from "../platform/db/client";
import { listPage, type Page } from "../platform/db/pagination";
import { type Agent, agentOrigins, agents } from "../platform/db/schema";

export const DEFAULT_TOKEN_TTL_SECONDS = 3600;
export const MAX_ORIGINS = 20;

/** SQL: the agents `p` may see: those of their account (what each may do with them is the route's need). */
export function visibleTo(p: Principal) {
  return eq(agents.accountId, p.accountId);
}

export function listAgents(d: Db, p: Principal, page: Page) {
  return listPage(d, agents, visibleTo(p), page);
}

/** An agent by id alone (its id is public: a browser names it), or among those `p` may see. */
export async function findAgent(d: Db, id: string, p?: Principal): Promise<Agent | undefined> {
  const [agent] = await d
    .select()
    .from(agents)
    .where(and(eq(agents.id, id), p === undefined ? undefined : visibleTo(p)))
    .limit(1);
  return agent;
}

/** Whether some enabled agent allows this origin: what a CORS preflight, which names no agent, can know. */
export async function originKnown(d: Db, origin: string): Promise<boolean> {
  const [row] = await d
    .select({ id: agents.id })
    .from(agentOrigins)
    .innerJoin(agents, eq(agents.id, agentOrigins.agentId))
    .where(and(eq(agentOrigins.origin, origin), eq(agents.disabled, false)))
    .limit(1);
  return row !== undefined;
}
