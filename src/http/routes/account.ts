import { createRoute, z } from "@hono/zod-openapi";
import { AccountActivity, AccountChange, AccountView, accountView } from "../../accounts/schemas";
import { accountActivity, updateAccount } from "../../accounts/service";
import { RateLimit, RateLimits, shorthand } from "../../core/schemas";
import { poolBalance } from "../../credits/service";
import { authenticate } from "../../guards/authenticate";
import { keyHygiene } from "../../keys/hygiene";
import { HYGIENE_IDS, KeyHygiene } from "../../keys/schemas";
import { AccountUsage, UsageQuery } from "../../usage/schemas";
import { accountUsage } from "../../usage/service";
import { Role } from "../../users/schemas";
import { BODY_PROBLEMS, json, jsonBody, KEY_PROBLEMS, KEY_SECURITY, problems, routes, withBody } from "../openapi";

/** The caller's account with its key activity, for monitoring ("Monitor your account activity", as Robotomail says). */
export const accountRoutes = routes()
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      summary: "The caller's account, its active keys, last use and recent activity",
      description: "Members see only their own actions and their own keys' events.",
      security: KEY_SECURITY,
      middleware: authenticate("full"),
      responses: { 200: json(AccountActivity, "The account"), ...problems(...KEY_PROBLEMS) },
    }),
    async (c) => {
      const deps = c.get("deps");
      const { account, activeKeys, lastUsedAt, recentEvents } = await accountActivity(deps, c.get("principal"));
      const events = recentEvents.map(({ actorEmail: _, ...event }) => event);
      const pool = await poolBalance(deps, account);
      return c.json({ ...accountView(account, deps.now(), pool), activeKeys, lastUsedAt, recentEvents: events }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/",
      summary: "Change the account's default limit, members' ceiling, whether members create keys, or its keys' allowedIps",
      description:
        "Admins only. A change of `allowedIps` is in every key's object before the answer (503 `change_pending` when it could not be; a repeat completes it).",
      security: KEY_SECURITY,
      middleware: withBody(authenticate("admin")),
      request: { body: jsonBody(AccountChange) },
      responses: {
        200: json(AccountView, "The account as stored"),
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "external_id_taken", "change_pending"),
      },
    }),
    async (c) => {
      const deps = c.get("deps");
      const account = await updateAccount(deps, c.get("principal"), c.req.valid("json"));
      const pool = await poolBalance(deps, account);
      return c.json(accountView(account, deps.now(), pool), 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/usage",
      summary: "The account's requests per hour, with each key's totals",
      description:
        "Members see their own keys only. The keys' counts reach the account's rollup within a minute or so of the requests (a key's own usage is as of now).",
      security: KEY_SECURITY,
      middleware: authenticate("full"),
      request: { query: UsageQuery },
      responses: {
        200: json(AccountUsage, "The account's hours, without gaps, and its keys' totals"),
        ...problems(...KEY_PROBLEMS, "invalid_request", "rate_limiter_unavailable"),
      },
    }),
    async (c) => {
      const { from, to } = c.req.valid("query");
      const usage = await accountUsage(c.get("deps"), c.get("principal"), { from, to });
      return c.json({ from, to, ...usage }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/key-hygiene",
      summary: "Active keys worth a look: never used, idle for 90 days, without expiry, older than a year, reported leaked",
      description: `Admins see the account's keys, members their own. Each category has its exact count and the ids of at most ${HYGIENE_IDS} of its keys, oldest first.`,
      security: KEY_SECURITY,
      middleware: authenticate("full"),
      responses: { 200: json(KeyHygiene, "The categories, each with its count and key ids"), ...problems(...KEY_PROBLEMS) },
    }),
    async (c) => c.json(await keyHygiene(c.get("deps"), c.get("principal")), 200),
  );

const Whoami = z
  .strictObject({
    accountId: z.string(),
    keyId: z.string().nullable().openapi({ description: "Null for a person's session (access token or dashboard)" }),
    userId: z.string(),
    role: Role,
    scopes: z.array(z.string()),
    rateLimit: RateLimit.openapi({ description: 'The limit named "default" of `rateLimits`, else its first' }),
    rateLimits: RateLimits,
  })
  .openapi("Whoami");

/** What a key is: its account, owner, role, scopes and rate limit. Any valid key may ask, including resource-scoped ones. */
export const whoamiRoutes = routes().openapi(
  createRoute({
    method: "get",
    path: "/",
    summary: "What the calling key is",
    security: KEY_SECURITY,
    middleware: authenticate("any"),
    responses: { 200: json(Whoami, "The key's account, owner, role, scopes and limit"), ...problems(...KEY_PROBLEMS) },
  }),
  (c) => {
    const { accountId, keyId, userId, role, scopes, limits, shared } = c.get("principal");
    return c.json(
      { accountId, keyId, userId, role, scopes, rateLimit: shorthand([...limits, ...shared]), rateLimits: [...limits, ...shared] },
      200,
    );
  },
);
