import { DurableObject } from "cloudflare:workers";
import type { AuthMethod } from "../auth/credentials";
import { type Need, type Principal, type Refusal, refusal } from "../auth/principal";
import { getConfig } from "../config";
import { db, withDeadline } from "../db/client";
import type { Bindings } from "../env";
import { evaluateKey, type KeyRecord, LAST_USED_INTERVAL_MS, loadKey, recordUse, type VerifyResult } from "../keys/store";
import { log, safeError } from "../log";
import { type Decision, decide, firstInWindow, type Policy } from "./window";

export type Admission = Decision & { at: number };

/**
 * What identifies and bounds one call from a request: its id (a retry of the same call reuses it, so it spends once)
 * and the instant (ms since epoch) after which the caller no longer waits, so the call must not spend anything.
 */
export type CallTag = { id: string; deadline: number };

/** A key as its counter holds it: the record, the verdict on it and the instant that verdict may change. */
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
  | { ok: true; principal: Principal; admission: Admission }
  | Extract<VerifyResult, { ok: false }>
  | { ok: false; code: Refusal };

/**
 * Longest time a cached key record is trusted without a reload. Revocation and changes to the key's owner reload it
 * before they are answered; this bounds how long other changes (such as the account's default limit) take.
 */
export const RECORD_TTL_MS = 60_000;

/**
 * How long admissions wait to share one storage write. Each write is a commit that every answer waits for, so a hot
 * key's admissions should share one; a longer wait delays every answer (npm run bench: 0, 1 and 2 ms compared, 1 best).
 */
const GROUP_COMMIT_MS = 1;

/** How long a call's answer is remembered past its deadline: long enough for its retry or its cancellation. */
const CALL_MEMORY_MS = 10_000;

type Remembered = { answer: unknown; spentAt: number | null; cancelled: boolean; keepUntil: number };

/**
 * One limited identity: a key (`key:<id>`) or a client IP. It keeps the log of admitted requests in memory and in its
 * SQLite storage, so counts survive eviction and redeploys. A key's object also holds the key's record, so that an
 * authenticated request costs one call here and no D1 read.
 */
export class RateLimiter extends DurableObject<Bindings> {
  /** Times (ms) of admitted requests still in some window, ascending. */
  private log: number[] = [];
  /** Admissions waiting for the next write, and that write. */
  private unsaved: number[] = [];
  private saving: Promise<void> | null = null;
  /** Replaceable in tests to move time. */
  clock: () => number = Date.now;

  private key: KeyState | undefined;
  private loading: Promise<KeyState> | null = null;
  private generation = 0;
  /** Recent calls by id, oldest first: a retry gets the first answer, a cancellation finds what to give back. */
  private calls = new Map<string, Remembered>();
  private readonly database: D1Database;

  constructor(ctx: DurableObjectState, env: Bindings) {
    super(ctx, env);
    this.database = withDeadline(env.DB, () => getConfig(env).d1TimeoutMs);
    const sql = ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS hits (at INTEGER NOT NULL)");
    this.log = sql
      .exec<{ at: number }>("SELECT at FROM hits ORDER BY at")
      .toArray()
      .map((r) => r.at);
  }

  /**
   * Admits one request if the policy allows it, and records it; `at` identifies the admission for a refund.
   * The answer leaves only once the admission is stored (group commit: one write for all admissions of a moment).
   */
  async consume(policy: Policy, tag: CallTag): Promise<Admission> {
    const known = this.recall(tag);
    if (known) return known.answer as Admission;
    const admission = this.admit(policy);
    this.remember(tag, admission, admission.allowed ? admission.at : null);
    if (admission.allowed) await this.saved();
    return admission;
  }

  /**
   * Checks the key this object counts for and what the route needs of it, then spends one request of its limit.
   * A key that is refused (401) or falls short of the route (403) spends nothing.
   */
  async authorize(keyId: string, method: AuthMethod, need: Need, tag: CallTag): Promise<Authorization> {
    const known = this.recall(tag);
    if (known) return known.answer as Authorization;
    const key = await this.keyState(keyId);
    // Reading the key may have taken a while: decide only if the caller still waits.
    if (this.recall(tag)) throw new Error("call already answered or cancelled");
    const now = this.clock();
    if (now >= key.until) Object.assign(key, judge(key.record, now));
    if (!key.verdict.ok) return this.remember(tag, key.verdict, null);
    const { principal } = key.verdict;
    const code = refusal(principal, need);
    if (code) return this.remember(tag, { ok: false, code }, null);
    this.noteUse(keyId, key, method, now);
    const admission = this.admit(principal.rateLimit);
    const answer = this.remember<Authorization>(tag, { ok: true, principal, admission }, admission.allowed ? admission.at : null);
    if (admission.allowed) await this.saved();
    return answer;
  }

  /**
   * The caller gave up on this call (it timed out or failed): whatever it spent goes back, and it never spends later.
   * The cancellation is remembered until the call's own deadline has passed, after which the call cannot spend anyway.
   */
  cancel(tag: CallTag): void {
    const known = this.calls.get(tag.id);
    if (known?.spentAt != null) this.refund(known.spentAt);
    this.calls.delete(tag.id);
    this.calls.set(tag.id, {
      answer: null,
      spentAt: null,
      cancelled: true,
      keepUntil: Math.max(Date.now(), tag.deadline) + CALL_MEMORY_MS,
    });
  }

  /** Drops the cached key: the next request reads the key, its owner and its account again. */
  reload(): void {
    this.generation += 1;
    this.key = undefined;
    this.loading = null;
  }

  /** Gives back a request that was admitted at `at` but refused afterwards (401/403 answers spend nothing). */
  refund(at: number): void {
    const i = this.log.lastIndexOf(at);
    if (i < 0) return;
    this.log.splice(i, 1);
    const j = this.unsaved.lastIndexOf(at);
    if (j >= 0) this.unsaved.splice(j, 1);
    else this.ctx.storage.sql.exec("DELETE FROM hits WHERE rowid = (SELECT rowid FROM hits WHERE at = ? LIMIT 1)", at);
  }

  /** Decides one request and, when admitted, adds it to the log before any await, so concurrent requests are exact. */
  private admit(policy: Policy): Admission {
    // The clock never runs backwards inside one log: equal times keep the log sorted.
    const now = Math.max(this.clock(), this.log[this.log.length - 1] ?? 0);
    this.forget(now - policy.windowSeconds * 1000);
    const decision = decide(this.log, now, policy);
    if (decision.allowed) {
      this.log.push(now);
      this.unsaved.push(now);
    }
    return { ...decision, at: now };
  }

  /**
   * The earlier answer to this call, if it was already answered (a retry). Throws when the call was cancelled or its
   * deadline passed: the caller has stopped waiting, so nothing may be spent for it.
   */
  private recall(tag: CallTag): Remembered | undefined {
    const now = Date.now();
    for (const [id, r] of this.calls) {
      if (r.keepUntil >= now) break;
      this.calls.delete(id);
    }
    const known = this.calls.get(tag.id);
    if (known?.cancelled || (!known && now > tag.deadline)) throw new Error("the caller no longer waits for this call");
    return known;
  }

  private remember<T>(tag: CallTag, answer: T, spentAt: number | null): T {
    this.calls.set(tag.id, { answer, spentAt, cancelled: false, keepUntil: tag.deadline + CALL_MEMORY_MS });
    return answer;
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
    if (this.key && this.clock() - this.key.loadedAt < RECORD_TTL_MS) return this.key;
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

  /**
   * Resolves once the admissions made so far are written. All admissions of one moment share one write, in a
   * statement per 100 rows; the platform's output gate holds every answer until that write is durable.
   */
  private saved(): Promise<void> {
    this.saving ??= new Promise((resolve) =>
      setTimeout(() => {
        this.saving = null;
        const rows = this.unsaved.splice(0);
        for (let i = 0; i < rows.length; i += 100) {
          const chunk = rows.slice(i, i + 100);
          this.ctx.storage.sql.exec(`INSERT INTO hits (at) VALUES ${chunk.map(() => "(?)").join(",")}`, ...chunk);
        }
        resolve();
      }, GROUP_COMMIT_MS),
    );
    return this.saving;
  }

  /**
   * Drops the entries that left the window once they are at least as many as those still in it: `decide` skips them
   * by binary search, so removing them one request at a time would only cost a copy of the whole log each time.
   */
  private forget(cutoff: number): void {
    const expired = firstInWindow(this.log, cutoff);
    if (expired === 0 || expired < this.log.length - expired) return;
    this.log.splice(0, expired);
    this.ctx.storage.sql.exec("DELETE FROM hits WHERE at <= ?", cutoff);
  }
}
