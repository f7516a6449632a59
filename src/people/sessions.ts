import { and, desc, eq, isNull, sql } from "drizzle-orm";
import { generateSecret, hashKey, newId, toHex } from "../core/ids";
import { hashPassword, needsRehash, passwordProblem, verifyPassword } from "../core/password";
import type { Principal } from "../core/principal";
import { refund, type Spent } from "../counters/limiter";
import { reloadPeople, writeChange } from "../keys/reload";
import { misconfigured } from "../platform/config";
import { batch } from "../platform/db/client";
import { type EventRow, eventIfChanged, newEvent, publishEvents } from "../platform/db/events";
import { accountLimitColumns, accounts, plans, sessions, users } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { ApiError, invalidRequest } from "../platform/errors";
import { ACCESS_TTL_SECONDS, type AccessClaims, signAccessToken } from "../tokens/access";
import type { SigningKey } from "../tokens/jwt";

export const SESSION_DAYS = 30;
/** Failed logins allowed per email address (and, separately, per client address: IP_FAILURE_RATE_LIMIT). */
export const LOGIN_EMAIL_POLICY = { limit: 10, windowSeconds: 900 };
/**
 * How long a used refresh token still answers the pair its refresh made: a client whose refresh answered late (a 503
 * after D1 stored it) or raced itself keeps its session. After it, presenting the used token ends the session.
 */
export const REFRESH_GRACE_SECONDS = 30;

export type TokenPair = { access_token: string; token_type: "bearer"; expires_in: number; refresh_token: string };

const INVALID = () => new ApiError("invalid_credentials", "The email or password is not right.");

/**
 * Logs a person in. An unknown email, a wrong password, a user without a password yet or a disabled one all answer the
 * same 401 after the same work (one password hash each). Every attempt spends from the email's and the client
 * address's login budgets first; a successful one gives its spend back, so only failures count.
 */
export async function login(deps: Deps, attempts: Attempts, credentials: Credentials, userAgent: string | null): Promise<TokenPair> {
  const key = signingKey(deps);
  const id = newId("ses");
  const refresh = await refreshSecret(key, id, randomHex());
  const { userId, accountId, now } = await openSession(deps, attempts, credentials, userAgent, id, refresh);
  return pair(deps, { sub: userId, acc: accountId, sid: id }, refresh, now);
}

/** The dashboard's session cookie (HttpOnly, Secure, SameSite=Lax, Path=/): `<session id>.<cookie secret>`. */
export const SESSION_COOKIE = "__Host-keygate_session";
export const COOKIE_VALUE = /^(ses_[0-9a-f]{24})\.(cs_[0-9a-f]{64})$/;

/**
 * Logs a person in for the dashboard, as `login` does (same checks, limits and answers), and answers the cookie's
 * value. The session's `refreshHash` holds the cookie secret's hash: it is never rotated, and its `cs_` form is never
 * taken as a refresh token (nor a refresh token as a cookie).
 */
export async function cookieLogin(deps: Deps, attempts: Attempts, credentials: Credentials, userAgent: string | null): Promise<string> {
  const secret = generateSecret("cs");
  const id = newId("ses");
  await openSession(deps, attempts, credentials, userAgent, id, secret);
  return `${id}.${secret}`;
}

type Credentials = { email: string; password: string; accountId?: string | undefined };

/**
 * Spends one password attempt for an email from its budgets (the email's and the client address's; past either, 429)
 * and answers what it spent: the caller's, since the client's address is the request's. Logins and password changes
 * share them, so guesses cost the same whichever way they come; a right password gives the spend back, so only
 * failures count.
 */
export type Attempts = (email: string) => Promise<Spent[]>;

/** Checks the credentials (see `login`) and stores a new session `id` whose `refreshHash` is the hash of `secret`. */
async function openSession(
  deps: Deps,
  attempts: Attempts,
  { email, password, accountId }: Credentials,
  userAgent: string | null,
  id: string,
  secret: string,
): Promise<{ userId: string; accountId: string; now: Date }> {
  const spent = await attempts(email);
  const d = deps.db;
  const candidates = await d
    .select({ id: users.id, accountId: users.accountId, passwordHash: users.passwordHash, disabled: users.disabled })
    .from(users)
    .where(and(eq(users.email, email), accountId === undefined ? undefined : eq(users.accountId, accountId)))
    .limit(20);
  // One hash per candidate, and one when there is none: an unknown email costs what a wrong password does.
  const matched = [];
  for (const u of candidates.length > 0 ? candidates : [null]) {
    if ((await verifyPassword(password, u?.passwordHash ?? null)) && u && !u.disabled) matched.push(u);
  }
  if (matched.length === 0) throw INVALID();
  // Only someone who knows a password learns that the email has several accounts; the answer names none of them.
  if (matched.length > 1)
    throw new ApiError("account_required", "This email belongs to users of several accounts: send `accountId` to choose one.");
  const user = matched[0] as (typeof matched)[number];
  for (const s of spent) await refund(deps, s);
  const now = deps.now();
  const rehash = user.passwordHash && needsRehash(user.passwordHash) ? await hashPassword(password) : null;
  // Stored only while the hash it verified is still the user's and the user is enabled: a password changed or reset,
  // or the user disabled, while this login was checking the password leaves it nothing (the change ended only the
  // sessions that existed when it landed).
  const [opened] = await batch(deps.env.DB, [
    deps.env.DB.prepare(
      `INSERT INTO sessions (id, user_id, account_id, refresh_hash, user_agent, created_at, last_used_at, expires_at)
       SELECT ?, id, account_id, ?, ?, ?, ?, ? FROM users WHERE id = ? AND password_hash = ? AND disabled = 0`,
    ).bind(
      id,
      await hashKey(secret),
      userAgent?.slice(0, 256) ?? null,
      now.toISOString(),
      now.toISOString(),
      new Date(now.getTime() + SESSION_DAYS * 86_400_000).toISOString(),
      user.id,
      user.passwordHash,
    ),
    ...(rehash
      ? [
          d
            .update(users)
            .set({ passwordHash: rehash })
            .where(and(eq(users.id, user.id), eq(users.passwordHash, user.passwordHash as string))),
        ]
      : []),
  ]);
  if (opened?.meta.changes !== 1) throw INVALID();
  return { userId: user.id, accountId: user.accountId, now };
}

/** The pair for a refresh secret issued at `now`: the same secret and instant make the same pair. */
async function pair(deps: Deps, claims: { sub: string; acc: string; sid: string }, refresh: string, now: Date): Promise<TokenPair> {
  const jti = (await hashKey(`jti:${refresh}`)).slice(0, 32);
  const access = await signAccessToken(deps.config.signingKeys, claims, now, jti);
  return { access_token: access, token_type: "bearer", expires_in: ACCESS_TTL_SECONDS, refresh_token: `${claims.sid}.${refresh}` };
}

/** The key that signs tokens: checked before anything is stored, so a missing one leaves no session without tokens. */
function signingKey(deps: Deps): SigningKey {
  return deps.config.signingKeys[0] ?? misconfigured("JWT_SIGNING_KEYS", "is not set; no access token can be signed");
}

/**
 * A refresh secret of session `sessionId`: `rt_`, a 128-bit `nonce`, and a 128-bit tag that signs both with a signing
 * key. The tag tells a secret this session was issued (and has used since) from one made up with its id.
 */
async function refreshSecret(key: SigningKey, sessionId: string, nonce: string): Promise<string> {
  return `rt_${nonce}${(await hmac(key, `refresh-tag:${sessionId}:${nonce}`)).slice(0, 32)}`;
}

/**
 * The refresh secret that replaces `secret`, its nonce derived from it with a signing key: a refresh repeated (its
 * answer lost, or racing itself) makes the same one, and no one without the key can tell it from the used one.
 */
async function successor(key: SigningKey, sessionId: string, secret: string): Promise<string> {
  return refreshSecret(key, sessionId, (await hmac(key, `refresh:${secret}`)).slice(0, 32));
}

/** Whether this session issued `secret` (its tag is right under one of the signing keys), compared in constant time. */
async function issued(keys: readonly SigningKey[], sessionId: string, secret: string): Promise<boolean> {
  const enc = new TextEncoder();
  for (const key of keys) {
    const expected = enc.encode(await refreshSecret(key, sessionId, secret.slice(3, 35)));
    const sent = enc.encode(secret);
    if (expected.length === sent.length && crypto.subtle.timingSafeEqual(expected, sent)) return true;
  }
  return false;
}

async function hmac(key: SigningKey, text: string): Promise<string> {
  const k = await crypto.subtle.importKey("raw", key.secret, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return toHex(new Uint8Array(await crypto.subtle.sign("HMAC", k, new TextEncoder().encode(text))));
}

/** 128 random bits as hex. */
function randomHex(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(16)));
}

/**
 * A session that works: not ended, not past its 30 days, its user enabled, read from D1 (a refresh, and a person's
 * request when their object is down and the deployment fails open).
 */
export async function liveSession(deps: Deps, sessionId: string, now: Date) {
  const [row] = await deps.db
    .select({
      id: sessions.id,
      userId: sessions.userId,
      accountId: sessions.accountId,
      refreshHash: sessions.refreshHash,
      previousRefreshHash: sessions.previousRefreshHash,
      refreshedAt: sessions.refreshedAt,
      lastUsedAt: sessions.lastUsedAt,
      expiresAt: sessions.expiresAt,
      endedAt: sessions.endedAt,
      disabled: users.disabled,
      role: users.role,
      grants: users.grants,
      email: users.email,
      accountSlug: accounts.slug,
      keyPrefix: accounts.keyPrefix,
      account: accountLimitColumns,
    })
    .from(sessions)
    .innerJoin(users, eq(users.id, sessions.userId))
    .innerJoin(accounts, eq(accounts.id, sessions.accountId))
    .leftJoin(plans, eq(plans.id, accounts.planId))
    .where(eq(sessions.id, sessionId))
    .limit(1);
  if (!row || row.endedAt !== null || row.expiresAt <= now.toISOString() || row.disabled) return null;
  return row;
}

export const ENDED = () => new ApiError("session_ended", "This session has ended; log in again.");

const INVALID_REFRESH = () => new ApiError("invalid_refresh_token", "The refresh token is not valid.");

/**
 * New tokens for a session. With the refresh token (rotating: each works once; see `repeated` for one presented
 * again) or with a current access token (seed 003's flow).
 */
export async function refresh(deps: Deps, by: { refreshToken: string } | { claims: AccessClaims }): Promise<TokenPair> {
  const now = deps.now();
  const [sid, secret] = "claims" in by ? [by.claims.sid, null] : splitRefresh(by.refreshToken);
  if (!sid) throw INVALID_REFRESH();
  const session = await liveSession(deps, sid, now);
  if (!session) throw "claims" in by ? ENDED() : INVALID_REFRESH();
  const d = deps.db;
  const presented = secret === null ? null : await hashKey(secret);
  const key = signingKey(deps);
  const next = secret === null ? await refreshSecret(key, sid, randomHex()) : await successor(key, sid, secret);
  const [rotated] = await batch(deps.env.DB, [
    d
      .update(sessions)
      .set({
        previousRefreshHash: sql`${sessions.refreshHash}`,
        refreshHash: await hashKey(next),
        refreshedAt: now.toISOString(),
        lastUsedAt: now.toISOString(),
      })
      .where(and(eq(sessions.id, sid), isNull(sessions.endedAt), presented === null ? undefined : eq(sessions.refreshHash, presented))),
  ]);
  const claims = { sub: session.userId, acc: session.accountId, sid };
  if (rotated?.meta.changes === 1) return pair(deps, claims, next, now);
  if (secret === null || presented === null) throw ENDED();
  return repeated(deps, claims, secret, presented, now);
}

/**
 * A refresh token that is not the session's current one. The one just replaced, within REFRESH_GRACE_SECONDS, answers
 * the pair its refresh made (that answer may have been lost); later, it ends the session, as OAuth 2.1 advises for a
 * token that may have leaked, and so does any older one the session issued (a thief who refreshed twice does not hide
 * the owner's). A secret the session never issued (made up with its id) is refused, and the session goes on.
 */
async function repeated(
  deps: Deps,
  claims: { sub: string; acc: string; sid: string },
  secret: string,
  presented: string,
  now: Date,
): Promise<TokenPair> {
  const session = await liveSession(deps, claims.sid, now);
  if (!session) throw INVALID_REFRESH();
  const keys = deps.config.signingKeys;
  if (session.previousRefreshHash === presented && session.refreshedAt !== null) {
    const refreshedAt = new Date(session.refreshedAt);
    if (now.getTime() - refreshedAt.getTime() <= REFRESH_GRACE_SECONDS * 1000) {
      // Made with whichever signing key signed then (the list may have changed since). None did when an access token
      // made the refresh: that pair was never this token's to answer, so it counts as reuse.
      for (const key of keys) {
        const next = await successor(key, claims.sid, secret);
        if ((await hashKey(next)) === session.refreshHash) return pair(deps, claims, next, refreshedAt);
      }
    }
  } else if (!(await issued(keys, claims.sid, secret))) throw INVALID_REFRESH();
  // The owner's and the thief's copies of a token met: the account's endpoints hear of it (once: only if it ended it).
  const event = newEvent(
    { accountId: claims.acc, type: "session.reuse_detected", data: { sessionId: claims.sid, userId: claims.sub } },
    deps.now(),
  );
  if ((await endSessions(deps, { sessionId: claims.sid, userId: claims.sub }, "refresh_reused", event, { quiet: true })) > 0)
    await publishEvents(deps, [event.id]);
  throw new ApiError("invalid_refresh_token", "The refresh token was already used; the session has ended. Log in again.");
}

function splitRefresh(token: string): [string | null, string | null] {
  const m = /^(ses_[0-9a-f]{24})\.(rt_[0-9a-f]{64})$/.exec(token);
  return m ? [m[1] as string, m[2] as string] : [null, null];
}

/**
 * Ends one of a user's sessions; `event` is written with it when it ended one. The person's object is told before the
 * answer (keys/reload.ts's `reloadPeople`): the session is refused from the object at once and everywhere within a
 * second; when the object cannot be told, 503 `change_pending` (in force soon after all the same), unless `quiet` (the
 * caller's own answer matters more, as a refresh token's reuse does).
 */
export async function endSessions(
  deps: Deps,
  { sessionId, userId }: { sessionId: string; userId: string },
  reason: string,
  event?: EventRow,
  { quiet = false } = {},
): Promise<number> {
  const at = deps.now().toISOString();
  const [ended] = await writeChange(
    deps,
    [],
    () =>
      batch(deps.env.DB, [
        deps.db
          .update(sessions)
          .set({ endedAt: at, endReason: reason })
          .where(and(eq(sessions.id, sessionId), eq(sessions.userId, userId), isNull(sessions.endedAt))),
        ...(event ? [eventIfChanged(deps.env.DB, event)] : []),
      ]),
    [userId],
  );
  const count = ended?.meta.changes ?? 0;
  // Told even when it ended nothing now: a repeat completes a change whose telling failed.
  await reloadPeople(deps, [userId], [sessionId]).catch((err: unknown) => {
    if (!quiet) throw err;
  });
  return count;
}

export type SessionView = {
  id: string;
  createdAt: string;
  lastUsedAt: string;
  expiresAt: string;
  userAgent: string | null;
  current: boolean;
};

/** A user's sessions that still work, newest first. */
export async function listSessions(deps: Deps, p: Principal): Promise<SessionView[]> {
  const now = deps.now().toISOString();
  const rows = await deps.db
    .select()
    .from(sessions)
    .where(and(eq(sessions.userId, p.userId), isNull(sessions.endedAt), sql`${sessions.expiresAt} > ${now}`))
    .orderBy(desc(sessions.createdAt), desc(sessions.id))
    .limit(100);
  return rows.map((s) => ({
    id: s.id,
    createdAt: s.createdAt,
    lastUsedAt: s.lastUsedAt,
    expiresAt: s.expiresAt,
    userAgent: s.userAgent,
    current: s.id === p.sessionId,
  }));
}

/**
 * Changes a person's password (they prove the current one, an attempt spent as a login's is) and ends their other
 * sessions.
 */
export async function changePassword(
  deps: Deps,
  attempts: Attempts,
  p: Principal,
  currentPassword: string,
  newPassword: string,
): Promise<void> {
  const d = deps.db;
  const [u] = await d.select({ passwordHash: users.passwordHash, email: users.email }).from(users).where(eq(users.id, p.userId)).limit(1);
  if (!u) throw INVALID();
  const spent = await attempts(u.email);
  if (!(await verifyPassword(currentPassword, u.passwordHash))) throw INVALID();
  for (const s of spent) await refund(deps, s);
  const reason = passwordProblem(newPassword, u.email);
  if (reason) throw invalidRequest([{ field: "newPassword", message: reason }]);
  const hash = await hashPassword(newPassword);
  const at = deps.now().toISOString();
  const [changed, ended] = await writeChange(
    deps,
    [],
    () =>
      batch(deps.env.DB, [
        // Only over the password this request verified: of two changes racing from the same current password, the
        // later one changes nothing (and ends nothing) rather than replace the first one's new password.
        d
          .update(users)
          .set({ passwordHash: hash })
          .where(and(eq(users.id, p.userId), eq(users.passwordHash, u.passwordHash as string))),
        d
          .update(sessions)
          .set({ endedAt: at, endReason: "password_changed" })
          .where(
            and(
              eq(sessions.userId, p.userId),
              isNull(sessions.endedAt),
              p.sessionId ? sql`${sessions.id} <> ${p.sessionId}` : undefined,
              sql`(SELECT password_hash FROM users WHERE id = ${p.userId}) = ${hash}`,
            ),
          )
          .returning({ id: sessions.id }),
      ]),
    [p.userId],
  );
  if (changed?.meta.changes !== 1) throw INVALID();
  // The other sessions are refused from the person's object before the answer, and everywhere within a second.
  await reloadPeople(deps, [p.userId], endedIds(ended));
}

/** The ids a statement `RETURNING id` answered (the sessions it ended). */
export function endedIds(result: D1Result | undefined): string[] {
  return ((result?.results ?? []) as { id: string }[]).map((r) => r.id);
}

/**
 * The people of an account (or of every account on a plan) with a session that still works: whose objects carry the
 * account's limits, credits and plan in their sessions' principals, and are told when those change. Through `users`,
 * so each person's sessions are found by their index.
 */
export async function peopleWithSessions(deps: Deps, by: { accountId: string } | { planId: string }, now: Date): Promise<string[]> {
  const accountsOf =
    "accountId" in by
      ? sql`${users.accountId} = ${by.accountId}`
      : sql`${users.accountId} IN (SELECT id FROM accounts WHERE plan_id = ${by.planId})`;
  const rows = await deps.db
    .select({ id: users.id })
    .from(users)
    .where(
      and(
        accountsOf,
        sql`EXISTS (SELECT 1 FROM sessions WHERE sessions.user_id = ${users.id} AND sessions.ended_at IS NULL AND sessions.expires_at > ${now.toISOString()})`,
      ),
    );
  return rows.map((r) => r.id);
}
