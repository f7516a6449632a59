import { and, eq } from "drizzle-orm";
import { grantOf, RESOURCE_ID, RESOURCE_TYPE } from "../core/grants";
import { type Db, db } from "../platform/db/client";
import { accounts, resourceOwners } from "../platform/db/schema";

/**
 * Owners this isolate has read, for at most a second (the same bound as a key's record under a lease): a hot resource
 * costs one D1 read a second, and a resource the provider moves to another account leaves its old owner within a
 * second. Absence is never kept: a resource created a moment ago in another isolate must be found at once.
 */
const known = new Map<string, { accountId: string; until: number }>();
const KEEP_MS = 1000;
const MAX_KNOWN = 10_000;
/** Counts this isolate's own changes, so a read that was under way during one never brings back what it replaced. */
let changes = 0;

/** Keeps what a read or a change found, until a second after `at` (when the read was asked, or now for a change). */
function remember(type: string, id: string, accountId: string | null, at = Date.now()): void {
  const name = grantOf(type, id);
  known.delete(name);
  if (accountId === null) return;
  if (known.size >= MAX_KNOWN) known.delete(known.keys().next().value as string);
  known.set(name, { accountId, until: at + KEEP_MS });
}

function changed(type: string, id: string, accountId: string | null): void {
  changes++;
  remember(type, id, accountId);
}

/** The account that owns a resource, or null when no account does (then no key reaches it). */
export async function ownerOf(d1: D1Database, type: string, id: string): Promise<string | null> {
  const cached = known.get(grantOf(type, id));
  if (cached && cached.until > Date.now()) return cached.accountId;
  if (!RESOURCE_TYPE.test(type) || !RESOURCE_ID.test(id)) return null;
  const [askedAt, before] = [Date.now(), changes];
  const [row] = await db(d1)
    .select({ accountId: resourceOwners.accountId })
    .from(resourceOwners)
    .where(and(eq(resourceOwners.type, type), eq(resourceOwners.resourceId, id)))
    .limit(1);
  // The row is as old as the question: it is kept a second from then, and not at all if this isolate changed an owner
  // meanwhile (the answer may predate that change).
  if (changes === before) remember(type, id, row?.accountId ?? null, askedAt);
  return row?.accountId ?? null;
}

export type Ownership = { type: string; id: string; accountId: string; createdAt: string };

/**
 * Records that `accountId` owns a resource it just created, unless another account already does (the first owner
 * keeps it: only the provider's backend moves a resource). Answers the owner after the call.
 */
export async function claim(d1: D1Database, type: string, id: string, accountId: string): Promise<string> {
  const [row] = await db(d1)
    .insert(resourceOwners)
    .values({ type, resourceId: id, accountId, createdAt: new Date().toISOString() })
    .onConflictDoUpdate({ target: [resourceOwners.type, resourceOwners.resourceId], set: { type } })
    .returning({ accountId: resourceOwners.accountId });
  if (!row) throw new Error("the claim returned no owner");
  changed(type, id, row.accountId);
  return row.accountId;
}

/** Forgets a resource `accountId` owned and deleted; another account's stays as it is. */
export async function release(d1: D1Database, type: string, id: string, accountId: string): Promise<void> {
  await db(d1)
    .delete(resourceOwners)
    .where(and(eq(resourceOwners.type, type), eq(resourceOwners.resourceId, id), eq(resourceOwners.accountId, accountId)));
  changed(type, id, null);
}

/** The provider's backend says who owns a resource (created before Keygate, or moved): it replaces any owner. */
export async function setOwner(d: Db, type: string, id: string, accountId: string, now: Date): Promise<Ownership> {
  const createdAt = now.toISOString();
  const [row] = await d
    .insert(resourceOwners)
    .values({ type, resourceId: id, accountId, createdAt })
    .onConflictDoUpdate({ target: [resourceOwners.type, resourceOwners.resourceId], set: { accountId, createdAt } })
    .returning({ createdAt: resourceOwners.createdAt });
  changed(type, id, accountId);
  return { type, id, accountId, createdAt: row?.createdAt ?? createdAt };
}

export async function getOwnership(d: Db, type: string, id: string): Promise<Ownership | null> {
  const [row] = await d
    .select()
    .from(resourceOwners)
    .where(and(eq(resourceOwners.type, type), eq(resourceOwners.resourceId, id)))
    .limit(1);
  return row ? { type, id, accountId: row.accountId, createdAt: row.createdAt } : null;
}

/** Removes a resource's owner, whoever it is; false when it had none. */
export async function removeOwner(d: Db, type: string, id: string): Promise<boolean> {
  const gone = await d
    .delete(resourceOwners)
    .where(and(eq(resourceOwners.type, type), eq(resourceOwners.resourceId, id)))
    .returning({ type: resourceOwners.type });
  changed(type, id, null);
  return gone.length > 0;
}

/** Whether an account has this id. */
export async function accountExists(d: Db, accountId: string): Promise<boolean> {
  const [account] = await d.select({ id: accounts.id }).from(accounts).where(eq(accounts.id, accountId)).limit(1);
  return account !== undefined;
}
