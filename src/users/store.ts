import { and, eq, inArray } from "drizzle-orm";
import type { Principal } from "../core/principal";
import type { Db } from "../platform/db/client";
import { listPage, type Page } from "../platform/db/pagination";
import { type User, users } from "../platform/db/schema";

/** SQL: the users `p` may see: every user of the account for an admin, only themselves for a member. */
export function visibleTo(p: Principal) {
  return and(eq(users.accountId, p.accountId), p.role === "admin" ? undefined : eq(users.id, p.userId));
}

export async function findUser(d: Db, p: Principal, id: string): Promise<User | undefined> {
  const [user] = await d
    .select()
    .from(users)
    .where(and(visibleTo(p), eq(users.id, id)))
    .limit(1);
  return user;
}

export function listUsers(d: Db, p: Principal, page: Page) {
  return listPage(d, users, visibleTo(p), page);
}

/** The emails of the users among `ids` that `p` may see, in one read. */
export async function emails(d: Db, p: Principal, ids: string[]): Promise<Map<string, string>> {
  const unique = [...new Set(ids)];
  if (unique.length === 0) return new Map();
  const found = await d
    .select({ id: users.id, email: users.email })
    .from(users)
    .where(and(visibleTo(p), inArray(users.id, unique)));
  return new Map(found.map((u) => [u.id, u.email]));
}
