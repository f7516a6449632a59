import { admitWithLease } from "../core/lease";
import { charges, DEFAULT_LIMIT, firstInWindow, type Limit, type Logs, logOf } from "../core/window";
import type { LogGrant } from "./protocol";

/**
 * How long admissions wait to share one storage write. Each write is a commit that every answer waits for, so a hot
 * key's admissions should share one; a longer wait delays every answer (npm run bench: 0, 1 and 2 ms compared, 1 best).
 */
const GROUP_COMMIT_MS = 1;
/**
 * An admission that comes this long after the last write is written at once, in the step that decided it: a key
 * that is not hot has no other admission to share a commit with, and its call's other writes (its usage) are
 * committed with it instead of in a commit of their own.
 */
const QUIET_MS = 5;
/** Rows per INSERT: two bound parameters each, within the storage's limit of 100 per statement. */
const ROWS_PER_INSERT = 50;

/**
 * The times of admitted requests of one Durable Object, a log per limit name, in memory and in its SQLite storage, so
 * counts survive eviction and redeploys. No window of a limit's length ever holds more than its limit.
 */
export class SlidingLog {
  /** Times (ms) of admitted requests still in some window, ascending, by limit name. */
  private readonly logs: Logs = new Map();
  /** Admissions waiting for the next write, and that write. */
  private unsaved: { name: string; at: number }[] = [];
  private saving: Promise<void> | null = null;
  private lastWrite = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly sql: SqlStorage,
    private readonly clock: () => number,
  ) {
    sql.exec(`CREATE TABLE IF NOT EXISTS hits (at INTEGER NOT NULL, name TEXT NOT NULL DEFAULT '${DEFAULT_LIMIT}')`);
    // A log written before limits had names is the limit named "default"'s: the column's default names its rows.
    if (
      !sql
        .exec<{ name: string }>("PRAGMA table_info(hits)")
        .toArray()
        .some((c) => c.name === "name")
    )
      sql.exec(`ALTER TABLE hits ADD COLUMN name TEXT NOT NULL DEFAULT '${DEFAULT_LIMIT}'`);
    sql.exec("DROP INDEX IF EXISTS hits_at");
    sql.exec("CREATE INDEX IF NOT EXISTS hits_name_at ON hits (name, at)");
    for (const r of sql.exec<{ name: string; at: number }>("SELECT name, at FROM hits ORDER BY name, at"))
      logOf(this.logs, r.name).push(r.at);
  }

  /**
   * Decides one request on every limit it spends (each of `limits` at `cost`, or those `costs` names at their cost)
   * and, when each admits it, adds it to their logs before any await, so concurrent requests are exact. A caller that
   * can hold a lease (`lease`) and spends every limit alike gets one beside it when the logs are hot or its requests
   * waited (`wanted`), and every window has room for it too (core/lease.ts).
   */
  admit({
    limits,
    cost = 1,
    costs,
    lease: leasing = false,
    wanted = 0,
    block = false,
  }: {
    limits: readonly Limit[];
    cost?: number;
    costs?: Record<string, number>;
    lease?: boolean;
    wanted?: number;
    block?: boolean;
  }): LogGrant {
    const now = this.clock();
    const spend = charges(limits, cost, costs);
    for (const { limit } of spend) this.forget(limit.name, now - limit.windowSeconds * 1000);
    const decision = admitWithLease(this.logs, now, spend, leasing && costs === undefined, wanted, block);
    const { lease } = decision;
    for (const { limit, cost: n } of spend) {
      if (decision.allowed) this.unsaved.push(...rows(limit.name, now, n));
      if (lease) this.unsaved.push(...rows(limit.name, lease.id, lease.units));
    }
    return { ...decision, at: now, cost, costs: Object.fromEntries(spend.map(({ limit, cost: n }) => [limit.name, n])) };
  }

  /** Gives back what a request admitted at `at` logged (`costs`, by limit name): it was refused afterwards, or its caller gave up. */
  refund(at: number, costs: Readonly<Record<string, number>>): void {
    for (const [name, cost] of Object.entries(costs)) this.refundOne(name, at, cost);
  }

  /**
   * Gives back `left` admissions of the lease that ends at `id`. A lease is logged in every log at its grant; a log
   * begun since holds no entries at its end unless another lease was granted at the same instant (which it then equals).
   */
  refundLease(id: number, left: number): void {
    for (const name of this.logs.keys()) this.refundOne(name, id, left);
  }

  private refundOne(name: string, at: number, cost: number): void {
    const log = this.logs.get(name);
    if (!log) return;
    // The entries at `at` (instants are whole milliseconds) lie together in the ascending log: removed at once, and
    // from storage in one indexed statement (a returned lease gives back dozens; one by one, each scanned the table).
    const end = firstInWindow(log, at);
    const start = firstInWindow(log, at - 1);
    const count = Math.min(cost, end - start);
    if (count === 0) return;
    log.splice(end - count, count);
    let stored = count;
    for (let j = this.unsaved.length - 1; j >= 0 && stored > 0; j--) {
      const row = this.unsaved[j] as { name: string; at: number };
      if (row.at !== at || row.name !== name) continue;
      this.unsaved.splice(j, 1);
      stored -= 1;
    }
    if (stored > 0)
      this.sql.exec("DELETE FROM hits WHERE rowid IN (SELECT rowid FROM hits WHERE name = ? AND at = ? LIMIT ?)", name, at, stored);
  }

  /** Resolves once the write in progress (if any) is done: answers leave in the order they were decided. */
  async settled(): Promise<void> {
    if (this.saving) await this.saving;
  }

  /**
   * Resolves once the admissions made so far are written: at once after a quiet moment (QUIET_MS), else all admissions
   * of one moment share one write, in a statement per ROWS_PER_INSERT rows. The platform's output gate holds every
   * answer until that write is durable.
   */
  saved(): Promise<void> {
    if (!this.saving && this.clock() - this.lastWrite >= QUIET_MS) {
      this.write();
      return Promise.resolve();
    }
    this.saving ??= new Promise((resolve) =>
      setTimeout(() => {
        this.saving = null;
        this.write();
        resolve();
      }, GROUP_COMMIT_MS),
    );
    return this.saving;
  }

  private write(): void {
    const unsaved = this.unsaved.splice(0);
    if (unsaved.length === 0) return;
    this.lastWrite = this.clock();
    for (let i = 0; i < unsaved.length; i += ROWS_PER_INSERT) {
      const chunk = unsaved.slice(i, i + ROWS_PER_INSERT);
      this.sql.exec(`INSERT INTO hits (name, at) VALUES ${chunk.map(() => "(?, ?)").join(",")}`, ...chunk.flatMap((r) => [r.name, r.at]));
    }
  }

  /**
   * Drops the entries of one log that left its window once they are at least as many as those still in it: `decide`
   * skips them by binary search, so removing them one request at a time would only cost a copy of the whole log each time.
   */
  private forget(name: string, cutoff: number): void {
    const log = this.logs.get(name);
    if (!log) return;
    const expired = firstInWindow(log, cutoff);
    if (expired === 0 || expired < log.length - expired) return;
    log.splice(0, expired);
    this.sql.exec("DELETE FROM hits WHERE name = ? AND at <= ?", name, cutoff);
  }
}

/** `count` rows of the log `name` at `at`. */
function rows(name: string, at: number, count: number): { name: string; at: number }[] {
  return Array.from({ length: count }, () => ({ name, at }));
}
