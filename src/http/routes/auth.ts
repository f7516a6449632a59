import { createRoute, z } from "@hono/zod-openapi";
import { isFullAccess } from "../../core/grants";
import type { Principal } from "../../core/principal";
import { IdParam } from "../../core/schemas";
import { authenticate } from "../../guards/authenticate";
import { passwordAttempts, spendFailure } from "../../guards/spending";
import { acceptInvitation } from "../../people/invitations";
import { AcceptInvitation, LoginRequest, PasswordChange, RefreshRequest, SessionView, TokenPair, Welcome } from "../../people/schemas";
import { changePassword, endSessions, listSessions, login, refresh } from "../../people/sessions";
import { ApiError } from "../../platform/errors";
import { verifyAccessToken } from "../../tokens/access";
import { BODY_PROBLEMS, json, jsonBody, KEY_PROBLEMS, KEY_SECURITY, PERSON_SECURITY, problems, routes, withBody } from "../openapi";

/**
 * A person's own sessions and password are theirs whatever their grants (a member whose grants were narrowed can still
 * log out, end a stolen session or change the password); an API key stands for its owner here only with full access
 * (`ownerOnly`).
 */
const person = authenticate("any");
const LOGIN_PROBLEMS = [
  "invalid_credentials",
  "account_required",
  "rate_limited",
  "rate_limiter_unavailable",
  "database_unavailable",
] as const;

/** 403 for an API key without full access: a key scoped to resources does not stand for its owner's sessions. */
function ownerOnly(p: Principal): void {
  if (p.sessionId === undefined && !isFullAccess(p.scopes))
    throw new ApiError("insufficient_scope", "This key is scoped to resources: only a full-access key or the person may do this.");
}

/** The request's session, or 403: these acts belong to a person who logged in, not to an API key. */
function sessionOf(p: { sessionId?: string }): string {
  if (p.sessionId === undefined)
    throw new ApiError("insufficient_scope", "This needs a person's access token (POST /v1/auth/login), not an API key.");
  return p.sessionId;
}

/** People: invitations, passwords, login tokens with refresh, and their sessions (seed 003's flow). */
export const authRoutes = routes()
  .openapi(
    createRoute({
      method: "post",
      path: "/login",
      summary: "Log in with email and password",
      description: "Answers an access token (1 hour) and a refresh token. Failed attempts are limited per email and per client address.",
      request: { body: jsonBody(LoginRequest) },
      responses: { 200: json(TokenPair, "The tokens"), ...problems(...BODY_PROBLEMS, ...LOGIN_PROBLEMS) },
    }),
    async (c) => {
      c.header("Cache-Control", "no-store");
      return c.json(await login(c.get("deps"), passwordAttempts(c), c.req.valid("json"), c.req.header("User-Agent") ?? null), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/refresh",
      summary: "New tokens for a session",
      description:
        "With `{refresh_token}` (each works once: presented again within 30 s it answers the same pair, later it ends the session), or with `Authorization: Bearer <access token>` before it expires.",
      security: [...PERSON_SECURITY, {}],
      request: { body: { content: { "application/json": { schema: RefreshRequest } }, required: false } },
      responses: {
        200: json(TokenPair, "The new tokens; the previous refresh token no longer works"),
        ...problems(
          ...BODY_PROBLEMS,
          "missing_credentials",
          "invalid_token",
          "token_expired",
          "session_ended",
          "invalid_refresh_token",
          "rate_limited",
          "database_unavailable",
        ),
      },
    }),
    async (c) => {
      c.header("Cache-Control", "no-store");
      const bearer = /^Bearer +(\S+) *$/i.exec(c.req.header("Authorization") ?? "")?.[1];
      try {
        if (bearer !== undefined) {
          const result = await verifyAccessToken(c.get("config").signingKeys, bearer, new Date());
          if (!result.ok)
            throw new ApiError(result.code, "The access token is not valid or has expired; use the refresh token or log in again.");
          return c.json(await refresh(c.get("deps"), { claims: result.claims }), 200);
        }
        const text = await c.req.text();
        const body = RefreshRequest.safeParse(text === "" ? {} : JSON.parse(text));
        if (!body.success) throw new ApiError("missing_credentials", "Send `{refresh_token}` or `Authorization: Bearer <access token>`.");
        return c.json(await refresh(c.get("deps"), { refreshToken: body.data.refresh_token }), 200);
      } catch (err) {
        // A wrong token spends the address's failure budget, as a wrong key does.
        if (err instanceof ApiError && err.status === 401) await spendFailure(c);
        throw err;
      }
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/logout",
      summary: "End this session",
      description:
        "In force everywhere before the answer (the session's next request is refused); 503 `change_pending` when it could not be, in force within seconds all the same.",
      security: PERSON_SECURITY,
      middleware: person,
      responses: {
        204: { description: "Ended; its access and refresh tokens stop working" },
        ...problems(...KEY_PROBLEMS, "change_pending"),
      },
    }),
    async (c) => {
      const p = c.get("principal");
      await endSessions(c.get("deps"), { sessionId: sessionOf(p), userId: p.userId }, "logout");
      return c.body(null, 204);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/accept-invitation",
      summary: "Set a password with an invitation",
      description:
        "Invitations work once and for 7 days; setting a password ends the user's sessions (in force before the answer, or within seconds when it could not be).",
      request: { body: jsonBody(AcceptInvitation) },
      responses: {
        200: json(Welcome, "The password is set; log in with it"),
        ...problems(...BODY_PROBLEMS, "invalid_invitation", "invitation_expired", "rate_limited", "database_unavailable"),
      },
    }),
    async (c) => {
      const { token, password } = c.req.valid("json");
      try {
        return c.json(await acceptInvitation(c.get("deps"), token, password), 200);
      } catch (err) {
        // Guessing invitations spends the address's failure budget.
        if (err instanceof ApiError && err.code === "invalid_invitation") await spendFailure(c);
        throw err;
      }
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/password",
      summary: "Change your password",
      description:
        "Needs the current password; ends your other sessions, in force before the answer (503 `change_pending` when it could not be, in force within seconds all the same). A wrong current password spends from the same budgets as a failed login (per email and per client address).",
      security: PERSON_SECURITY,
      middleware: withBody(person),
      request: { body: jsonBody(PasswordChange) },
      responses: {
        204: { description: "Changed" },
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "invalid_credentials", "change_pending"),
      },
    }),
    async (c) => {
      const p = c.get("principal");
      sessionOf(p);
      const { currentPassword, newPassword } = c.req.valid("json");
      await changePassword(c.get("deps"), passwordAttempts(c), p, currentPassword, newPassword);
      return c.body(null, 204);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/sessions",
      summary: "Your sessions that still work",
      security: KEY_SECURITY,
      middleware: person,
      responses: { 200: json(z.strictObject({ data: z.array(SessionView) }), "Newest first"), ...problems(...KEY_PROBLEMS) },
    }),
    async (c) => {
      ownerOnly(c.get("principal"));
      return c.json({ data: await listSessions(c.get("deps"), c.get("principal")) }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/sessions/{id}",
      summary: "End one of your sessions",
      description:
        "In force everywhere before the answer (the session's next request is refused); 503 `change_pending` when it could not be, in force within seconds all the same.",
      security: KEY_SECURITY,
      middleware: person,
      request: { params: IdParam },
      responses: { 204: { description: "Ended" }, ...problems(...KEY_PROBLEMS, "not_found", "change_pending") },
    }),
    async (c) => {
      const p = c.get("principal");
      ownerOnly(p);
      const ended = await endSessions(c.get("deps"), { sessionId: c.req.valid("param").id, userId: p.userId }, "ended_by_user");
      if (ended === 0) throw new ApiError("not_found", "You have no such session that still works.");
      return c.body(null, 204);
    },
  );
