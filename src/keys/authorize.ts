import { hashKey } from "../core/ids";
import type { AuthMethod } from "../core/principal";
import { type Need, type Principal, type Refusal, refusal } from "../core/principal";
import { type Holdings, holdings } from "../counters/held";
import { type Admission, callCounter, counterContext } from "../counters/limiter";
import type { CounterContext } from "../guards/context";
import { db } from "../platform/db/client";
import type { Authorization } from "./object";
import { catchUp } from "./reload";
import { evaluateKey, keyIdByHash, loadKey, type VerifyResult } from "./store";

/** Key hash -> key id. Immutable facts, so safe to keep; everything that can change is checked by the key's object. */
const keyIds = new Map<string, string>();
const MAX_CACHED_KEY_IDS = 10_000;

export type KeyVerdict =
  /** `admission` is null when the rate limiter was down and the deployment fails open. */
  | { ok: true; principal: Principal; admission: Admission | null }
  | { ok: false; code: Extract<VerifyResult, { ok: false }>["code"] }
  | { ok: false; refusal: Refusal };

/**
 * The one path every API key takes, whether it came with a request (the middleware, the gateway) or to the verify API:
 * its object judges the key and what the caller needs of it, and spends `cost` of its limit only when both pass; a hot
 * key is judged and spent from this isolate's lease (ratelimit/lease.ts) with no call at all. The verdict on a key is
 * a result; an unavailable rate limiter in closed mode is an error (503). `isolate` is replaceable in tests.
 */
export async function authorizeKey(
  c: CounterContext,
  key: string,
  method: AuthMethod,
  needed: Need | (() => Promise<Need>),
  cost = 1,
  isolate: Holdings = holdings,
): Promise<KeyVerdict> {
  const hash = await hashKey(key);
  const keyId = keyIds.get(hash) ?? (await lookUpKeyId(c, hash));
  if (keyId === undefined) return { ok: false, code: "invalid_key" };
  // Worked out only for a key that exists: a made-up key costs no read of what the route needs (a resource's owner).
  const need = typeof needed === "function" ? await needed() : needed;
  const name = `key:${keyId}`;
  // A hot key's lease ran out: one call of this isolate renews it at a time; the requests beside it wait and spend
  // from what it brings (a renewal that brings nothing leaves each to ask for itself).
  // No await unless a renewal is in flight: a request that must call has to claim the renewal before any other looks.
  for (let renewal = isolate.inFlight(name); ; renewal = isolate.inFlight(name)) {
    const local = fromLease(isolate, name, need, cost);
    if (local) {
      if (isolate.runningLow(name)) c.executionCtx.waitUntil(renew(c, isolate, keyId, name, method));
      return local;
    }
    if (!renewal || !(await renewal)) break;
  }
  const askedAt = isolate.now();
  const returned = isolate.unspent(name);
  const authorization = await isolate.track(
    name,
    callCounter(
      c,
      c.env.KEYS.getByName(name),
      name,
      async (stub, tag) => {
        await catchUp(stub, keyId);
        return stub.authorize(keyId, method, need, tag, cost, true, returned) as Promise<Authorization>;
      },
      returned,
    ),
    (answer) => answer?.ok === true && answer.lease !== null,
    c.get("config").rateLimitTimeoutMs,
  );
  if (authorization === null) {
    // Open mode with the object down: the key is checked in D1 and the request goes through unlimited.
    const result = evaluateKey(await loadKey(db(c.env.DB), { hash }), new Date());
    if (!result.ok) return result;
    const refused = refusal(result.principal, need);
    return refused ? { ok: false, refusal: refused } : { ok: true, principal: result.principal, admission: null };
  }
  if (!authorization.ok) return authorization;
  const { principal, admission, lease } = authorization;
  if (lease) isolate.hold(name, askedAt, principal, lease, admission.remaining, admission.resetAt);
  // Refused because a concurrent call of this isolate took the budget as a lease: spend from that lease instead.
  if (!admission.allowed) {
    const leased = fromLease(isolate, name, need, cost);
    if (leased) return leased;
  }
  // What is left as the object sees it, less what this isolate has spent: its unspent leases are still budget.
  const remaining = admission.remaining + isolate.available(name);
  return { ok: true, principal, admission: { ...admission, remaining, name, policy: principal.rateLimit } };
}

/**
 * Asks for a hot key's next lease while the current one still serves the requests in flight, so they never wait for
 * a renewal. It spends nothing itself (cost 0); a key its object now refuses is dropped from the isolate at once.
 */
async function renew(c: CounterContext, isolate: Holdings, keyId: string, name: string, method: AuthMethod): Promise<void> {
  // A call of its own: not the request's (which spent from its lease), so not the request's id either.
  const id = `${c.get("requestId")}-renewal`;
  const own = counterContext({ ...c.get("deps"), requestId: id }, c.executionCtx);
  const askedAt = isolate.now();
  const returned = isolate.unspent(name);
  try {
    const answer = await isolate.track(
      name,
      callCounter(
        own,
        c.env.KEYS.getByName(name),
        name,
        (stub, tag) => stub.authorize(keyId, method, "any", tag, 0, true, returned) as Promise<Authorization>,
        returned,
      ),
      (a) => a?.ok === true && a.lease !== null,
      c.get("config").rateLimitTimeoutMs,
    );
    if (answer?.ok && answer.lease)
      isolate.hold(name, askedAt, answer.principal, answer.lease, answer.admission.remaining, answer.admission.resetAt);
    else if (answer && !answer.ok && !("refusal" in answer)) isolate.drop([name]);
  } catch {
    // The next request that finds no lease asks for itself.
  }
}

/**
 * A hot key's request decided in this isolate, with no call: the record the object answered under a lease that has not
 * ended, and an admission of that lease. Null when the isolate holds no such lease (the object decides).
 */
function fromLease(isolate: Holdings, name: string, need: Need, cost: number): KeyVerdict | null {
  const principal = isolate.get(name)?.principal;
  if (!principal) return null;
  const refused = refusal(principal, need);
  if (refused) return { ok: false, refusal: refused };
  const admission = isolate.take(name, cost, principal.rateLimit);
  return admission && { ok: true, principal, admission };
}

async function lookUpKeyId(c: CounterContext, hash: string): Promise<string | undefined> {
  const id = await keyIdByHash(db(c.env.DB), hash);
  if (id === undefined) return undefined;
  if (keyIds.size >= MAX_CACHED_KEY_IDS) keyIds.delete(keyIds.keys().next().value as string);
  keyIds.set(hash, id);
  return id;
}
