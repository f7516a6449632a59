import { z } from "@hono/zod-openapi";
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH } from "../core/password";
import { matching, Timestamp } from "../core/schemas";

/** Deliberately loose: one @, no spaces, a dot in the domain. Delivery is the proof of an address. */
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** A person's email, as they log in with it (lower case). */
export const Email = matching(EMAIL, "must be an email address")
  .max(254)
  .transform((e) => e.toLowerCase())
  .openapi({ example: "dev@example.com" });

// Length and strength are judged by auth/password.ts (it knows the email); the schema only bounds the input.
const Password = z
  .string()
  .min(1)
  .max(MAX_PASSWORD_LENGTH * 4);

export const LoginRequest = z
  .strictObject({
    email: Email,
    password: Password,
    accountId: z
      .string()
      .min(1)
      .max(64)
      .optional()
      .openapi({ description: "Needed only when the email belongs to users of several accounts" }),
  })
  .openapi("LoginRequest");

/** A password being set: the document states the length the rules ask (the rules themselves also refuse weak ones). */
const NewPassword = Password.openapi({
  minLength: MIN_PASSWORD_LENGTH,
  maxLength: MAX_PASSWORD_LENGTH,
  description: `${MIN_PASSWORD_LENGTH} to ${MAX_PASSWORD_LENGTH} characters; not the email, not a common password`,
});

export const RefreshRequest = z.strictObject({ refresh_token: z.string().min(1).max(256) }).openapi("RefreshRequest");

export const TokenPair = z
  .strictObject({
    access_token: z.string(),
    token_type: z.literal("bearer"),
    expires_in: z.number().int().openapi({ example: 3600 }),
    refresh_token: z.string().openapi({ description: "Works once: each refresh answers a new one" }),
  })
  .openapi("TokenPair");

export const AcceptInvitation = z.strictObject({ token: z.string().min(1).max(256), password: NewPassword }).openapi("AcceptInvitation");

export const PasswordChange = z.strictObject({ currentPassword: Password, newPassword: NewPassword }).openapi("PasswordChange");

export const Welcome = z.strictObject({ userId: z.string(), accountId: z.string(), email: z.string() }).openapi("PasswordSet");

export const SessionView = z
  .strictObject({
    id: z.string(),
    createdAt: Timestamp,
    lastUsedAt: Timestamp,
    expiresAt: Timestamp,
    userAgent: z.string().nullable(),
    current: z.boolean().openapi({ description: "Whether this request came with it" }),
  })
  .openapi("Session");
