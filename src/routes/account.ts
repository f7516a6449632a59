import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { authenticate } from "../auth/middleware";
import { Fields, readJson, readRateLimit } from "../body";
import { auditInsert, recentEvents } from "../db/audit";
import { batch, db } from "../db/client";
import { type Account, accounts } from "../db/schema";
import type { AppEnv } from "../env";
import { keyUsage, liveKeyIds } from "../keys/store";
import { reloadKeys } from "../ratelimit/limiter";
import { allow } from "./method-not-allowed";

const RECENT_EVENTS = 50;

export function accountView(a: Account) {
  return {
    id: a.id,
    name: a.name,
    keyPrefix: a.keyPrefix,
    membersCanCreateKeys: a.membersCanCreateKeys,
    rateLimit: { limit: a.rateLimit, windowSeconds: a.rateLimitWindowSeconds },
    maxRateLimit: a.maxRateLimit === null ? null : { limit: a.maxRateLimit, windowSeconds: a.maxRateLimitWindowSeconds },
    createdAt: a.createdAt,
  };
}

async function findAccount(d1: D1Database, id: string): Promise<Account> {
  const [account] = await db(d1).select().from(accounts).where(eq(accounts.id, id)).limit(1);
  // The principal was read with its account a moment ago; accounts are never deleted.
  return account as Account;
}

/** The caller's account with its key activity, for monitoring (seed: "Monitor your account activity"). */
export const accountRoutes = new Hono<AppEnv>()
  .get("/", authenticate("full"), async (c) => {
    const p = c.get("principal");
    const d = db(c.env.DB);
    const now = new Date();
    const [account, usage, events] = await Promise.all([
      findAccount(c.env.DB, p.accountId),
      keyUsage(d, p.accountId, now),
      recentEvents(d, p.accountId, RECENT_EVENTS, p.role === "admin" ? null : p.userId),
    ]);
    return c.json({ ...accountView(account), activeKeys: usage.activeKeys, lastUsedAt: usage.lastUsedAt, recentEvents: events });
  })
  .patch("/", authenticate("admin"), async (c) => {
    const p = c.get("principal");
    const f = new Fields(await readJson(c));
    const rateLimit = readRateLimit(f);
    const maxRateLimit = readRateLimit(f, "maxRateLimit", { nullable: true });
    const membersCanCreateKeys = f.boolean("membersCanCreateKeys");
    f.done();

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
    return c.json(accountView(await findAccount(c.env.DB, p.accountId)));
  })
  .all("/", allow("GET", "PATCH"));

/** What a key is: its account, owner, role, scopes and rate limit. Any valid key may ask, including resource-scoped ones. */
export const whoamiRoutes = new Hono<AppEnv>()
  .use(authenticate("any"))
  .get("/", (c) => {
    const { accountId, keyId, userId, role, scopes, rateLimit } = c.get("principal");
    return c.json({ accountId, keyId, userId, role, scopes, rateLimit });
  })
  .all("/", allow("GET"));
