import { createRoute, z } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import { AccountActivity, AccountChange, AccountView, accountView } from "../accounts/schemas";
import { authenticate } from "../auth/middleware";
import { auditInsert, recentEvents } from "../db/audit";
import { batch, db } from "../db/client";
import { type Account, accounts } from "../db/schema";
import { keyUsage, liveKeyIds } from "../keys/store";
import { BODY_PROBLEMS, json, jsonBody, jsonObject, KEY_PROBLEMS, KEY_SECURITY, problems, routes } from "../openapi";
import { reloadKeys } from "../ratelimit/limiter";
import { RateLimit } from "../schemas";
import { Role } from "../users/schemas";
import { allow } from "./method-not-allowed";

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
      middleware: [authenticate("full")],
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
      middleware: [authenticate("admin"), jsonObject],
      request: { body: jsonBody(AccountChange) },
      responses: { 200: json(AccountView, "The account as stored"), ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS) },
    }),
    async (c) => {
      const p = c.get("principal");
      const { rateLimit, maxRateLimit, membersCanCreateKeys } = c.req.valid("json");

      const change = {
        ...(rateLimit ? { rateLimit: rateLimit.limit, rateLimitWindowSeconds: rateLimit.windowSeconds } : {}),
        ...(maxRateLimit === undefined
          ? {}
          : { maxRateLimit: maxRateLimit?.limit ?? null, maxRateLimitWindowSeconds: maxRateLimit?.windowSeconds ?? null }),
        ...(membersCanCreateKeys === undefined ? {} : { membersCanCreateKeys }),
      };
      if (Object.keys(change).length > 0) {
        const d = db(c.env.DB);
        const now = new Date();
        await batch(c.env.DB, [
          d.update(accounts).set(change).where(eq(accounts.id, p.accountId)),
          auditInsert(
            d,
            { accountId: p.accountId, actor: p.userId, action: "account.updated", target: p.accountId, requestId: c.get("requestId") },
            now,
          ),
        ]);
        // Every key of the account carries its default limit; an account may have many keys, so this finishes after the
        // answer (a limit is not a right: a key that misses this reload picks the change up within RECORD_TTL_MS).
        if (rateLimit) {
          c.executionCtx.waitUntil(
            liveKeyIds(d, { accountId: p.accountId }, now)
              .then((ids) => reloadKeys(c, ids))
              .catch(() => {}),
          );
        }
      }
      return c.json(accountView(await findAccount(c.env.DB, p.accountId)), 200);
    },
  )
  .all("/", allow("GET", "PATCH"));

const Whoami = z
  .strictObject({
    accountId: z.string(),
    keyId: z.string(),
    userId: z.string(),
    role: Role,
    scopes: z.array(z.string()),
    rateLimit: RateLimit,
  })
  .openapi("Whoami");

/** What a key is: its account, owner, role, scopes and rate limit. Any valid key may ask, including resource-scoped ones. */
export const whoamiRoutes = routes()
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      summary: "What the calling key is",
      security: KEY_SECURITY,
      middleware: [authenticate("any")],
      responses: { 200: json(Whoami, "The key's account, owner, role, scopes and limit"), ...problems(...KEY_PROBLEMS) },
    }),
    (c) => {
      const { accountId, keyId, userId, role, scopes, rateLimit } = c.get("principal");
      return c.json({ accountId, keyId, userId, role, scopes, rateLimit }, 200);
    },
  )
  .all("/", allow("GET"));
