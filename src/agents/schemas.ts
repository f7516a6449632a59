import { z } from "@hono/zod-openapi";
import { originProblem } from "../core/origins";
import { extend, integer, Timestamp, text } from "../core/schemas";
import type { Agent } from "../platform/db/schema";
import { MAX_TOKEN_TTL_SECONDS } from "../tokens/handshake";
import { DEFAULT_TOKEN_TTL_SECONDS, MAX_ORIGINS } from "./store";

/** An exact origin as browsers send it in `Origin`. */
export const Origin = z
  .string()
  .superRefine((value, ctx) => {
    const problem = originProblem(value);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  })
  .openapi({
    example: "https://shop.example",
    description: "An origin exactly as browsers send it: https (http only for localhost), no path, no wildcard",
    pattern: "^(https://[a-z0-9.\\[\\]:-]*[a-z0-9\\]](:[0-9]{1,5})?|http://(localhost|127\\.0\\.0\\.1|\\[::1\\])(:[0-9]{1,5})?)$",
  });

const Origins = z
  .array(Origin)
  .min(1)
  .max(MAX_ORIGINS)
  .transform((list) => [...new Set(list)]);
const TokenTtl = integer(60, MAX_TOKEN_TTL_SECONDS);

export const NewAgent = z
  .strictObject({ name: text(100), allowedOrigins: Origins, tokenTtlSeconds: TokenTtl.default(DEFAULT_TOKEN_TTL_SECONDS) })
  .openapi("NewAgent");

export const AgentChange = z
  .strictObject({
    name: text(100).optional(),
    allowedOrigins: Origins.optional(),
    tokenTtlSeconds: TokenTtl.optional(),
    disabled: z.boolean().optional(),
  })
  .openapi("AgentChange");

export const AgentView = z
  .strictObject({
    id: z.string().openapi({ example: "agt_5f0c9a1e2b7d43a8c6e1f0b2" }),
    name: z.string(),
    allowedOrigins: z.array(z.string()),
    tokenTtlSeconds: z.number().int(),
    disabled: z.boolean(),
    createdAt: Timestamp,
  })
  .openapi("Agent");

/** An agent with its identity secret: the answer that creates or replaces the secret, the only one that shows it. */
export const AgentWithSecret = extend(AgentView, { identitySecret: z.string().openapi({ example: "idsec_5f0c…" }) }).openapi(
  "AgentWithSecret",
);

/** The API view of an agent: never its identity secret. */
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
