import { z } from "@hono/zod-openapi";
import { FULL_ACCESS } from "../core/grants";
import { extend, Timestamp } from "../core/schemas";
import { Grants } from "../keys/schemas";
import { Email } from "../people/schemas";
import type { User } from "../platform/db/schema";

export const Role = z.enum(["admin", "member"]);

export const NewUser = z.strictObject({ email: Email, role: Role }).openapi("NewUser");
export const UserChange = z
  .strictObject({
    role: Role.optional(),
    disabled: z.boolean().optional(),
    grants: Grants.optional().openapi({
      description: "What the user's keys may reach: `[\"*\"]` or resource grants; a key's rights are its scopes within these",
    }),
  })
  .openapi("UserChange");

export const UserView = z
  .strictObject({
    id: z.string(),
    email: z.string(),
    role: Role,
    disabled: z.boolean(),
    grants: z.array(z.string()).openapi({ description: 'Admins always hold `["*"]`' }),
    createdAt: Timestamp,
  })
  .openapi("User");

export function userView(u: User): z.infer<typeof UserView> {
  const grants = u.role === "admin" ? [FULL_ACCESS] : (JSON.parse(u.grants) as string[]);
  return { id: u.id, email: u.email, role: u.role, disabled: u.disabled, grants, createdAt: u.createdAt };
}

export const InvitationView = z
  .strictObject({
    token: z.string().openapi({ description: "Shown this once; only its hash is kept" }),
    url: z.string().openapi({ description: "The dashboard page that sets the password, the token in its fragment" }),
    expiresAt: Timestamp,
  })
  .openapi("Invitation");

export const InvitedUser = extend(UserView, { invitation: InvitationView }).openapi("InvitedUser");
