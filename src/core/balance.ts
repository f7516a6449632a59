import { type CreditEntry, nextBoundary, type Refill, refilled } from "./credits";

/** Why a balance moved: as the ledger names it. */
export type CreditKind = "spend" | "refund" | "refill" | "adjust" | "reserve" | "settle";

/** One movement of a balance: the ledger's entry. `requestId` names the request a spend, refund, reserve or settle was for. */
export type LedgerEntry = CreditEntry & { kind: CreditKind; requestId?: string; reason?: string; actor?: string };

/** A balance's refusal: what the request needed, what is left, and when the next refill comes (null: none will). */
export type Exhausted = { ok: false; required: number; remaining: number; nextRefillAt: number | null };

/** What a balance holds, as its object stores it; `remaining` null is unlimited. */
export type BalanceState = {
  remaining: number | null;
  refill: Refill | null;
  /** When refills were last applied (ms since epoch). */
  judgedAt: number;
  /** Credits reserved for a request whose upstream has not said what it cost, by request id. */
  reserved: Record<string, { amount: number; until: number; since?: number }>;
  /**
   * When the balance was last set outright (a `set` refill, an adjustment's `set`): what was spent before then is not
   * given back after it, so a set balance is never exceeded by credits it did not hold.
   */
  setAt?: number;
  /**
   * Reservations already settled or given back, by request id, until when they are remembered: a refund arriving
   * after its settle gives back nothing more.
   */
  closed?: Record<string, number>;
};

/** How long a closed reservation is remembered past its time: longer than any refund of its request takes to arrive. */
const CLOSED_MS = 3_600_000;

/**
 * A credits balance and every rule that moves it, each movement a ledger entry: refills (applied lazily, exactly once
 * per boundary, when next judged), spends that never take it below zero, refunds, reservations settled by the
 * upstream or at their reserve when nobody settles them in time, and an admin's adjustments. Pure: the object that
 * holds the balance stores `state` and what `moved()` gives it; `now` is always passed in.
 */
export class Balance {
  /** What moved the balance since the last `moved()`: every operation records here, refused ones included. */
  private entries: LedgerEntry[] = [];
  /** Whether its state changed with no movement since the last `touched()` (a request closed, see `refund`). */
  private quietChange = false;

  constructor(public state: BalanceState) {}

  /** Whether the state changed with no entry to show it since the last call: it must be stored all the same. */
  touched(): boolean {
    const touched = this.quietChange;
    this.quietChange = false;
    return touched;
  }

  /** The entries recorded since the last call, for the ledger; nothing is lost whatever the operations answered. */
  moved(): LedgerEntry[] {
    const moved = this.entries;
    this.entries = [];
    return moved;
  }

  static unlimited(now: number): Balance {
    return new Balance({ remaining: null, refill: null, judgedAt: now, reserved: {} });
  }

  /** Brings the balance to `now`: refills due applied, reservations past their time settled. */
  judge(now: number): void {
    const s = this.state;
    const entries: LedgerEntry[] = [];
    // Reservations past their time settle at their reserve: what was taken stays taken (a settle that moves nothing).
    for (const [requestId, r] of Object.entries(s.reserved)) {
      if (r.until > now) continue;
      this.close(requestId, r.until);
      entries.push({ at: r.until, delta: 0, balanceAfter: 0, kind: "settle", requestId });
    }
    for (const [requestId, until] of Object.entries(s.closed ?? {})) if (until + CLOSED_MS < now) delete s.closed?.[requestId];
    if (s.remaining !== null && now > s.judgedAt) {
      const { entries: refills } = refilled(s.remaining, s.refill, s.judgedAt, now);
      entries.push(...refills.map((e) => ({ ...e, kind: "refill" as const })));
      // A `set` refill sets the balance at its last boundary, whether or not it changed it.
      if (s.refill?.mode === "set")
        for (let at = nextBoundary(s.judgedAt, s.refill); at <= now; at = nextBoundary(at, s.refill)) s.setAt = at;
    }
    s.judgedAt = Math.max(s.judgedAt, now);
    // In the order they happened, each with the balance right after it.
    entries.sort((a, b) => a.at - b.at);
    for (const e of entries) {
      if (s.remaining !== null) s.remaining += e.delta;
      e.balanceAfter = s.remaining ?? 0;
    }
    this.entries.push(...entries);
  }

  /** When the next refill comes, or null when none will. */
  nextRefillAt(now: number): number | null {
    return this.state.refill ? nextBoundary(now, this.state.refill) : null;
  }

  /** Whether `amount` can be spent now (after `judge`), without spending it. */
  covers(amount: number): boolean {
    return this.state.remaining === null || this.state.remaining >= amount;
  }

  exhausted(now: number, required: number): Exhausted {
    return { ok: false, required, remaining: this.state.remaining ?? 0, nextRefillAt: this.nextRefillAt(now) };
  }

  /**
   * Spends `amount` for a request, or reserves it until `until` when the upstream will say what the request cost
   * (`reserve`): all of it or nothing, never below zero. An unlimited balance spends and records nothing.
   */
  spend(now: number, amount: number, requestId: string, reserve?: { until: number }): { ok: true } | Exhausted {
    this.judge(now);
    if (!this.covers(amount)) return this.exhausted(now, amount);
    const s = this.state;
    if (s.remaining === null || amount === 0) return { ok: true };
    s.remaining -= amount;
    if (reserve) s.reserved[requestId] = { amount, until: reserve.until, since: now };
    this.entries.push({ at: now, delta: -amount, balanceAfter: s.remaining, kind: reserve ? "reserve" : "spend", requestId });
    return { ok: true };
  }

  /**
   * Settles a request's reservation at what it `used`: what was reserved beyond it comes back; more than was reserved
   * is charged only up to the reserve (`overrun` says by how much it was exceeded). Once per reservation: a second
   * settle, or one after the reservation settled at its reserve, changes nothing (null).
   */
  settle(now: number, requestId: string, used: number): { overrun: number } | null {
    this.judge(now);
    const s = this.state;
    const reservation = s.reserved[requestId];
    if (!reservation) return null;
    this.close(requestId, reservation.until);
    const charged = Math.min(used, reservation.amount);
    const back = this.setSince(reservation.since) ? 0 : reservation.amount - charged;
    if (s.remaining !== null) s.remaining += back;
    this.entries.push({ at: now, delta: back, balanceAfter: s.remaining ?? 0, kind: "settle", requestId });
    return { overrun: Math.max(0, used - reservation.amount) };
  }

  /**
   * Gives back what a request spent (its upstream failed): to the balance, or its whole reservation. Without a
   * `requestId`, what an isolate's lease left unspent. Answers what it gave back.
   */
  refund(now: number, amount: number, requestId?: string, spentAt?: number): number {
    this.judge(now);
    const s = this.state;
    const reservation = requestId === undefined ? undefined : s.reserved[requestId];
    if (requestId !== undefined && reservation) {
      this.close(requestId, reservation.until);
      amount = reservation.amount;
      spentAt = reservation.since;
    } else if (requestId !== undefined && s.closed?.[requestId] !== undefined) return 0;
    if (s.remaining === null || amount === 0) return 0;
    if (this.setSince(spentAt)) {
      // Spent before the balance was set: it stays spent, and no later refund of the request gives it back.
      if (requestId !== undefined) {
        s.closed = { ...s.closed, [requestId]: Math.max(s.closed?.[requestId] ?? now, now) };
        this.quietChange = true;
      }
      return 0;
    }
    s.remaining += amount;
    this.entries.push({
      at: now,
      delta: amount,
      balanceAfter: s.remaining,
      kind: "refund",
      ...(requestId === undefined ? {} : { requestId }),
    });
    return amount;
  }

  /** Whether the balance was set outright after `spentAt` (unknown: never): then what was spent then stays spent. */
  private setSince(spentAt: number | undefined): boolean {
    return spentAt !== undefined && this.state.setAt !== undefined && spentAt < this.state.setAt;
  }

  /** Removes a reservation, remembering that it was closed. */
  private close(requestId: string, until: number): void {
    delete this.state.reserved[requestId];
    this.state.closed = { ...this.state.closed, [requestId]: until };
  }

  /** Makes the balance unlimited (its configuration says so now): what was left leaves the ledger's sum with it. */
  unlimit(now: number): void {
    const s = this.state;
    if (s.remaining === null) return;
    this.entries.push({ at: now, delta: -s.remaining, balanceAfter: 0, kind: "adjust", reason: "made unlimited" });
    s.remaining = null;
    s.reserved = {};
  }

  /**
   * An admin's change: add, subtract (never below zero: 409 for the caller) or set. Setting a limited balance to
   * null makes it unlimited; setting an unlimited one to a number starts a balance at it.
   */
  adjust(
    now: number,
    change: { operation: "add" | "subtract" | "set"; amount: number; reason?: string; actor?: string },
  ): { ok: true } | { ok: false; remaining: number | null } {
    this.judge(now);
    const s = this.state;
    const before = s.remaining ?? 0;
    const after = change.operation === "set" ? change.amount : change.operation === "add" ? before + change.amount : before - change.amount;
    if (after < 0 || (s.remaining === null && change.operation !== "set")) return { ok: false, remaining: s.remaining };
    s.remaining = after;
    if (change.operation === "set") s.setAt = now;
    const { reason, actor } = change;
    this.entries.push({
      at: now,
      delta: after - before,
      balanceAfter: after,
      kind: "adjust",
      ...(reason ? { reason } : {}),
      ...(actor ? { actor } : {}),
    });
    return { ok: true };
  }
}
