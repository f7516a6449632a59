import { createRoute, z } from "@hono/zod-openapi";
import { verifyIdentity } from "../../agents/identity";
import { handshakeAgent } from "../../agents/service";
import { newId } from "../../core/ids";
import { matching } from "../../core/schemas";
import { named } from "../../core/window";
import { spend } from "../../counters/limiter";
import { authenticateIfSent } from "../../guards/authenticate";
import { cors } from "../../guards/cors";
import { spendOnAddress } from "../../guards/spending";
import { misconfigured } from "../../platform/config";
import { ApiError, type FieldError, invalidRequest } from "../../platform/errors";
import { signToken } from "../../tokens/handshake";
import { BODY_PROBLEMS, json, jsonBody, KEY_PROBLEMS, KEY_SECURITY, problems, routes, withBody } from "../openapi";

const AGENT_ID = /^agt_[0-9a-f]{24}$/;
/** `anon_` ids belong to anonymous visitors: nobody can name a user so that their token passes for one. */
const USER_ID = /^(?!anon_)[A-Za-z0-9_.@:-]{1,128}$/;
const USER_HASH = /^[0-9a-f]{64}$/;

const HandshakeRequest = z
  .strictObject({
    agentId: matching(AGENT_ID, "must be an agent id such as agt_5f0c9a1e2b7d43a8c6e1f0b2"),
    userId: matching(USER_ID, "must be 1-128 characters: letters, digits and _.@:-, not starting with anon_").optional(),
    userHash: matching(USER_HASH, "must be 64 lowercase hex characters (HMAC-SHA256)").optional(),
  })
  .openapi("HandshakeRequest");

const HandshakeToken = z
  .strictObject({ token: z.string().openapi({ example: "eyJhbGciOiJIUzI1NiIs…" }), expiresIn: z.number().int().openapi({ example: 3600 }) })
  .openapi("HandshakeToken");

/**
 * POST /v1/handshake {agentId, userId?, userHash?}: a short-lived chat token for one end user of an agent.
 * - A backend with a full-access key of the agent's account names the user (`userId`); its key's budget applies.
 * - A browser at an origin the agent allows gets a token for a fresh anonymous user (`anon_…`), or for `userId` when
 *   it also carries `userHash`, the proof the customer's backend made for that user with the agent's identity secret.
 *   Anonymous tokens spend the agent's anonymous budget, identified ones that user's own, so neither can starve the
 *   other nor the backend; every browser handshake also spends its address's budget.
 */
export const handshakeRoutes = routes();
// Every answer of this path speaks CORS (preflights included), not only the documented POST.
handshakeRoutes.use(cors);
handshakeRoutes.openapi(
  createRoute({
    method: "post",
    path: "/",
    summary: "A short-lived chat token for one end user of an agent",
    description:
      "From a browser at an allowed origin: anonymous, or for `userId` with the backend's `userHash`. From a backend with a full-access key: for `userId`.",
    security: [{}, ...KEY_SECURITY],
    middleware: withBody(authenticateIfSent("full")),
    request: { body: jsonBody(HandshakeRequest) },
    responses: {
      200: json(HandshakeToken, "The token; `Cache-Control: no-store`"),
      ...problems(
        ...KEY_PROBLEMS,
        ...BODY_PROBLEMS,
        "not_found",
        "origin_not_allowed",
        "agent_disabled",
        "identity_unverified",
        "configuration_error",
      ),
    },
  }),
  async (c) => {
    const config = c.get("config");
    const server = c.get("principal");
    const { agentId, userId, userHash } = c.req.valid("json");
    const errors: FieldError[] = [];
    if (server && userId === undefined) errors.push({ field: "userId", message: "is required with an API key" });
    if (server && userHash !== undefined)
      errors.push({ field: "userHash", message: "is for browsers; a backend with an API key names the user directly" });
    if (!server && userId !== undefined && userHash === undefined) {
      errors.push({
        field: "userHash",
        message: "is required with userId: the HMAC-SHA256 of userId under the agent's identity secret, made by your backend",
      });
    }
    if (errors.length > 0) throw invalidRequest(errors);
    if (config.signingKeys.length === 0) misconfigured("JWT_SIGNING_KEYS", "is not set; handshakes are disabled");

    const agent = await handshakeAgent(c.get("deps"), agentId, server);
    let origin: string | undefined;
    if (!server) {
      origin = c.req.header("Origin");
      if (!origin || !(JSON.parse(agent.allowedOrigins) as string[]).includes(origin)) {
        throw new ApiError("origin_not_allowed", "This origin is not allowed for this agent.");
      }
      c.set("corsOrigin", origin);
    }
    if (agent.disabled) throw new ApiError("agent_disabled", "This agent is disabled.");
    if (!server) {
      await spendOnAddress(c, "handshake-ip", config.handshakeIpPolicy);
      if (userId === undefined) {
        if (!(await spend(c.get("deps"), `handshake-anon:${agent.id}`, [named(config.handshakeAgentPolicy)])))
          c.header("X-RateLimit-Status", "unavailable");
      } else {
        if (!(await verifyIdentity(agent.identitySecret, userId, userHash as string))) {
          throw new ApiError("identity_unverified", "userHash is not the proof for this userId under the agent's identity secret.");
        }
        if (!(await spend(c.get("deps"), `handshake-user:${agent.id}:${userId}`, [named(config.handshakeUserPolicy)])))
          c.header("X-RateLimit-Status", "unavailable");
      }
    }

    const claims = { sub: userId ?? newId("anon"), agt: agent.id, acc: agent.accountId, ...(origin ? { origin } : {}) };
    const token = await signToken(config.signingKeys, claims, agent.tokenTtlSeconds, new Date());
    c.header("Cache-Control", "no-store");
    return c.json({ token, expiresIn: agent.tokenTtlSeconds }, 200);
  },
);
