import { and, eq } from "drizzle-orm";
import type { Db } from "../db/client";
import { type Agent, agentOrigins, agents } from "../db/schema";

export const DEFAULT_TOKEN_TTL_SECONDS = 3600;
export const MAX_ORIGINS = 20;

const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * Why a string is not an origin an agent may allow, or null when it is one: exactly `scheme://host[:port]` as a browser
 * sends it in `Origin` (lowercase, no default port, no path, no trailing dot), https, or http on a loopback host.
 */
export function originProblem(value: string): string | null {
  if (value.includes("*")) return "wildcards are not allowed; list each origin";
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return "is not an origin such as https://app.example.com";
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && LOOPBACK.has(url.hostname))) {
    return "must use https (http only for localhost)";
  }
  if (url.origin !== value) return `must be exactly scheme://host[:port], as browsers send it (here: ${url.origin})`;
  if (url.hostname.endsWith(".")) return "must not end with a dot";
  return null;
}

export function agentView(a: Agent) {
  return {
    id: a.id,
    name: a.name,
    allowedOrigins: JSON.parse(a.allowedOrigins) as string[],
    tokenTtlSeconds: a.tokenTtlSeconds,
    disabled: a.disabled,
    createdAt: a.createdAt,
  };
}

export async function findAgent(d: Db, id: string, accountId?: string): Promise<Agent | undefined> {
  const [agent] = await d
    .select()
    .from(agents)
    .where(and(eq(agents.id, id), accountId === undefined ? undefined : eq(agents.accountId, accountId)))
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
