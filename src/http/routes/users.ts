import { createRoute } from "@hono/zod-openapi";
import { IdParam, PageQuery, page } from "../../core/schemas";
import { authenticate } from "../../guards/authenticate";
import { pageOf } from "../../platform/db/pagination";
import { InvitationView, InvitedUser, NewUser, UserChange, UserView, userView } from "../../users/schemas";
import { createUser, getUser, listUsers, reinvite, updateUser } from "../../users/service";
import { BODY_PROBLEMS, json, jsonBody, KEY_PROBLEMS, KEY_SECURITY, problems, routes, withBody } from "../openapi";

const admin = authenticate("admin");

/** Users of the caller's account; admins only. */
export const usersRoutes = routes()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      summary: "Create a user",
      security: KEY_SECURITY,
      middleware: withBody(admin),
      request: { body: jsonBody(NewUser) },
      responses: {
        201: json(InvitedUser, "The new user and their invitation (shown this once)"),
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "email_taken"),
      },
    }),
    async (c) => {
      const { user, invitation } = await createUser(c.get("deps"), c.get("principal"), c.req.valid("json"), new URL(c.req.url));
      c.header("Cache-Control", "no-store");
      return c.json({ ...userView(user), invitation }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      summary: "List users, newest first",
      security: KEY_SECURITY,
      middleware: admin,
      request: { query: PageQuery },
      responses: { 200: json(page(UserView), "A page of users"), ...problems(...KEY_PROBLEMS, "invalid_request") },
    }),
    async (c) => {
      const { rows, nextCursor } = await listUsers(c.get("deps"), c.get("principal"), pageOf(c.req.valid("query")));
      return c.json({ data: rows.map(userView), nextCursor }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      summary: "Read a user",
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: IdParam },
      responses: { 200: json(UserView, "The user"), ...problems(...KEY_PROBLEMS, "not_found") },
    }),
    async (c) => c.json(userView(await getUser(c.get("deps"), c.get("principal"), c.req.valid("param").id)), 200),
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      summary: "Change a user's role or disable them",
      description:
        "Takes effect on the user's keys and sessions before the answer; 503 `change_pending` when it could not, and a repeat completes it.",
      security: KEY_SECURITY,
      middleware: withBody(admin),
      request: { params: IdParam, body: jsonBody(UserChange) },
      responses: {
        200: json(UserView, "The user as stored"),
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "not_found", "last_admin", "last_active_key", "change_pending"),
      },
    }),
    async (c) => {
      const user = await updateUser(c.get("deps"), c.get("principal"), c.req.valid("param").id, c.req.valid("json"));
      return c.json(userView(user), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/invitation",
      summary: "A new invitation for a user: their first password, or a reset",
      description: "Any earlier unused invitation of the user stops working. The token is shown this once.",
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: IdParam },
      responses: { 201: json(InvitationView, "The invitation"), ...problems(...KEY_PROBLEMS, "not_found") },
    }),
    async (c) => {
      c.header("Cache-Control", "no-store");
      return c.json(await reinvite(c.get("deps"), c.get("principal"), c.req.valid("param").id, new URL(c.req.url)), 201);
    },
  );
