import { eq } from "drizzle-orm";
import type { AccountLimits } from "../core/ceilings";
import { type Principal, sessionPrincipal } from "../core/principal";
import { type D1, type Db, db } from "../platform/db/client";
import { accountLimitColumns, accounts, plans, sessions, users } from "../platform/db/schema";
import { retryFor } from "../platform/deadline";
import { log, safeError } from "../platform/log";
import { TrustedRecords } from "./trusted";

/** How stale a session's `lastUsedAt` may get before a request writes it again (no D1 write per request). */
const LAST_USED_GRANULARITY_MS = 60_000;
/** How many ended sessions a person's object remembers as ended without reading D1 (the rest are read as ended). */
const MAX_ENDED = 1_000;

/** A session's last use, as its person's object sends it through the usage queue (src/usage/queue.ts writes it). */
export type SessionUse = { sessionUse: { sessionId: string; at: string } };

/** A person as their sessions are judged: their rights and state, and their account's limits. */
type UserRecord = {
  id: string;
  accountId: string;
  role: Principal["role"];
  grants: string;
  disabled: boolean;
  email: string;
  accountSlug: string | null;
  keyPrefix: string;
  account: AccountLimits;
};

/** One session as its person's object holds it. */
type SessionRow = {
  id: string;
  userId: string;
  accountId: string;
  refreshHash: string;
  expiresAt: string;
  endedAt: string | null;
  lastUsedAt: string;
};

/**
 * What a session's request is judged by, and what an isolate holds beside a lease of it: the person's principal as it
 * is now, their email (the dashboard shows it) and the cookie secret's hash the object checked (`proof`; null for an
 * access token, whose signature the isolate checked), so a lease is only ever spent by the same credential.
 */
export type SessionHolder = { principal: Principal; email: string; proof: string | null };

/** A session that no longer works (logged out, ended, expired, replaced by a password change, its user disabled). */
export type SessionEnded = { ok: false; code: "session_ended" };
const ENDED: SessionEnded = { ok: false, code: "session_ended" };

/** Which session a request names: its id, its user and account (an access token's claims), and a cookie's `proof`. */
export type SessionClaim = { userId: string; sessionId: string; accountId?: string; proof?: string | null };

/**
 * A person's sessions as their object (`user:<id>`) knows them: the person read from D1 once and each session read the
 * first time it is used, then trusted (TrustedRecords), so a person's request costs no D1 read. Ending a session is
 * told to the object with the change (`end`): it is refused from then on without a read, even when D1 is down.
 */
export class PersonSessions {
  private readonly users: TrustedRecords<UserRecord | undefined>;
  private readonly rows: TrustedRecords<SessionRow | undefined>;
  /** Sessions told ended, oldest first: refused without a read, whatever a record read before says. */
  private readonly ended = new Set<string>();

  constructor(
    kv: SyncKvStorage,
    private readonly clock: () => number,
    private readonly database: () => D1,
    private readonly queue: () => Queue<SessionUse>,
    private readonly waitUntil: (p: Promise<unknown>) => void,
    ttlMs: number,
    unsettledMs: number,
  ) {
    this.users = new TrustedRecords(kv, clock, ttlMs, unsettledMs, "person-distrust-until");
    this.rows = new TrustedRecords(kv, clock, ttlMs, unsettledMs, "sessions-distrust-until");
  }

  /** The verdict on a session's request: its holder when the session works now, else ended. */
  async judge({ userId, sessionId, accountId, proof = null }: SessionClaim): Promise<{ ok: true; holder: SessionHolder } | SessionEnded> {
    if (this.ended.has(sessionId)) return ENDED;
    const d = db(this.database());
    const [user, row] = await Promise.all([
      this.users.get(userId, () => loadUser(d, userId)),
      this.rows.get(sessionId, () => loadSession(d, sessionId)),
    ]).catch((err: unknown) => {
      // Only what may be logged crosses back to the worker: drizzle's error names the query and its parameters.
      throw new Error(safeError(err));
    });
    const now = this.clock();
    if (this.ended.has(sessionId) || !user || user.disabled || !row || row.userId !== userId) return ENDED;
    if ((accountId !== undefined && row.accountId !== accountId) || row.endedAt !== null || Date.parse(row.expiresAt) <= now) return ENDED;
    if (proof !== null && proof !== row.refreshHash) return ENDED;
    const principal = sessionPrincipal({ ...user, id: sessionId, userId, accountId: row.accountId });
    return { ok: true, holder: { principal, email: user.email, proof } };
  }

  /**
   * Sends the session's last use through the usage queue (to D1 in the consumer's batches) at most once per
   * LAST_USED_GRANULARITY_MS, off the answer's path. A send that fails is tried again for a minute, then by the
   * session's next use.
   */
  used(sessionId: string): void {
    const row = this.rows.peek(sessionId);
    const now = this.clock();
    if (!row || now - Date.parse(row.lastUsedAt) <= LAST_USED_GRANULARITY_MS) return;
    const sent = row.lastUsedAt;
    const at = new Date(now).toISOString();
    this.rows.update(sessionId, (r) => r && { ...r, lastUsedAt: at });
    const send = () => this.queue().send({ sessionUse: { sessionId, at } });
    this.waitUntil(
      send().catch(async (err: unknown) => {
        log("warn", "session_last_used_failed", { error: safeError(err) });
        // Kept and sent again for a minute; past that, the session's next use sends it.
        const retried = await retryFor(LAST_USED_GRANULARITY_MS, () =>
          send().then(
            () => true,
            () => false,
          ),
        );
        if (!retried) this.rows.update(sessionId, (r) => (r?.lastUsedAt === at ? { ...r, lastUsedAt: sent } : r));
      }),
    );
  }

  /** These sessions have ended (written to D1 before this is told): refused from now on, with no read. */
  end(sessionIds: readonly string[]): void {
    for (const id of sessionIds) {
      this.ended.delete(id);
      this.ended.add(id);
      if (this.ended.size > MAX_ENDED) this.ended.delete(this.ended.values().next().value as string);
    }
  }

  /** Forgets the person and their sessions: the next request reads them again (sessions told ended stay ended). */
  reload(): void {
    this.users.reload();
    this.rows.reload();
  }

  /** Whether a change to the person or their sessions may still land in D1 (see TrustedRecords.unsettled). */
  unsettled(): boolean {
    return this.users.unsettled() || this.rows.unsettled();
  }

  /** See TrustedRecords.distrust. */
  distrust(ms: number): void {
    this.users.distrust(ms);
    this.rows.distrust(ms);
  }
}

/** The person with what decides their sessions' rights; undefined: no such user. */
async function loadUser(d: Db, userId: string): Promise<UserRecord | undefined> {
  const [found] = await d
    .select({
      id: users.id,
      accountId: users.accountId,
      role: users.role,
      grants: users.grants,
      disabled: users.disabled,
      email: users.email,
      accountSlug: accounts.slug,
      keyPrefix: accounts.keyPrefix,
      account: accountLimitColumns,
    })
    .from(users)
    .innerJoin(accounts, eq(accounts.id, users.accountId))
    .leftJoin(plans, eq(plans.id, accounts.planId))
    .where(eq(users.id, userId))
    .limit(1);
  return found;
}

async function loadSession(d: Db, sessionId: string): Promise<SessionRow | undefined> {
  const [found] = await d
    .select({
      id: sessions.id,
      userId: sessions.userId,
      accountId: sessions.accountId,
      refreshHash: sessions.refreshHash,
      expiresAt: sessions.expiresAt,
      endedAt: sessions.endedAt,
      lastUsedAt: sessions.lastUsedAt,
    })
    .from(sessions)
    .where(eq(sessions.id, sessionId))
    .limit(1);
  return found;
}
