import { z } from "@hono/zod-openapi";
import { RESOURCE_ID, RESOURCE_TYPE } from "../core/grants";
import { matching } from "../core/schemas";

/** A resource as a path names it: `/{type}/{id}`. */
export const OwnerParams = z.object({
  type: matching(RESOURCE_TYPE, "must be a resource type: lowercase letters and digits").openapi({
    param: { name: "type", in: "path" },
    example: "mailbox",
  }),
  id: matching(RESOURCE_ID, "must be a resource id: letters, digits, `_`, `.` and `-`").openapi({
    param: { name: "id", in: "path" },
    example: "mbx_1",
  }),
});

export const OwnershipChange = z.strictObject({ accountId: z.string().min(1).max(64) }).openapi("OwnershipChange");

export const Ownership = z
  .strictObject({ type: z.string(), id: z.string(), accountId: z.string(), createdAt: z.string() })
  .openapi("Ownership");
