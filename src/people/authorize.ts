import { eq } from "drizzle-orm";
import { hashKey } from "../core/ids";
import { type Need, type Principal, refusal, sessionPrincipal } from "../core/principal";
import type { AccountObject, SessionAnswer, SessionRefused } from "../counters/account-object";
import type { Holdings } from "../counters/held";
import { leasedCall } from "../counters/leased-call";
import type { Charge } from "../counters/limiter";
import type { Spent } from "../counters/protocol";
import type { SessionClaim, SessionEnded, SessionHolder } from "../counters/sessions";
import { withPool } from "../keys/authorize";
import { catchUp } from "../keys/reload";
import { sessions } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { COOKIE_VALUE, liveSession } from "./sessions";

export type PersonVerdict =
  /**
   * `spent`: what the request spent, in the person's object and in their account's when it shares limits or keeps a
   * pool; `unlimited` when an object was down and the deployment fails open.
   */
  { ok: true; principal: Principal; email: string; spent: Spent[]; unlimited: boolean } | SessionEnded | SessionRefused;

/**
 * The one path a person's request takes, with an access token (whose signature the caller checked: its claims name
 * the user, session and account) or the dashboard's cookie (`proof`, the hash of its secret): the person's object (`user:<id>`, counters/account-object.ts)
 * judges the session and what the route `need`s of the person, and spends `cost` of the person's limits only when both
 * pass, exactly as a key's object does for a key. A hot session is judged and spent from this isolate's lease with no
 * call at all, trusted for a lease's life (a second at most), so ending it, or narrowing the person's rights, is in
 * force everywhere within a second and at once in the object. No D1 read once the object knows the session. The
 * account's object spends beside it when the account shares limits or keeps a pool, unless `pool` is false (the
 * dashboard's pages spend only the person's). `isolate` is replaceable in tests.
 */
export async function authorizePerson(
  deps: Deps,
  { userId, sessionId, accountId, proof = null, need, cost = 1, costs, credits, reserve }: SessionClaim & { need: Need } & Partial<Charge>,
  isolate?: Holdings,
  { pool = true } = {},
): Promise<PersonVerdict> {
  const claim = { userId, sessionId, accountId, proof };
  const object = `user:${userId}`;
  const answer = leasedCall<DurableObjectStub<AccountObject>, SessionHolder, Refused>(
    deps,
    {
      name: `person:${userId}:${sessionId}`,
      stub: deps.env.ACCOUNTS.getByName(object),
      cost,
      costs,
      credits,
      reserve,
      ask: async (stub, spending) => {
        await catchUp(stub, object);
        return (await stub.admitSession({ ...claim, need, ...spending })) as SessionAnswer;
      },
      renew: async (stub, spending) => (await stub.admitSession({ ...claim, need: "any", ...spending })) as SessionAnswer,
      // A lease is spent only by the credential its object checked: the same cookie, or an access token.
      check: (holder) => {
        if (holder.proof !== proof) return { ok: false, code: "session_ended" };
        const short = refusal(holder.principal, need);
        return short && { ok: false, refusal: short, holder };
      },
    },
    isolate,
  );
  // Decided from a lease: no await.
  const verdict = answer instanceof Promise ? await answer : answer;
  if (verdict === null) {
    // Open mode with the object down: the session is checked in D1 and the request goes through unlimited.
    const s = await liveSession(deps, sessionId, deps.now());
    if (!s || s.userId !== userId || (accountId !== undefined && s.accountId !== accountId)) return ENDED;
    if (proof !== null && s.refreshHash !== proof) return ENDED;
    const principal = sessionPrincipal(s);
    const short = refusal(principal, need);
    const holder = { principal, email: s.email, proof };
    return short ? { ok: false, refusal: short, holder } : { ok: true, principal, email: s.email, spent: [], unlimited: true };
  }
  if (!verdict.ok) return verdict;
  const { principal, email } = verdict.record;
  if (!pool) return { ok: true, principal, email, spent: [verdict.spent], unlimited: false };
  const spent = await withPool(deps, principal, verdict.spent, { cost, costs, credits, reserve }, isolate, { person: false });
  // An account that is gone has no sessions that work.
  return "code" in spent ? ENDED : { ok: true, principal, email, ...spent };
}

type Refused = SessionEnded | SessionRefused;
const ENDED: SessionEnded = { ok: false, code: "session_ended" };

/** Session id -> user id. Immutable facts, so safe to keep; everything that can change is checked by the person's object. */
const owners = new Map<string, string>();
const MAX_CACHED_OWNERS = 10_000;

/**
 * The dashboard's cookie (`<session id>.<cookie secret>`): the session's person (read from D1 the first time this
 * isolate sees the session, never again) and what `authorizePerson` needs to judge it. Null when it cannot be a cookie
 * or names no session.
 */
export async function cookieClaim(deps: Deps, cookie: string): Promise<SessionClaim | null> {
  const m = COOKIE_VALUE.exec(cookie);
  if (!m) return null;
  const sessionId = m[1] as string;
  let userId = owners.get(sessionId);
  if (userId === undefined) {
    const [row] = await deps.db.select({ userId: sessions.userId }).from(sessions).where(eq(sessions.id, sessionId)).limit(1);
    if (!row) return null;
    userId = row.userId;
    if (owners.size >= MAX_CACHED_OWNERS) owners.delete(owners.keys().next().value as string);
    owners.set(sessionId, userId);
  }
  return { userId, sessionId, proof: await hashKey(m[2] as string) };
}
