import { createRoute } from "@hono/zod-openapi";
import { backend } from "../../guards/backend";
import { OwnerParams, Ownership, OwnershipChange } from "../../resources/schemas";
import { assignOwner, forgetOwner, ownership } from "../../resources/service";
import { BODY_PROBLEMS, json, jsonBody, problems, routes, VERIFY_SECURITY, withBody } from "../openapi";

const BACKEND_PROBLEMS = [
  "missing_credentials",
  "invalid_verify_token",
  "rate_limited",
  "database_unavailable",
  "configuration_error",
] as const;

/**
 * Which account owns each resource a gateway route or a verify call names, for the provider's backend (VERIFY_TOKEN):
 * resources that existed before Keygate, and moves. Resources created through the gateway are recorded from the
 * upstream's `Keygate-Resource-Created` header instead.
 */
export const resourceOwnersRoutes = routes()
  .openapi(
    createRoute({
      method: "put",
      path: "/{type}/{id}",
      summary: "Say which account owns a resource",
      description:
        "Replaces any owner. Within a second every isolate refuses the resource to the former owner's keys (404) and lets the new owner's keys reach it as their rights allow.",
      security: VERIFY_SECURITY,
      middleware: withBody(backend),
      request: { params: OwnerParams, body: jsonBody(OwnershipChange) },
      responses: { 200: json(Ownership, "The owner as stored"), ...problems(...BODY_PROBLEMS, ...BACKEND_PROBLEMS, "not_found") },
    }),
    async (c) => c.json(await assignOwner(c.get("deps"), c.req.valid("param"), c.req.valid("json").accountId), 200),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{type}/{id}",
      summary: "Read which account owns a resource",
      security: VERIFY_SECURITY,
      middleware: backend,
      request: { params: OwnerParams },
      responses: { 200: json(Ownership, "The owner"), ...problems(...BACKEND_PROBLEMS, "invalid_request", "not_found") },
    }),
    async (c) => c.json(await ownership(c.get("deps"), c.req.valid("param")), 200),
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/{type}/{id}",
      summary: "Forget a resource's owner",
      description: "No key reaches the resource any more (404), within a second in every isolate.",
      security: VERIFY_SECURITY,
      middleware: backend,
      request: { params: OwnerParams },
      responses: { 204: { description: "Forgotten" }, ...problems(...BACKEND_PROBLEMS, "invalid_request", "not_found") },
    }),
    async (c) => {
      await forgetOwner(c.get("deps"), c.req.valid("param"));
      return c.body(null, 204);
    },
  );
