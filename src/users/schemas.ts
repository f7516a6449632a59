import { z } from "@hono/zod-openapi";
import type { User } from "../db/schema";
import { matching, Timestamp } from "../schemas";

/** Deliberately loose: one @, no spaces, a dot in the domain. Delivery is the proof of an address. */
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export const Email = matching(EMAIL, "must be an email address")
  .max(254)
  .transform((e) => e.toLowerCase())
  .openapi({ example: "dev@example.com" });
export const Role = z.enum(["admin", "member"]);

export const NewUser = z.strictObject({ email: Email, role: Role }).openapi("NewUser");
export const UserChange = z.strictObject({ role: Role.optional(), disabled: z.boolean().optional() }).openapi("UserChange");

export const UserView = z
  .strictObject({ id: z.string(), email: z.string(), role: Role, disabled: z.boolean(), createdAt: Timestamp })
  .openapi("User");

export function userView(u: User): z.infer<typeof UserView> {
  return { id: u.id, email: u.email, role: u.role, disabled: u.disabled, createdAt: u.createdAt };
}
