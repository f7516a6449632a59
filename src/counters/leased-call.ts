import { deadline } from "../platform/deadline";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import { safeError } from "../platform/log";
import { type Holdings, holdings } from "./held";
import type { CallTag, CounterStub, Granted, Idempotency, Spending, Spent, Unspent } from "./protocol";

/** An object's answer to a spending call: what it granted under the record it judged, or its refusal `F` (nothing spent). */
export type Answer<R, F> = { ok: true; record: R; granted: Granted } | F;

/** Cancels a call that failed or timed out (CounterStub.cancel). */
type Cancel<S> = (stub: S, call: { tag: CallTag; returned: Unspent[] }) => Promise<void>;

/** A request admitted or refused by the budget (`spent.allowed`), under the record its object judged. */
export type Leased<R> = { ok: true; record: R; spent: Spent };

/** One request's call on a counting object that leases (a key's, or a plain counter), as `leasedCall` makes it. */
export type LeasedCall<S extends CounterStub, R, F extends { ok: false } = never> = {
  /** The counter's name (`key:<id>`, or a plain counter's): what this isolate holds its leases under. */
  name: string;
  stub: S;
  cost: number;
  /** The spending call: asks the object to spend (with a lease beside it), giving back what ended leases left. */
  ask: (stub: S, spending: Spending) => Promise<Answer<R, F>>;
  /**
   * The renewal a hot counter's lease gets in the background when it runs low (the same call spending nothing, with
   * nothing needed of the record); without it, the request that finds the lease spent asks for the next one.
   */
  renew?: (stub: S, spending: Spending) => Promise<Answer<R, F>>;
  /** A held record's refusal of this request (answered with no call, nothing spent), or null when it may spend. */
  check?: (record: R) => F | null;
  /** Where a call that failed is cancelled, when not at `stub`: the object the call went to (a key's relay). */
  cancel?: Cancel<S>;
  /**
   * The limits the request spends, by name, and what it spends of each, when not `cost` of every limit (a gateway
   * route's `limits`). Such a request never spends from a lease (each of whose admissions is one of every limit): it
   * always asks the object, and takes no lease.
   */
  costs?: Record<string, number>;
  /** What the request spends of the object's balance (decided with its limits: all spent or none). */
  credits?: number;
  /** Credits held until the upstream settles them (a route's `credits: {reserve, settle}`): always asks the object. */
  reserve?: { until: number };
  /** The request's `Idempotency-Key`: always asks the object, which remembers it. */
  idempotency?: Idempotency;
};

/** Whether a request decides only at the object: it spends only some limits, or reserves credits. */
const asksObject = (c: { costs?: unknown; reserve?: unknown; idempotency?: unknown }) =>
  c.costs !== undefined || c.reserve !== undefined || c.idempotency !== undefined;

/**
 * The isolate's side of the counter protocol, for one request: spends `cost` from a lease this isolate holds (no call
 * and no await), or waits for this isolate's call in flight that may bring one, or calls the object with a deadline
 * and holds the lease it brings; refused because a concurrent call of this isolate took the budget as a lease, it
 * spends from that lease instead. A lease running low is renewed in the background. Null when the object failed and
 * the deployment fails open (the caller marks its answer unlimited); closed, that is 503 `rate_limiter_unavailable`.
 * `isolate` is replaceable in tests. A request a held lease decides is answered at once, with no promise: the leased
 * path awaits nothing.
 */
export function leasedCall<S extends CounterStub, R, F extends { ok: false } = never>(
  deps: Deps,
  c: LeasedCall<S, R, F>,
  isolate: Holdings = holdings,
): Leased<R> | F | Promise<Leased<R> | F | null> {
  return fromHeld(deps, isolate, c) ?? called(deps, c, isolate);
}

/** A request a held lease decides, a renewal started when that lease runs low; null when none is held. */
function fromHeld<S extends CounterStub, R, F extends { ok: false }>(
  deps: Deps,
  isolate: Holdings,
  c: LeasedCall<S, R, F>,
): Leased<R> | F | null {
  if (asksObject(c)) return null;
  const local = fromLease(isolate, c);
  if (local?.ok && local.spent.allowed && c.renew && isolate.runningLow(c.name)) deps.waitUntil(renew(deps, isolate, c, c.renew));
  return local;
}

/** The rest of `leasedCall`: wait for this isolate's call in flight, or call. */
async function called<S extends CounterStub, R, F extends { ok: false }>(
  deps: Deps,
  c: LeasedCall<S, R, F>,
  isolate: Holdings,
  again = true,
): Promise<Leased<R> | F | null> {
  const { name } = c;
  // A hot counter's lease ran out: a call of this isolate renews it; the requests beside it (as many as a lease holds)
  // wait and spend from what it brings (a renewal that brings nothing leaves each to ask for itself). No await unless
  // a call is in flight: a request that must call has to claim it before any other looks. A request spending only
  // some limits, or at other costs (`costs`), takes no lease and so waits for none.
  const inFlight = () => (asksObject(c) ? undefined : isolate.inFlight(name, c.cost));
  for (let renewal = inFlight(); renewal; renewal = inFlight()) {
    const leased = await renewal;
    // What it brought: a lease to spend from, or a refusal by a limit that holds for this request too.
    const local = fromHeld(deps, isolate, c);
    if (local) return local;
    if (!leased) break;
  }
  const askedAt = isolate.now();
  const returned = isolate.unspent(name);
  // A call beside one in flight that has room for waiting requests (it came back with too little, or too late, for
  // this one) asks for its own admission only; a call no request could wait on asks for a lease and is waited on.
  const leasing = !asksObject(c) && !isolate.hasRoom(name);
  const wanted = leasing ? isolate.wanted(name) : 0;
  const { cost, costs, credits, reserve, idempotency } = c;
  // Credits are what a provider sells: a request that spends them is never let through unmetered (open mode or not).
  const closed = (credits ?? 0) > 0 || reserve !== undefined;
  const asked = callCounter(
    deps,
    c.stub,
    name,
    (stub, tag) => c.ask(stub, { tag, cost, costs, lease: leasing, wanted, returned, credits, reserve, idempotency }),
    returned,
    closed,
    c.cancel,
  );
  if (returned.length > 0) isolate.carrying(name, asked);
  const answer = await (leasing ? isolate.track(name, asked, bringsLease(isolate, askedAt), deps.config.rateLimitTimeoutMs) : asked);
  if (answer === null || !answer.ok) return answer;
  const { record, granted } = answer;
  const { lease, credits: left, ...counted } = granted;
  if (lease) isolate.hold(name, askedAt, record, lease, counted.limits, left);
  // Refused because a concurrent call of this isolate took the budget (or the balance) as a lease: spend from that
  // lease instead.
  if (!counted.allowed && !asksObject(c)) {
    const leased = fromLease(isolate, c);
    if (leased) return leased;
    // Out of credits while credits this isolate held are on their way back to the object (an ended lease's rest, not
    // yet sent or carried by a call in flight): asked once more (a call of its own) once they are there, so that no
    // request is refused for want of them. A lease that arrived already ended, on a loaded machine, would otherwise
    // leave its credits out of every decision until this isolate's next call. (A limit's refusal is not asked again:
    // its rests are at most a lease, and a key far over its limit would double its calls.)
    if (again && counted.exhausted && (isolate.owing(name) > 0 || isolate.returning(name).length > 0)) {
      await Promise.allSettled(isolate.returning(name));
      return called({ ...deps, requestId: `${deps.requestId}-again` }, c, isolate, false);
    }
    // Refused by a limit, a hot counter's next requests are refused here until it could admit again (held.ts).
    if (!counted.exhausted) isolate.refuse(name, askedAt, record, counted);
  }
  // What is left as the object sees it, less what this isolate has spent: its unspent leases are still budget.
  const available = isolate.available(name);
  const limits = counted.limits.map((l) => ({ ...l, remaining: l.remaining + available }));
  const spentCredits = counted.allowed && left ? (credits ?? 0) : 0;
  return { ok: true, record, spent: { ...counted, limits, name, spentCredits, credits: isolate.creditsLeft(name, left) } };
}

/**
 * Whether a call asked at `askedAt` answered with a lease that has not yet ended when it arrives (a lease lasts from
 * the asking: one slower than the lease brings nothing the requests waiting for it could spend).
 */
const bringsLease =
  (isolate: Holdings, askedAt: number) =>
  (answer: Answer<unknown, { ok: false }> | null): boolean =>
    answer?.ok === true && answer.granted.lease !== null && askedAt + answer.granted.lease.ms > isolate.now();

/**
 * A request decided in this isolate, with no call: the record the object answered under a lease that has not ended,
 * and an admission of that lease, or the object's refusal it remembers. Null when the isolate holds neither (the object
 * decides).
 */
function fromLease<S extends CounterStub, R, F extends { ok: false }>(isolate: Holdings, c: LeasedCall<S, R, F>): Leased<R> | F | null {
  const held = isolate.get(c.name);
  if (!held) return null;
  // A name's record is only ever held by its own calls: the type they answered.
  const record = held.record as R;
  const refused = c.check?.(record);
  if (refused) return refused;
  const spent = isolate.take(c.name, c.cost, c.credits) ?? isolate.refusal(c.name, c.cost);
  return spent && { ok: true, record, spent };
}

/**
 * Asks for a hot counter's next lease while the current one still serves the requests in flight, so they never wait
 * for a renewal. It spends nothing itself (cost 0); a record its object now refuses is dropped from the isolate at once.
 */
async function renew<S extends CounterStub, R, F extends { ok: false }>(
  deps: Deps,
  isolate: Holdings,
  c: LeasedCall<S, R, F>,
  call: NonNullable<LeasedCall<S, R, F>["renew"]>,
): Promise<void> {
  // A call of its own: not the request's (which spent from its lease), so not the request's id either.
  const own = { ...deps, requestId: `${deps.requestId}-renewal` };
  const askedAt = isolate.now();
  const returned = isolate.unspent(c.name);
  const wanted = isolate.wanted(c.name);
  const perUnit = isolate.perUnit(c.name);
  try {
    const asked = callCounter(
      own,
      c.stub,
      c.name,
      (stub, tag) => call(stub, { tag, cost: 0, lease: true, wanted, returned, perUnit }),
      returned,
      false,
      c.cancel,
    );
    if (returned.length > 0) isolate.carrying(c.name, asked);
    const answer = await isolate.track(c.name, asked, bringsLease(isolate, askedAt), deps.config.rateLimitTimeoutMs);
    if (answer?.ok && answer.granted.lease)
      isolate.hold(c.name, askedAt, answer.record, answer.granted.lease, answer.granted.limits, answer.granted.credits);
    else if (answer && !answer.ok) isolate.drop([c.name]);
  } catch {
    // The next request that finds no lease asks for itself.
  }
}

/** The retry hint when the counter is down: long enough for a retried call to find it back. */
const UNAVAILABLE_RETRY_SECONDS = 5;

/** The kind of a counter for logs (`key:<id>` keeps its id; addresses and end-user ids are not logged). */
export function counterKind(name: string): string {
  return name.startsWith("key:") ? name : (name.split(":", 1)[0] ?? "");
}

export const timedOut = () => new Error("no answer before the deadline");

/**
 * Calls the named counter with a deadline (RATE_LIMIT_TIMEOUT_MS). The call carries the request id and the deadline,
 * so a retry spends once and a call that arrives too late spends nothing; when the call fails or times out, the
 * counter (or what `cancel` names: where the call went) is told to give back whatever it spent for it, and takes
 * `returned` (what the isolate's ended leases left unspent, which the call carried) unless the call already brought
 * it. Then: 503 in closed mode (or for a call that spends credits: `closed`); null in open mode.
 */
async function callCounter<S extends CounterStub, T>(
  deps: Deps,
  stub: S,
  name: string,
  call: (stub: S, tag: CallTag) => Promise<T>,
  returned: Unspent[],
  closed = false,
  cancel: Cancel<S> = (s, c) => s.cancel(c),
): Promise<T | null> {
  const { rateLimitTimeoutMs } = deps.config;
  const rateLimitFailureMode = closed ? "closed" : deps.config.rateLimitFailureMode;
  const tag = { id: deps.requestId, deadline: Date.now() + rateLimitTimeoutMs };
  try {
    return await retriedOnce(() => call(stub, tag), tag.deadline);
  } catch (err) {
    deps.waitUntil(
      deadline(cancel(stub, { tag, returned }), rateLimitTimeoutMs, timedOut).catch((e: unknown) =>
        deps.log("warn", "counter_cancel_failed", { counter: counterKind(name), error: safeError(e) }),
      ),
    );
    const fields = { counter: counterKind(name), error: safeError(err), requestId: tag.id };
    if (rateLimitFailureMode === "closed") {
      deps.log("error", "counter_unavailable_refused", fields);
      throw new ApiError("rate_limiter_unavailable", "The rate limiter is unavailable; retry shortly.", {
        headers: { "Retry-After": String(UNAVAILABLE_RETRY_SECONDS) },
      });
    }
    deps.log("warn", "counter_unavailable_admitted", fields);
    return null;
  }
}

/** One call with a deadline; retried once only when the platform marks the error retryable (and not overload). */
async function retriedOnce<T>(call: () => Promise<T>, until: number): Promise<T> {
  const attempt = () => deadline(call(), until - Date.now(), timedOut);
  try {
    return await attempt();
  } catch (err) {
    const e = err as { retryable?: boolean; overloaded?: boolean };
    if (e.retryable === true && e.overloaded !== true && Date.now() < until) return attempt();
    throw err;
  }
}
