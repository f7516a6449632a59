import { createRoute } from "@hono/zod-openapi";
import { idempotencyKeyOf } from "../../guards/authenticate";
import { backend } from "../../guards/backend";
import { Verdict, VerifyRequest, verifyKey } from "../../keys/verify";
import { invalidRequest } from "../../platform/errors";
import { BODY_PROBLEMS, json, jsonBody, problems, routes, VERIFY_SECURITY, withBody } from "../openapi";

export const verifyRoutes = routes().openapi(
  createRoute({
    method: "post",
    path: "/",
    summary: "Verify a key for a backend that cannot sit behind the gateway",
    description:
      "Authorised by `VERIFY_TOKEN`. Judges the key (and its grant of `resource`) and spends `cost` of its rate limit exactly as a gateway request would. A refused key is a 200 with `valid: false` and the code a request would get.",
    security: VERIFY_SECURITY,
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
    const body = c.req.valid("json");
    const sent = idempotencyKeyOf(c);
    if (sent !== undefined && body.idempotencyKey !== undefined && sent !== body.idempotencyKey)
      throw invalidRequest([{ field: "Idempotency-Key", message: "differs from the body's idempotencyKey" }]);
    const verdict = await verifyKey(c.get("deps"), { ...body, idempotencyKey: sent ?? body.idempotencyKey });
    if (verdict.valid && verdict.rateLimit === null) c.header("X-RateLimit-Status", "unavailable");
    return c.json(verdict, 200);
  },
);
