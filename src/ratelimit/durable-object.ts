import { DurableObject } from "cloudflare:workers";
import type { AuthMethod } from "../auth/credentials";
import type { Principal } from "../auth/principal";
import { db } from "../db/client";
import type { Bindings } from "../env";
import { evaluateKey, type KeyRecord, LAST_USED_INTERVAL_MS, loadKey, recordUse, type VerifyResult } from "../keys/store";
import { type Decision, decide, firstInWindow, type Policy } from "./window";

export type Admission = Decision & { at: number };

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

export type Authorization = { ok: true; principal: Principal; admission: Admission } | Extract<VerifyResult, { ok: false }>;

/**
 * Longest time a cached key record is trusted without a reload. Revocation and changes to the key's owner reload it
 * at once; this bounds how long other changes (such as the account's default limit) take to reach the key.
 */
export const RECORD_TTL_MS = 60_000;

/**
 * How long admissions wait to share one storage write. Each write is a commit that every answer waits for, so a hot
 * key's admissions should share one; a longer wait delays every answer (npm run bench: 0, 1 and 2 ms compared, 1 best).
 */
const GROUP_COMMIT_MS = 1;

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

  constructor(ctx: DurableObjectState, env: Bindings) {
    super(ctx, env);
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
  async consume(policy: Policy): Promise<Admission> {
    // The clock never runs backwards inside one log: equal times keep the log sorted.
    const now = Math.max(this.clock(), this.log[this.log.length - 1] ?? 0);
    this.forget(now - policy.windowSeconds * 1000);
    const decision = decide(this.log, now, policy);
    if (decision.allowed) {
      // The log changes before any await, so concurrent requests are decided one after another, exactly.
      this.log.push(now);
      this.unsaved.push(now);
      await this.saved();
    }
    return { ...decision, at: now };
  }

  /** Checks the key this object counts for, then spends one request of its limit. Refused keys spend nothing. */
  async authorize(keyId: string, method: AuthMethod): Promise<Authorization> {
    const key = await this.keyState(keyId);
    const now = this.clock();
    if (now >= key.until) Object.assign(key, judge(key.record, now));
    if (!key.verdict.ok) return key.verdict;
    if (now - key.lastUsed >= LAST_USED_INTERVAL_MS || key.lastMethod !== method) {
      key.lastUsed = now;
      key.lastMethod = method;
      this.ctx.waitUntil(
        recordUse(db(this.env.DB), keyId, method, new Date(now))
          .run()
          .catch((err: unknown) => console.error(`lastUsedAt update failed for ${keyId}: ${String(err)}`)),
      );
    }
    return { ok: true, principal: key.verdict.principal, admission: await this.consume(key.verdict.principal.rateLimit) };
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

  private async keyState(keyId: string): Promise<KeyState> {
    if (this.key && this.clock() - this.key.loadedAt < RECORD_TTL_MS) return this.key;
    if (!this.loading) {
      // Concurrent requests share one read; a reload during the read discards its result.
      const generation = this.generation;
      const loadedAt = this.clock();
      this.loading = loadKey(db(this.env.DB), { id: keyId }).then(
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
          throw err;
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
