import { createRoute } from "@hono/zod-openapi";
import { createMiddleware } from "hono/factory";
import { invalidToken } from "../auth/credentials";
import { bearerMatches } from "../auth/secret";
import { misconfigured } from "../config";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { Verdict, VerifyRequest, verifyKey } from "../keys/verify";
import { BODY_PROBLEMS, json, jsonBody, problems, routes, withBody } from "../openapi";
import { spendPerAddress } from "../ratelimit/limiter";
import { allow } from "./method-not-allowed";

/**
 * Backends call with VERIFY_TOKEN. A wrong token spends the caller's address's failure budget (so guessing gets few
 * tries); a right one spends nothing there, so a busy backend is limited only by its keys' own limits.
 */
const backend = createMiddleware<AppEnv>(async (c, next) => {
  const token = c.get("config").verifyToken;
  if (token === undefined) misconfigured("VERIFY_TOKEN", "is not set; the verify API is off");
  const authorization = c.req.header("Authorization");
  if (!(await bearerMatches(authorization, token))) {
    await spendPerAddress(c, "ip", c.get("config").ipPolicy);
    if (authorization === undefined) throw new ApiError("missing_credentials", "Send the verify token as `Authorization: Bearer <token>`.");
    throw new ApiError("invalid_verify_token", "The verify token is not valid.", { headers: invalidToken });
  }
  await next();
});

export const verifyRoutes = routes()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      summary: "Verify a key for a backend that cannot sit behind the gateway",
      description:
        "Authorised by `VERIFY_TOKEN`. Judges the key (and its grant of `resource`) and spends `cost` of its rate limit exactly as a gateway request would. A refused key is a 200 with `valid: false` and the code a request would get.",
      security: [{ Bearer: [] }],
      middleware: withBody(backend),
      request: { body: jsonBody(VerifyRequest) },
      responses: {
        200: json(Verdict, "The verdict"),
        ...problems(
          ...BODY_PROBLEMS,
          "missing_credentials",
          "invalid_verify_token",
          "rate_limited",
          "rate_limiter_unavailable",
          "database_unavailable",
          "configuration_error",
        ),
      },
    }),
    async (c) => {
      c.header("Cache-Control", "no-store");
      return c.json(await verifyKey(c, c.req.valid("json")), 200);
    },
  )
  .all("/", allow("POST"));
