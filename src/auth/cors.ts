import { createMiddleware } from "hono/factory";
import { originKnown } from "../agents/store";
import { db } from "../db/client";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";

const PREFLIGHT_MAX_AGE_SECONDS = 600;
const EXPOSED = "X-Request-Id, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, RateLimit, RateLimit-Policy";

/**
 * CORS for the browser-facing routes (handshake and chat). A preflight is answered only for an origin some enabled
 * agent allows; an answer carries `Access-Control-Allow-Origin` (the exact origin, never `*`) only once the request
 * proved its origin, or, for errors the widget must read (an expired token, a rate limit), when the origin is known.
 */
export const cors = createMiddleware<AppEnv>(async (c, next) => {
  const origin = c.req.header("Origin");
  c.set("corsOrigin", null);
  if (c.req.method === "OPTIONS") {
    if (!origin || !(await originKnown(db(c.env.DB), origin))) {
      throw new ApiError("origin_not_allowed", "This origin is not allowed by any agent.");
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
  let allowed = c.get("corsOrigin");
  if (!allowed && origin && c.res.status >= 400 && c.res.status !== 403 && (await originKnown(db(c.env.DB), origin))) allowed = origin;
  if (allowed) {
    c.res.headers.set("Access-Control-Allow-Origin", allowed);
    c.res.headers.set("Access-Control-Expose-Headers", EXPOSED);
  }
});
