import { createMiddleware } from "hono/factory";
import { misconfigured } from "../platform/config";
import { ApiError } from "../platform/errors";
import type { AppEnv } from "./context";
import { invalidToken } from "./credentials";
import { bearerMatches } from "./secret";
import { spendFailure } from "./spending";

/**
 * The provider's backends (the verify API, the resource registry) call with VERIFY_TOKEN. A wrong token spends the
 * caller's address's failure budget (so guessing gets few tries); a right one spends nothing there, so a busy backend
 * is limited only by its keys' own limits.
 */
export const backend = createMiddleware<AppEnv>(async (c, next) => {
  const token = c.get("config").verifyToken;
  if (token === undefined) misconfigured("VERIFY_TOKEN", "is not set; the backend API is off");
  const authorization = c.req.header("Authorization");
  if (!(await bearerMatches(authorization, token))) {
    await spendFailure(c);
    if (authorization === undefined) throw new ApiError("missing_credentials", "Send the verify token as `Authorization: Bearer <token>`.");
    throw new ApiError("invalid_verify_token", "The verify token is not valid.", { headers: invalidToken });
  }
  await next();
});
