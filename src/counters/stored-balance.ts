import { Balance, type BalanceState, type LedgerEntry } from "../core/balance";
import type { CreditsConfig, Refill } from "../core/credits";

/** A balance as reads show it, as of now (refills due applied); null when unlimited. */
export type CreditsView = { remaining: number; refill: Refill | null; nextRefillAt: string | null } | null;

/** An admin's or the operator's change to a balance; `idempotencyKey`: the same change sent again applies once. */
export type Adjustment = {
  operation: "add" | "subtract" | "set";
  amount: number;
  reason?: string;
  actor: string;
  idempotencyKey?: string;
};

/**
 * The change's outcome: the balance after it, or why it was refused: a subtraction below zero or from an unlimited
 * balance (`credits_insufficient`), an idempotency key already used for another change (`idempotency_key_reused`).
 */
export type Adjusted =
  /** `replayed`: the same change sent again under its idempotency key, answered as before and applied once. */
  | { ok: true; credits: CreditsView; replayed?: true }
  | { ok: false; code: "credits_insufficient" | "credits_unlimited" | "idempotency_key_reused"; remaining: number | null };

/** How long an adjustment's idempotency key is remembered. */
const IDEMPOTENCY_MS = 24 * 3_600_000;

/** What a balance keeps in its object's storage: its state and the `remaining` of the configuration it last followed. */
type Stored = { state: BalanceState; configured: number | null };

const STORAGE_KEY = "credits";

/**
 * The credits balance of one object (a key's, or an account's pool), in the object's synchronous storage, so a spend
 * is written in the same step that decides it and the platform's output gate holds the answer until it is durable.
 * Every movement goes to `record` (the ledger's outbox) as it is saved.
 *
 * A balance follows its configuration: it opens at the configured `remaining` the first time it is needed, and when
 * the configured `remaining` changes (an operator's PATCH, a plan change) the balance is set to it; the refill is
 * always the configured one. Between configuration changes only spends, refunds, refills and adjustments move it.
 */
export class StoredBalance {
  private stored: Stored | null | undefined;

  constructor(
    private readonly kv: SyncKvStorage,
    private readonly record: (entries: readonly LedgerEntry[]) => void,
  ) {}

  private read(): Stored | null {
    if (this.stored === undefined) this.stored = this.kv.get<Stored>(STORAGE_KEY) ?? null;
    return this.stored;
  }

  /**
   * The balance under `config`, brought to `now` (refills due applied), or null when it is unlimited and never was
   * anything else. Call `save` after moving it.
   */
  open(config: CreditsConfig | null, now: number): Balance | null {
    const stored = this.read();
    const configured = config?.remaining ?? null;
    if (!stored) {
      if (configured === null) return null;
      const balance = new Balance({ remaining: 0, refill: config?.refill ?? null, judgedAt: now, reserved: {} });
      balance.adjust(now, { operation: "set", amount: configured, reason: "opening balance" });
      this.stored = { state: balance.state, configured };
      this.changed = true;
      this.pending = balance;
      return balance;
    }
    const balance = new Balance(stored.state);
    balance.judge(now);
    const refill = config?.refill ?? null;
    if (JSON.stringify(refill) !== JSON.stringify(stored.state.refill)) {
      stored.state.refill = refill;
      this.changed = true;
    }
    if (configured !== stored.configured) {
      stored.configured = configured;
      if (configured === null) balance.unlimit(now);
      else balance.adjust(now, { operation: "set", amount: configured, reason: "configuration changed" });
    }
    this.pending = balance;
    return balance;
  }

  /** The balance as stored, brought to `now`, whatever it is configured as now (to give credits back to it); null when none. */
  current(now: number): Balance | null {
    const stored = this.read();
    if (!stored) return null;
    const balance = new Balance(stored.state);
    balance.judge(now);
    this.pending = balance;
    return balance;
  }

  /** The balance under `config` as of `now`, as reads show it (refills applied and saved). */
  view(config: CreditsConfig | null, now: number): CreditsView {
    const balance = this.open(config, now);
    this.save();
    return viewOf(balance, now);
  }

  /**
   * Applies an adjustment, once per idempotency key within IDEMPOTENCY_MS: sent again with the same change, it answers
   * what it answered first and moves nothing; with another change under the same key, it is refused. Any change to an
   * unlimited balance is refused (`credits_unlimited`): a balance is started by configuring it (a key's `credits` on
   * create, an account's or its plan's), so that every read can tell from the configuration whether there is one.
   */
  adjust(config: CreditsConfig | null, now: number, change: Adjustment): Adjusted {
    const { idempotencyKey, ...rest } = change;
    const memoKey = idempotencyKey === undefined ? undefined : `adjust:${idempotencyKey}`;
    const fingerprint = JSON.stringify([rest.operation, rest.amount, rest.reason ?? null, rest.actor]);
    if (memoKey !== undefined) {
      const known = this.kv.get<{ fingerprint: string; answer: Adjusted; until: number }>(memoKey);
      if (known && known.until > now) {
        if (known.fingerprint === fingerprint) return known.answer.ok ? { ...known.answer, replayed: true } : known.answer;
        return { ok: false, code: "idempotency_key_reused", remaining: this.open(config, now)?.state.remaining ?? null };
      }
    }
    const balance = this.open(config, now);
    if (!balance || balance.state.remaining === null) return { ok: false, code: "credits_unlimited", remaining: null };
    const done = balance.adjust(now, rest);
    this.save();
    const answer: Adjusted = done.ok
      ? { ok: true, credits: viewOf(balance, now) }
      : { ok: false, code: "credits_insufficient", remaining: done.remaining };
    if (memoKey !== undefined) {
      this.forgetBefore(now);
      this.kv.put(memoKey, { fingerprint, answer, until: now + IDEMPOTENCY_MS });
    }
    return answer;
  }

  /** Settles a request's reservation at what it `used` (see Balance.settle): null when it has none (already settled, timed out, or another's). */
  settle(config: CreditsConfig | null, now: number, requestId: string, used: number): { overrun: number; credits: CreditsView } | null {
    const balance = this.open(config, now);
    const settled = balance?.settle(now, requestId, used) ?? null;
    this.save();
    return settled && { ...settled, credits: viewOf(balance, now) };
  }

  /**
   * Empties the balance into another one (a rotated key's into its successor): what it held, or null when it is
   * unlimited; an adjustment to 0 with `reason`, so the ledger shows where it went.
   */
  drain(config: CreditsConfig | null | undefined, now: number, reason: string): number | null {
    // Without its configuration (a give-back after the rotation, the key's record not read): the balance as stored.
    const balance = config === undefined ? this.current(now) : this.open(config, now);
    const held = balance?.state.remaining ?? null;
    if (!balance || held === null) return null;
    if (held === 0) {
      this.save();
      return 0;
    }
    // Subtracted, not set: it is a move, and what its requests give back later is still the balance's (see Balance.setAt).
    balance.adjust(now, { operation: "subtract", amount: held, reason, actor: "keygate" });
    this.save();
    return held;
  }

  /** Drops adjustments' idempotency keys past their time. */
  private forgetBefore(now: number): void {
    for (const [key, memo] of this.kv.list<{ until: number }>({ prefix: "adjust:" })) if (memo.until <= now) this.kv.delete(key);
  }

  /** The balance last opened, whose movements `save` writes; whether its configuration changed besides. */
  private pending: Balance | null = null;
  private changed = false;

  /**
   * Writes the balance last opened, and its movements to the ledger, before anything is awaited. A balance that did not
   * move is not written: judging it again from the instant stored finds the same refills still due.
   */
  save(): void {
    const balance = this.pending;
    const stored = this.stored;
    if (!balance || !stored) return;
    const moved = balance.moved();
    if (moved.length === 0 && !balance.touched() && !this.changed) return;
    this.changed = false;
    this.kv.put(STORAGE_KEY, stored);
    if (moved.length > 0) this.record(moved);
  }
}

/** A balance as reads show it; null when there is none or it is unlimited. */
export function viewOf(balance: Balance | null, now: number): CreditsView {
  if (!balance || balance.state.remaining === null) return null;
  const next = balance.nextRefillAt(now);
  return {
    remaining: balance.state.remaining,
    refill: balance.state.refill,
    nextRefillAt: next === null ? null : new Date(next).toISOString(),
  };
}
