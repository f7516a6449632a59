import { admitWithLease, type Lease } from "../core/lease";
import { type Decision, firstInWindow, type Policy } from "../core/window";

/** A decision, and the instant and number of requests it spent when admitted (what a refund gives back). */
export type Admission = Decision & { at: number; cost: number };

/** An admission, and the lease granted beside it (see ratelimit/lease.ts). */
export type Granted = Admission & { lease: Lease | null };

/**
 * What identifies and bounds one call from a request: its id (a retry of the same call reuses it, so it spends once)
 * and the instant (ms since epoch) after which the caller no longer waits, so the call must not spend anything.
 */
export type CallTag = { id: string; deadline: number };

/**
 * How long admissions wait to share one storage write. Each write is a commit that every answer waits for, so a hot
 * key's admissions should share one; a longer wait delays every answer (npm run bench: 0, 1 and 2 ms compared, 1 best).
 */
const GROUP_COMMIT_MS = 1;

/**
 * The times of admitted requests of one Durable Object, in memory and in its SQLite storage, so counts survive eviction
 * and redeploys. No window of a policy's length ever holds more than its limit.
 */
export class SlidingLog {
  /** Times (ms) of admitted requests still in some window, ascending. */
  private log: number[];
  /** Admissions waiting for the next write, and that write. */
  private unsaved: number[] = [];
  private saving: Promise<void> | null = null;

  constructor(
    private readonly sql: SqlStorage,
    private readonly clock: () => number,
  ) {
    sql.exec("CREATE TABLE IF NOT EXISTS hits (at INTEGER NOT NULL)");
    sql.exec("CREATE INDEX IF NOT EXISTS hits_at ON hits (at)");
    this.log = sql
      .exec<{ at: number }>("SELECT at FROM hits ORDER BY at")
      .toArray()
      .map((r) => r.at);
  }

  /**
   * Decides one request costing `cost` requests and, when admitted, adds them to the log before any await, so
   * concurrent requests are exact. A caller that can hold a lease (`leasing`) gets one beside it when the log is hot
   * and the window has room for it too (ratelimit/lease.ts).
   */
  admit(policy: Policy, cost = 1, leasing = false): Granted {
    const now = this.clock();
    this.forget(now - policy.windowSeconds * 1000);
    const decision = admitWithLease(this.log, now, policy, cost, leasing);
    const { lease } = decision;
    if (decision.allowed) this.unsaved.push(...new Array<number>(cost).fill(now));
    if (lease) this.unsaved.push(...new Array<number>(lease.units).fill(lease.id));
    return { ...decision, at: now, cost };
  }

  /** Gives back `cost` requests admitted at `at` (refused afterwards, or their caller gave up). */
  refund(at: number, cost = 1): void {
    // The entries at `at` (instants are whole milliseconds) lie together in the ascending log: removed at once, and
    // from storage in one indexed statement (a returned lease gives back dozens; one by one, each scanned the table).
    const end = firstInWindow(this.log, at);
    const start = firstInWindow(this.log, at - 1);
    const count = Math.min(cost, end - start);
    if (count === 0) return;
    this.log.splice(end - count, count);
    let stored = count;
    for (let j = this.unsaved.length - 1; j >= 0 && stored > 0; j--) {
      if (this.unsaved[j] !== at) continue;
      this.unsaved.splice(j, 1);
      stored -= 1;
    }
    if (stored > 0) this.sql.exec("DELETE FROM hits WHERE rowid IN (SELECT rowid FROM hits WHERE at = ? LIMIT ?)", at, stored);
  }

  /** Resolves once the write in progress (if any) is done: answers leave in the order they were decided. */
  async settled(): Promise<void> {
    if (this.saving) await this.saving;
  }

  /**
   * Resolves once the admissions made so far are written. All admissions of one moment share one write, in a
   * statement per 100 rows; the platform's output gate holds every answer until that write is durable.
   */
  saved(): Promise<void> {
    this.saving ??= new Promise((resolve) =>
      setTimeout(() => {
        this.saving = null;
        const rows = this.unsaved.splice(0);
        for (let i = 0; i < rows.length; i += 100) {
          const chunk = rows.slice(i, i + 100);
          this.sql.exec(`INSERT INTO hits (at) VALUES ${chunk.map(() => "(?)").join(",")}`, ...chunk);
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
    this.sql.exec("DELETE FROM hits WHERE at <= ?", cutoff);
  }
}

/** How long a call's answer is remembered past its deadline: long enough for its retry or its cancellation. */
const CALL_MEMORY_MS = 10_000;

/** What a call spent: `cost` requests logged at `at` (its admission, or the lease granted beside it). */
export type Spent = { at: number; cost: number };

/** What an answer spent: its admission and the lease beside it, or nothing when it was refused. */
export function spentBy(granted: Granted): Spent[] {
  if (!granted.allowed) return [];
  return granted.lease ? [granted, { at: granted.lease.id, cost: granted.lease.units }] : [granted];
}

/** What a caller's ended lease left unspent: `left` admissions logged at the lease's end `id`. */
export type Unspent = { id: number; left: number };

type Remembered = { answer: unknown; spent: Spent[]; cancelled: boolean; keepUntil: number };

/** Drops the entries of `memory` kept until before `now` (oldest first: each is kept as long after its deadline). */
function forgetBefore<T extends { keepUntil: number }>(memory: Map<string, T>, now: number): void {
  for (const [id, r] of memory) {
    if (r.keepUntil >= now) break;
    memory.delete(id);
  }
}

/**
 * Recent calls by id, oldest first: a retry gets the first answer, a cancellation finds what to give back, and the
 * unspent admissions a call returns are taken back once, whether the call or its cancellation brings them.
 */
export class CallMemory {
  private calls = new Map<string, Remembered>();
  private returned = new Map<string, { keepUntil: number }>();

  /**
   * The earlier answer to this call, if it was already answered (a retry). Throws when the call was cancelled or its
   * deadline passed: the caller has stopped waiting, so nothing may be spent for it.
   */
  recall(tag: CallTag): Remembered | undefined {
    const now = Date.now();
    forgetBefore(this.calls, now);
    const known = this.calls.get(tag.id);
    if (known?.cancelled || (!known && now > tag.deadline)) throw new Error("the caller no longer waits for this call");
    return known;
  }

  /** `spent`: what the call logged (its admission and its lease), for a cancellation to give back. */
  remember<T>(tag: CallTag, answer: T, spent: Spent[]): T {
    this.calls.set(tag.id, { answer, spent, cancelled: false, keepUntil: tag.deadline + CALL_MEMORY_MS });
    return answer;
  }

  /**
   * Marks the call cancelled, until its deadline has passed (after which it cannot spend anyway), and answers what it
   * had spent, so that the caller gives it back.
   */
  cancel(tag: CallTag): Spent[] {
    const spent = this.calls.get(tag.id)?.spent ?? [];
    this.calls.delete(tag.id);
    this.calls.set(tag.id, {
      answer: null,
      spent: [],
      cancelled: true,
      keepUntil: Math.max(Date.now(), tag.deadline) + CALL_MEMORY_MS,
    });
    return spent;
  }

  /**
   * The unspent admissions this call returns, the first time they reach the object (with the call, or with its
   * cancellation when the call never arrived or failed); nothing the second time, so they are never taken back twice.
   */
  returns(tag: CallTag, unspent: readonly Unspent[]): readonly Unspent[] {
    if (unspent.length === 0) return unspent;
    forgetBefore(this.returned, Date.now());
    if (this.returned.has(tag.id)) return [];
    this.returned.set(tag.id, { keepUntil: Math.max(Date.now(), tag.deadline) + CALL_MEMORY_MS });
    return unspent;
  }
}
