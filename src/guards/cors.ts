import { createMiddleware } from "hono/factory";
import { originKnown } from "../agents/store";
import { ApiError } from "../platform/errors";
import type { AppEnv } from "./context";
import { problem } from "./problem";

const PREFLIGHT_MAX_AGE_SECONDS = 600;
const EXPOSED = "X-Request-Id, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, RateLimit, RateLimit-Policy";

/**
 * CORS for the browser-facing routes (handshake and chat), the only ones that speak it. A preflight is answered only
 * for an origin some enabled agent allows; an answer, error or not, carries `Access-Control-Allow-Origin` (the exact
 * origin, never `*`) only once the request proved its origin: the handshake's agent allows it, or the token (even an
 * expired one) was minted for it. Every answer, refused preflights included, carries `Vary: Origin`.
 */
export const cors = createMiddleware<AppEnv>(async (c, next) => {
  const origin = c.req.header("Origin");
  c.set("corsOrigin", null);
  if (c.req.method === "OPTIONS") {
    if (!origin || !(await originKnown(c.get("deps").db, origin))) {
      const res = problem(c, new ApiError("origin_not_allowed", "This origin is not allowed by any agent."));
      res.headers.set("Vary", "Origin");
      return res;
    }
    return c.body(null, 204, {
      "Access-Control-Allow-Origin": origin,
      "Access-Control-Allow-Methods": "POST",
      "Access-Control-Allow-Headers": "Authorization, Content-Type",
      "Access-Control-Max-Age": String(PREFLIGHT_MAX_AGE_SECONDS),
      Vary: "Origin",
    });
  }
  await next();
  c.res.headers.append("Vary", "Origin");
  const allowed = c.get("corsOrigin");
  if (allowed) {
    c.res.headers.set("Access-Control-Allow-Origin", allowed);
    c.res.headers.set("Access-Control-Expose-Headers", EXPOSED);
  }
});
