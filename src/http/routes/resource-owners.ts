import { createRoute, z } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import { matching } from "../../core/schemas";
import { backend } from "../../guards/backend";
import type { RequestContext } from "../../guards/context";
import { db } from "../../platform/db/client";
import { accounts } from "../../platform/db/schema";
import { ApiError, invalidRequest } from "../../platform/errors";
import { getOwnership, RESOURCE_ID, RESOURCE_TYPE, removeOwner, setOwner } from "../../resources/owners";
import { BODY_PROBLEMS, json, jsonBody, problems, routes, VERIFY_SECURITY, withBody } from "../openapi";

const OwnerParams = z.object({
  type: matching(RESOURCE_TYPE, "must be a resource type: lowercase letters and digits").openapi({
    param: { name: "type", in: "path" },
    example: "mailbox",
  }),
  id: matching(RESOURCE_ID, "must be a resource id: letters, digits, `_`, `.` and `-`").openapi({
    param: { name: "id", in: "path" },
    example: "mbx_1",
  }),
});

const OwnershipChange = z.strictObject({ accountId: z.string().min(1).max(64) }).openapi("OwnershipChange");

const Ownership = z.strictObject({ type: z.string(), id: z.string(), accountId: z.string(), createdAt: z.string() }).openapi("Ownership");

const BACKEND_PROBLEMS = [
  "missing_credentials",
  "invalid_verify_token",
  "rate_limited",
  "database_unavailable",
  "configuration_error",
] as const;
const notFound = () => new ApiError("not_found", "No account owns this resource.");

/** The path's resource: its type one of RESOURCE_TYPES (no key or route can name another), else 400. */
function resource(c: RequestContext, { type, id }: { type: string; id: string }): { type: string; id: string } {
  const types = c.get("config").resourceTypes;
  if (!types.includes(type))
    throw invalidRequest([{ field: "type", message: `must be one of RESOURCE_TYPES: ${types.join(", ") || "(none configured)"}` }]);
  return { type, id };
}

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
    async (c) => {
      const { type, id } = resource(c, c.req.valid("param"));
      const { accountId } = c.req.valid("json");
      const [account] = await db(c.env.DB).select({ id: accounts.id }).from(accounts).where(eq(accounts.id, accountId)).limit(1);
      if (!account) throw new ApiError("not_found", "No account has this id.");
      return c.json(await setOwner(c.env.DB, type, id, accountId), 200);
    },
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
    async (c) => {
      const { type, id } = resource(c, c.req.valid("param"));
      const found = await getOwnership(c.env.DB, type, id);
      if (!found) throw notFound();
      return c.json(found, 200);
    },
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
      const { type, id } = resource(c, c.req.valid("param"));
      if (!(await removeOwner(c.env.DB, type, id))) throw notFound();
      return c.body(null, 204);
    },
  );
