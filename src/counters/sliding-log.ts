import { admitWithLease } from "../core/lease";
import { firstInWindow, type Policy } from "../core/window";
import type { Granted } from "./protocol";

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
   * concurrent requests are exact. A caller that can hold a lease (`lease`) gets one beside it when the log is hot
   * or its requests waited (`wanted`), and the window has room for it too (core/lease.ts).
   */
  admit({
    policy,
    cost = 1,
    lease: leasing = false,
    wanted = 0,
  }: {
    policy: Policy;
    cost?: number;
    lease?: boolean;
    wanted?: number;
  }): Granted {
    const now = this.clock();
    this.forget(now - policy.windowSeconds * 1000);
    const decision = admitWithLease(this.log, now, policy, cost, leasing, wanted);
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
