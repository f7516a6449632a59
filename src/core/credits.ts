/**
 * Credits: a balance a key or a pool spends from, refilled on UTC boundaries. Pure rules; the objects that hold
 * balances apply them.
 */

/**
 * A refill: `amount` every `interval`, at the top of the hour, at 00:00 UTC, or at 00:00 UTC on `dayOfMonth` (1-28,
 * default 1) of each month. `set` makes the balance `amount` (what was left is lost); `add` adds it to what is left.
 */
export type Refill = { amount: number; interval: "hour" | "day" | "month"; mode: "set" | "add"; dayOfMonth?: number };

/** The largest balance, refill or opening a holder may have: far beyond any plan, well within a double's integers. */
export const MAX_CREDITS = 1_000_000_000_000;

/**
 * Credits as a key, an account or a plan sets them: the balance a new holder opens with (null: unlimited) and its
 * refill. Once opened, the balance lives in its holder's object and moves only by spends, refills and adjustments.
 */
export type CreditsConfig = { remaining: number | null; refill: Refill | null };

/** Credits as stored (JSON written from a validated `CreditsConfig`), or null when none are set. */
export function storedCredits(json: string | null | undefined): CreditsConfig | null {
  return json ? (JSON.parse(json) as CreditsConfig) : null;
}

/** A movement of a balance, as the ledger keeps it. */
export type CreditEntry = { at: number; delta: number; balanceAfter: number };

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** The first refill boundary strictly after `t` (ms since epoch). */
export function nextBoundary(t: number, refill: Pick<Refill, "interval" | "dayOfMonth">): number {
  if (refill.interval === "hour") return Math.floor(t / HOUR_MS) * HOUR_MS + HOUR_MS;
  if (refill.interval === "day") return Math.floor(t / DAY_MS) * DAY_MS + DAY_MS;
  const day = refill.dayOfMonth ?? 1;
  const d = new Date(t);
  const thisMonth = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), day);
  return thisMonth > t ? thisMonth : Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, day);
}

/**
 * The balance at `now` of one that was `balance` when last judged at `since`: every boundary in (since, now] applied
 * once, in order, each a ledger entry (a `set` that changes nothing makes none). Applying it again at the same `now`,
 * or in several steps, gives the same balance and the same entries: a boundary belongs to exactly one interval.
 */
export function refilled(balance: number, refill: Refill | null, since: number, now: number): { balance: number; entries: CreditEntry[] } {
  const entries: CreditEntry[] = [];
  if (refill === null) return { balance, entries };
  let at = nextBoundary(since, refill);
  if (refill.mode === "set") {
    // Only the last boundary matters: each one sets the balance to the same amount.
    let last: number | null = null;
    for (; at <= now; at = nextBoundary(at, refill)) last = at;
    if (last === null || balance === refill.amount) return { balance, entries };
    return { balance: refill.amount, entries: [{ at: last, delta: refill.amount - balance, balanceAfter: refill.amount }] };
  }
  for (; at <= now; at = nextBoundary(at, refill)) {
    balance += refill.amount;
    entries.push({ at, delta: refill.amount, balanceAfter: balance });
  }
  return { balance, entries };
}
