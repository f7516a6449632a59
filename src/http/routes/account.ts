import { createRoute, z } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import { AccountActivity, AccountChange, AccountView, accountView } from "../../accounts/schemas";
import { updateAccount } from "../../accounts/service";
import { RateLimit } from "../../core/schemas";
import { authenticate } from "../../guards/authenticate";
import { keyUsage } from "../../keys/store";
import { recentEvents } from "../../platform/db/audit";
import { db } from "../../platform/db/client";
import { type Account, accounts } from "../../platform/db/schema";
import { AccountUsage, UsageQuery } from "../../usage/schemas";
import { accountUsage } from "../../usage/service";
import { Role } from "../../users/schemas";
import { BODY_PROBLEMS, json, jsonBody, KEY_PROBLEMS, KEY_SECURITY, problems, routes, withBody } from "../openapi";

const RECENT_EVENTS = 50;

async function findAccount(d1: D1Database, id: string): Promise<Account> {
  const [account] = await db(d1).select().from(accounts).where(eq(accounts.id, id)).limit(1);
  // The principal was read with its account a moment ago; accounts are never deleted.
  return account as Account;
}

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
      const p = c.get("principal");
      const d = db(c.env.DB);
      const now = new Date();
      const [account, usage, events] = await Promise.all([
        findAccount(c.env.DB, p.accountId),
        keyUsage(d, p.accountId, now),
        recentEvents(d, p.accountId, RECENT_EVENTS, p.role === "admin" ? null : p.userId),
      ]);
      return c.json({ ...accountView(account), activeKeys: usage.activeKeys, lastUsedAt: usage.lastUsedAt, recentEvents: events }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/",
      summary: "Change the account's default limit, members' ceiling, or whether members create keys",
      security: KEY_SECURITY,
      middleware: withBody(authenticate("admin")),
      request: { body: jsonBody(AccountChange) },
      responses: { 200: json(AccountView, "The account as stored"), ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS) },
    }),
    async (c) => {
      const p = c.get("principal");
      await updateAccount(c, p, c.req.valid("json"));
      return c.json(accountView(await findAccount(c.env.DB, p.accountId)), 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/usage",
      summary: "The account's requests per hour, with each key's totals",
      description: "Members see their own keys only.",
      security: KEY_SECURITY,
      middleware: authenticate("full"),
      request: { query: UsageQuery },
      responses: {
        200: json(AccountUsage, "The account's hours, without gaps, and its keys' totals"),
        ...problems(...KEY_PROBLEMS, "invalid_request"),
      },
    }),
    async (c) => {
      const p = c.get("principal");
      const { from, to } = c.req.valid("query");
      const usage = await accountUsage(c.env.DB, p.accountId, from, to, p.role === "admin" ? null : p.userId);
      return c.json({ from, to, ...usage }, 200);
    },
  );

const Whoami = z
  .strictObject({
    accountId: z.string(),
    keyId: z.string().nullable().openapi({ description: "Null for a person's session (access token or dashboard)" }),
    userId: z.string(),
    role: Role,
    scopes: z.array(z.string()),
    rateLimit: RateLimit,
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
    const { accountId, keyId, userId, role, scopes, rateLimit } = c.get("principal");
    return c.json({ accountId, keyId, userId, role, scopes, rateLimit }, 200);
  },
);
