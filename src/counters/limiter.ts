import { type Limit, named, type Policy, tightest } from "../core/window";
import { deadline, retryFor } from "../platform/deadline";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import { safeError } from "../platform/log";
import type { AccountObject, Person, PoolAnswer } from "./account-object";
import type { Counter } from "./counter-object";
import { type Holdings, holdings } from "./held";
import { counterKind, leasedCall, timedOut } from "./leased-call";
import type { Spending, Spent } from "./protocol";

export type { Spent } from "./protocol";

/**
 * Spends `cost` requests (one by default) of the named identity's budget, of each of its `limits` (or what `costs`
 * names of those it names: then it takes no lease); a hot counter leases
 * admissions as a hot key does (counters/leased-call.ts). Over the limit: 429 `rate_limited`. When the counter fails or does not answer in
 * time: 503 `rate_limiter_unavailable` in closed mode, or null in open mode (admitted, unlimited: the caller marks its
 * answer `X-RateLimit-Status: unavailable`). `isolate` is replaceable in tests.
 */
export async function spend(
  deps: Deps,
  name: string,
  limits: readonly Limit[],
  cost = 1,
  costs?: Record<string, number>,
  isolate: Holdings = holdings,
): Promise<Spent | null> {
  const answer = leasedCall<DurableObjectStub<Counter>, null>(
    deps,
    {
      name,
      stub: deps.env.COUNTERS.getByName(name),
      cost,
      costs,
      ask: async (stub, spending) => ({ ok: true, record: null, granted: await stub.consume({ limits: [...limits], ...spending }) }),
    },
    isolate,
  );
  // Spent from a lease: no await.
  const leased = answer instanceof Promise ? await answer : answer;
  return leased && admit(leased.spent);
}

/** What a request spends: `cost` of each limit (or `costs` of those named), and `credits`, perhaps reserved. */
export type Charge = { cost: number; costs?: Record<string, number>; credits?: number; reserve?: { until: number } };

/**
 * Spends a request's charge from its account's object: the limits the account's keys share and its credits pool, or
 * with `person` from that person's object: the limits each person has and their balance; leased as a key is
 * (counters/leased-call.ts). The spend, which may be a refusal (the caller gives back what it spent elsewhere); null
 * when the object was down and the deployment fails open; `invalid_key` when the account is gone.
 */
export async function spendPool(
  deps: Deps,
  { accountId, person }: { accountId: string; person?: Person },
  charge: Charge,
  isolate: Holdings = holdings,
): Promise<Spent | null | Extract<PoolAnswer, { ok: false }>> {
  const name = person ? `user:${person.userId}` : `account:${accountId}`;
  const ask = (stub: DurableObjectStub<AccountObject>, spending: Spending) =>
    stub.spend({ accountId, ...(person ? { person } : {}), ...spending }) as Promise<PoolAnswer>;
  const answer = leasedCall<DurableObjectStub<AccountObject>, null, Extract<PoolAnswer, { ok: false }>>(
    deps,
    { name, stub: deps.env.ACCOUNTS.getByName(name), ...charge, ask, renew: ask },
    isolate,
  );
  const spent = answer instanceof Promise ? await answer : answer;
  return spent && (spent.ok ? spent.spent : spent);
}

/**
 * Spends from the budget of the client's address, as Cloudflare saw it (`ip`: the `CF-Connecting-IP` header; headers a
 * client can write, such as X-Forwarded-For, are ignored). Requests without it did not come through Cloudflare: they
 * share one bucket with a tenth of the budget, so going around Cloudflare never buys more attempts.
 */
export function spendPerAddress(deps: Deps, ip: string | undefined, kind: string, policy: Policy): Promise<Spent | null> {
  if (ip) return spend(deps, `${kind}:${ip}`, [named(policy)]);
  return spend(deps, `${kind}:missing-address`, [
    named({ limit: Math.max(1, Math.floor(policy.limit / 10)), windowSeconds: policy.windowSeconds }),
  ]);
}

/**
 * Passes an admitted request on. Refused by a limit: 429 with the headers and `retry_after` that say when to return
 * (when every limit that refused admits again), naming the limit that refused (`limit`: the one admitting again
 * last). Admitted by every limit but not covered by the balance: 402 `credits_exhausted`, with what it needed, what is
 * left and when the next refill comes (`Retry-After` then).
 */
export function admit(spent: Spent): Spent {
  if (spent.allowed) return spent;
  if (spent.exhausted) {
    const { required, remaining, nextRefillAt } = spent.exhausted;
    const wait = nextRefillAt === null ? null : Math.max(1, Math.ceil((nextRefillAt - Date.now()) / 1000));
    const when = nextRefillAt === null ? "" : ` More arrive at ${new Date(nextRefillAt).toISOString()}.`;
    throw new ApiError("credits_exhausted", `This request needs ${required} credits; ${remaining} are left.${when}`, {
      headers: { ...rateLimitHeaders([spent]), ...(wait === null ? {} : { "Retry-After": String(wait) }) },
      body: { required, remaining, nextRefillAt: nextRefillAt === null ? null : new Date(nextRefillAt).toISOString() },
    });
  }
  const limit = spent.refusedBy[0] as string;
  throw new ApiError("rate_limited", `Rate limit exceeded (${limit}). Try again in ${spent.retryAfter} seconds.`, {
    headers: { ...rateLimitHeaders([spent]), "Retry-After": String(spent.retryAfter) },
    body: { retry_after: spent.retryAfter, limit },
  });
}

/**
 * A session's requests are held in an isolate as `person:<userId>:<sessionId>` (each session's leases and the record
 * they were granted under apart, so one session's lease never admits another's request) and spent in the person's
 * object, `user:<userId>`.
 */
export function personObject(name: string): string {
  return `user:${name.split(":")[1]}`;
}

/** How long after the answer a refund that failed is tried again. */
const REFUND_RETRY_MS = 5_000;

/**
 * Gives the request back before the answer leaves (401/403 answers spend nothing), so a burst of refused requests
 * never borrows the budget of the requests beside it: its admission and its credits, or with `creditsOnly` its
 * credits alone (the upstream failed: the request was served, so its limits stay spent). The answer is not held up
 * past the deadline: a refund that failed is tried again after it, for REFUND_RETRY_MS. Every attempt carries one id
 * and its own deadline, so the counter gives back once however many attempts reach it, and an attempt that arrives too
 * late gives back nothing.
 */
export async function refund(deps: Deps, spent: Spent, isolate: Holdings = holdings, { creditsOnly = false } = {}): Promise<void> {
  const { name, at } = spent;
  const credits = spent.spentCredits;
  const cost = creditsOnly ? 0 : spent.cost;
  const costs = creditsOnly ? {} : spent.costs;
  if (cost === 0 && credits === 0) return;
  if (spent.leased && isolate.giveBack(name, at, cost, credits)) return;
  const stub = name.startsWith("key:")
    ? deps.env.KEYS.getByName(name)
    : name.startsWith("account:") || name.startsWith("user:")
      ? deps.env.ACCOUNTS.getByName(name)
      : name.startsWith("person:")
        ? deps.env.ACCOUNTS.getByName(personObject(name))
        : deps.env.COUNTERS.getByName(name);
  const id = `${deps.requestId}-refund-${creditsOnly ? "credits" : at}`;
  // A request spent from a lease gives its credits back as a lease's rest; one the object decided, by its id (a
  // reservation is given back whole).
  const requestId = spent.leased ? undefined : deps.requestId;
  const attempt = (ms: number) =>
    deadline(stub.refund({ at, cost, costs, credits, requestId, tag: { id, deadline: Date.now() + ms } }), ms, timedOut).then(
      () => true,
      (err: unknown) => {
        deps.log("warn", "refund_failed", { counter: counterKind(name), error: safeError(err) });
        return false;
      },
    );
  const timeout = deps.config.rateLimitTimeoutMs;
  if (await attempt(timeout)) return;
  deps.waitUntil(retryFor(REFUND_RETRY_MS, (stop) => attempt(Math.min(timeout, stop - Date.now()))));
}

/**
 * X-RateLimit-* (as Roboticks documents them) of the tightest limit the request spent (least remaining; of those, the
 * one full again last) wherever it was counted (the key's object, the account's), and the IETF draft's
 * RateLimit-Policy / RateLimit headers listing every one; `X-Credits-Remaining` the least any balance it spent from has
 * left. A request that spent no limit (its route names none the key has) gets no rate-limit headers.
 */
export function rateLimitHeaders(spent: readonly Spent[]): Record<string, string> {
  const headers: Record<string, string> = {};
  const credits = creditsRemaining(spent);
  if (credits !== null) headers["X-Credits-Remaining"] = String(credits);
  const limits = spent.flatMap((a) => a.limits.map((l) => ({ ...l, at: a.at })));
  const t = tightest(limits);
  if (!t) return headers;
  return {
    "X-RateLimit-Limit": String(t.limit),
    "X-RateLimit-Remaining": String(t.remaining),
    "X-RateLimit-Reset": String(Math.ceil(t.resetAt / 1000)),
    "RateLimit-Policy": limits.map((l) => `"${l.name}";q=${l.limit};w=${l.windowSeconds}`).join(", "),
    RateLimit: limits.map((l) => `"${l.name}";r=${l.remaining};t=${Math.ceil((l.resetAt - l.at) / 1000)}`).join(", "),
    ...headers,
  };
}

/** The least credits left of the balances a request spent from; null when none is limited. */
export function creditsRemaining(spent: readonly Spent[]): number | null {
  const left = spent.flatMap((a) => (a.credits ? [a.credits.remaining] : []));
  return left.length === 0 ? null : Math.min(...left);
}
