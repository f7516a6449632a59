import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { authenticate } from "../auth/middleware";
import { requireFullAccess } from "../auth/principal";
import { recentEvents } from "../db/audit";
import { db } from "../db/client";
import { accounts } from "../db/schema";
import type { AppEnv } from "../env";
import { keyUsage } from "../keys/store";
import { allow } from "./method-not-allowed";

const RECENT_EVENTS = 50;

/** The caller's account with its key activity, for monitoring (seed: "Monitor your account activity"). */
export const accountRoutes = new Hono<AppEnv>()
  .use(authenticate)
  .get("/", async (c) => {
    const p = c.get("principal");
    requireFullAccess(p);
    const d = db(c.env.DB);
    const now = new Date();
    const [[account], usage, events] = await Promise.all([
      d.select().from(accounts).where(eq(accounts.id, p.accountId)).limit(1),
      keyUsage(d, p.accountId, now),
      recentEvents(d, p.accountId, RECENT_EVENTS),
    ]);
    return c.json({ ...account, activeKeys: usage.activeKeys, lastUsedAt: usage.lastUsedAt, recentEvents: events });
  })
  .all("/", allow("GET"));

/** What a key is: its account, owner, role and scopes. Any valid key may ask, including resource-scoped ones. */
export const whoamiRoutes = new Hono<AppEnv>()
  .use(authenticate)
  .get("/", (c) => {
    const { accountId, keyId, userId, role, scopes } = c.get("principal");
    return c.json({ accountId, keyId, userId, role, scopes });
  })
  .all("/", allow("GET"));
