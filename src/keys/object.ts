import { DurableObject } from "cloudflare:workers";
import type { Lease } from "../core/lease";
import type { AuthMethod } from "../core/principal";
import { type Need, type Principal, type Refusal, refusal } from "../core/principal";
import { type Admission, CallMemory, type CallTag, SlidingLog, spentBy, type Unspent } from "../counters/sliding-log";
import { getConfig } from "../platform/config";
import { db, withDeadline } from "../platform/db/client";
import type { Bindings } from "../platform/env";
import { log, safeError } from "../platform/log";
import { addUsage } from "../usage/service";
import { FLUSH_INTERVAL_MS, UsageTally } from "../usage/tally";
import { evaluateKey, type KeyRecord, LAST_USED_INTERVAL_MS, loadKey, recordUse, type VerifyResult } from "./store";

/** A key as its object holds it: the record, the verdict on it and the instant that verdict may change. */
type KeyState = {
  record: KeyRecord | undefined;
  loadedAt: number;
  verdict: VerifyResult;
  until: number;
  lastUsed: number;
  lastMethod: AuthMethod | null;
};

/** The verdict on a key at `now`, and the next instant (revocation or expiry) at which it could change. */
function judge(record: KeyRecord | undefined, now: number): Pick<KeyState, "verdict" | "until"> {
  const instants = [record?.key.revokedAt, record?.key.expiresAt].map((t) => (t ? Date.parse(t) : Infinity)).filter((t) => t > now);
  return { verdict: evaluateKey(record, new Date(now)), until: Math.min(...instants) };
}

export type Authorization =
  /** `lease`: admissions granted beside this one, logged at `id` (the object's lease end), for the caller to spend. */
  | { ok: true; principal: Principal; admission: Admission; lease: Lease | null }
  | Extract<VerifyResult, { ok: false }>
  | { ok: false; refusal: Refusal };

/**
 * Longest time a cached key record is trusted without a reload. Revocation and changes to the key's owner reload it
 * before they are answered (or, failing that, soon after: keys/reload.ts); this bounds how long other changes (such
 * as the account's default limit) take.
 */
export const RECORD_TTL_MS = 60_000;
/** Longest time a record is trusted while a change to it may still land in D1 (see `distrust`). */
export const UNSETTLED_TRUST_MS = 1_000;

/**
 * One API key (`key:<id>`): its record and the verdict on it, its last use, and the sliding log of its own budget, so
 * that an authenticated request costs one call here and no D1 read.
 */
export class KeyObject extends DurableObject<Bindings> {
  /** Replaceable in tests to move time. */
  clock: () => number = Date.now;
  private readonly log: SlidingLog;
  private readonly calls = new CallMemory();
  private key: KeyState | undefined;
  private loading: Promise<KeyState> | null = null;
  private generation = 0;
  /** Until when a change to the key's rights may still land in D1: records read before then are trusted briefly. */
  private distrustUntil: number;
  /** The key whose usage waits for the alarm, or null when none is set by this instance. */
  private flushing: string | null = null;
  private readonly database: D1Database;
  private readonly usage: UsageTally;

  constructor(ctx: DurableObjectState, env: Bindings) {
    super(ctx, env);
    this.database = withDeadline(env.DB, () => getConfig(env).d1TimeoutMs);
    this.log = new SlidingLog(ctx.storage.sql, () => this.clock());
    this.usage = new UsageTally(ctx.storage.sql);
    this.distrustUntil = ctx.storage.kv.get<number>("distrust-until") ?? 0;
  }

  /**
   * Checks the key and what the route needs of it, then spends `cost` requests of its limit. A key that is refused
   * (401) or falls short of the route (403) spends nothing. A caller that can hold a lease (`leasing`) gets one when
   * the key is hot (ratelimit/lease.ts), and gives back what its ended leases did not spend (`unspent`).
   */
  async authorize(
    keyId: string,
    method: AuthMethod,
    need: Need,
    tag: CallTag,
    cost = 1,
    leasing = false,
    unspent: Unspent[] = [],
  ): Promise<Authorization> {
    const known = this.calls.recall(tag);
    if (known) return known.answer as Authorization;
    for (const { id, left } of this.calls.returns(tag, unspent)) this.giveBack(id, left);
    const key = await this.keyState(keyId);
    // Reading the key may have taken a while: decide only if the caller still waits.
    if (this.calls.recall(tag)) throw new Error("call already answered or cancelled");
    const now = this.clock();
    if (now >= key.until) Object.assign(key, judge(key.record, now));
    if (!key.verdict.ok) return this.calls.remember(tag, key.verdict, []);
    const { principal } = key.verdict;
    const code = refusal(principal, need);
    if (code) return this.calls.remember(tag, { ok: false, refusal: code }, []);
    this.noteUse(keyId, key, method, now);
    const granted = this.log.admit(principal.rateLimit, cost, leasing);
    const spent = spentBy(granted);
    const { lease, ...admission } = granted;
    for (const { at, cost: n } of spent) this.usage.count(at, n, 0);
    if (!admission.allowed) this.usage.count(now, 0, 1);
    this.flushLater(keyId);
    const answer = this.calls.remember<Authorization>(tag, { ok: true, principal, admission, lease }, spent);
    // A refusal waits for the admissions decided before it, so a caller never sees it before a lease granted earlier.
    await (admission.allowed ? this.log.saved() : this.log.settled());
    return answer;
  }

  /**
   * The caller gave up on this call: whatever it spent goes back (the lease too: the caller never holds it), and it
   * never spends later. `unspent` is what the call was returning, taken back here if the call never brought it.
   */
  cancel(tag: CallTag, unspent: Unspent[] = []): void {
    for (const { at, cost } of this.calls.cancel(tag)) this.giveBack(at, cost);
    for (const { id, left } of this.calls.returns(tag, unspent)) this.giveBack(id, left);
  }

  /**
   * Gives back a request that was admitted at `at` but refused afterwards: once per `tag`, however many of its attempts
   * arrive, and not at all past the attempt's deadline.
   */
  refund(at: number, cost = 1, tag?: CallTag): void {
    if (tag) {
      if (this.calls.recall(tag)) return;
      this.calls.remember(tag, true, []);
    }
    this.giveBack(at, cost);
  }

  /** Admissions that were not used: back to the budget, and off the usage of the hour they were counted in. */
  private giveBack(at: number, cost: number): void {
    this.log.refund(at, cost);
    this.usage.count(at, -cost, 0);
  }

  /** Writes the usage counted since the last write to D1, at most once per FLUSH_INTERVAL_MS (the alarm). */
  private flushLater(keyId: string): void {
    if (this.flushing !== null) return;
    this.flushing = keyId;
    this.ctx.waitUntil(
      this.ctx.storage
        .getAlarm()
        .then((at) =>
          at === null
            ? this.ctx.storage.put("usage-key", keyId).then(() => this.ctx.storage.setAlarm(this.clock() + FLUSH_INTERVAL_MS))
            : undefined,
        ),
    );
  }

  override async alarm(): Promise<void> {
    this.flushing = null;
    const keyId = await this.ctx.storage.get<string>("usage-key");
    const hours = this.usage.pending();
    if (keyId === undefined || hours.length === 0) return;
    try {
      const record = (await this.keyState(keyId)).record;
      if (!record) return;
      await this.database.batch(addUsage(this.database, keyId, record.key.accountId, hours));
      this.usage.written(hours);
    } catch (err) {
      log("error", "usage_flush_failed", { keyId, error: safeError(err) });
      await this.ctx.storage.setAlarm(this.clock() + FLUSH_INTERVAL_MS);
    }
  }

  /** Drops the cached key: the next request reads the key, its owner and its account again. */
  reload(): void {
    this.generation += 1;
    this.key = undefined;
    this.loading = null;
  }

  /**
   * A change to the key's rights was made but not known to be in force here (its reload failed, or D1 did not answer
   * its write in time, which may still land): drops the cached key, and trusts a record read in the next `ms` for
   * UNSETTLED_TRUST_MS at most, so the change is in force soon after it lands. Kept in storage, so eviction forgets
   * nothing.
   */
  distrust(ms: number): void {
    this.distrustUntil = Math.max(this.distrustUntil, this.clock() + ms);
    this.ctx.storage.kv.put("distrust-until", this.distrustUntil);
    this.reload();
  }

  /** Records the key's last use in D1 at most once per LAST_USED_INTERVAL_MS (or when the method changes), off the answer's path. */
  private noteUse(keyId: string, key: KeyState, method: AuthMethod, now: number): void {
    if (now - key.lastUsed < LAST_USED_INTERVAL_MS && key.lastMethod === method) return;
    key.lastUsed = now;
    key.lastMethod = method;
    this.ctx.waitUntil(
      recordUse(db(this.database), keyId, method, new Date(now))
        .run()
        .catch((err: unknown) => log("error", "last_used_failed", { keyId, error: safeError(err) })),
    );
  }

  private async keyState(keyId: string): Promise<KeyState> {
    if (this.key && this.clock() - this.key.loadedAt < (this.key.loadedAt < this.distrustUntil ? UNSETTLED_TRUST_MS : RECORD_TTL_MS))
      return this.key;
    if (!this.loading) {
      // Concurrent requests share one read; a reload during the read discards its result.
      const generation = this.generation;
      const loadedAt = this.clock();
      this.loading = loadKey(db(this.database), { id: keyId }).then(
        (record) => {
          const key: KeyState = {
            record,
            loadedAt,
            ...judge(record, loadedAt),
            lastUsed: record?.key.lastUsedAt ? Date.parse(record.key.lastUsedAt) : 0,
            lastMethod: record?.key.lastAuthMethod ?? null,
          };
          if (generation === this.generation) {
            this.key = key;
            this.loading = null;
          }
          return key;
        },
        (err: unknown) => {
          if (generation === this.generation) this.loading = null;
          // Only what may be logged crosses back to the worker: drizzle's error names the query and its parameters.
          throw new Error(safeError(err));
        },
      );
    }
    return this.loading;
  }
}
