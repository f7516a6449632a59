import type { LedgerEntry } from "../core/balance";
import { newId } from "../core/ids";

/** Whose balance an entry moved: a key's own (`keyId`), a person's (`userId`), or the account pool's (both null). */
export type LedgerOwner = { accountId: string; keyId: string | null; userId?: string | null };

/** Columns of a credit_ledger row, as one INSERT binds them. */
const COLUMNS = ["id", "account_id", "key_id", "user_id", "at", "delta", "balance_after", "kind", "count", "request_id", "actor", "reason"];
/** Rows per INSERT: D1 binds at most 100 parameters to a statement. */
const ROWS_PER_STATEMENT = Math.floor(100 / COLUMNS.length);
/**
 * The most rows one flush writes: 20 statements, well within what one invocation of the object may ask of D1 (50 on
 * the free plan, with the key's own reads and usage beside it). What is left waits for the next flush.
 */
export const LEDGER_FLUSH_ROWS = 20 * ROWS_PER_STATEMENT;

const MINUTE_MS = 60_000;

type Row = {
  seq: number;
  id: string;
  account_id: string;
  key_id: string | null;
  user_id: string | null;
  at: number;
  delta: number;
  balance_after: number;
  kind: string;
  count: number;
  request_id: string | null;
  actor: string | null;
  reason: string | null;
};

/**
 * Entries a request makes by the thousand, which the ledger sums per owner and UTC minute: spends, and what leases
 * give back unspent (a refund that names no request). Anything with a request to answer for, a reason or an actor
 * keeps its own row.
 */
function summed(e: LedgerEntry): boolean {
  if (e.reason !== undefined || e.actor !== undefined) return false;
  return e.kind === "spend" || (e.kind === "refund" && e.requestId === undefined);
}

/**
 * The credits ledger's outbox, in the storage of the object that holds the balances: every entry is kept in the same
 * synchronous step that moved the balance (so the answer leaves only once both are durable, and an eviction loses
 * nothing), and reaches D1 table `credit_ledger` later, from the object's alarm, with no D1 write per request.
 *
 * Exactly once: a row's id is made here when the row is opened. Once a flush has read a row it is sealed and never
 * changes again, so a flush that failed half-way (or timed out and landed after all) sends the very same rows again
 * and `INSERT OR IGNORE` drops what is already there. Spends of a minute whose row was sealed open a new row for the
 * same minute: the deltas still sum to exactly what moved.
 */
export class LedgerOutbox {
  constructor(
    private readonly sql: SqlStorage,
    private readonly clock: () => number,
  ) {
    sql.exec(`CREATE TABLE IF NOT EXISTS ledger_outbox (
      seq INTEGER PRIMARY KEY,
      id TEXT NOT NULL UNIQUE,
      account_id TEXT NOT NULL,
      key_id TEXT,
      minute INTEGER,
      at INTEGER NOT NULL,
      delta INTEGER NOT NULL,
      balance_after INTEGER NOT NULL,
      kind TEXT NOT NULL,
      count INTEGER NOT NULL,
      request_id TEXT,
      actor TEXT,
      reason TEXT,
      sealed INTEGER NOT NULL DEFAULT 0,
      queued_at INTEGER NOT NULL
    )`);
    // A person's entries name them: added to an outbox made before people had balances.
    const columns = sql.exec<{ name: string }>("PRAGMA table_info(ledger_outbox)").toArray();
    if (!columns.some((c) => c.name === "user_id")) sql.exec("ALTER TABLE ledger_outbox ADD COLUMN user_id TEXT");
    // The open row of a minute, found on every spend.
    sql.exec("CREATE INDEX IF NOT EXISTS ledger_outbox_open ON ledger_outbox (account_id, key_id, kind, minute) WHERE sealed = 0");
  }

  /** Keeps the entries synchronously in the object's storage (written with the step that made them: the output gate holds the answer until durable). */
  record(owner: LedgerOwner, entries: readonly LedgerEntry[]): void {
    for (const e of entries) {
      if (summed(e)) {
        const minute = Math.floor(e.at / MINUTE_MS);
        const open = this.sql
          .exec<{ seq: number }>(
            "SELECT seq FROM ledger_outbox WHERE account_id = ? AND key_id IS ? AND user_id IS ? AND kind = ? AND minute = ? AND sealed = 0",
            owner.accountId,
            owner.keyId,
            owner.userId ?? null,
            e.kind,
            minute,
          )
          .toArray()[0];
        if (open) {
          // Entries may arrive a little out of order (a lease returned late): the row keeps the latest one's balance.
          this.sql.exec(
            `UPDATE ledger_outbox SET delta = delta + ?, count = count + 1,
               balance_after = CASE WHEN ? >= at THEN ? ELSE balance_after END, at = max(at, ?) WHERE seq = ?`,
            e.delta,
            e.at,
            e.balanceAfter,
            e.at,
            open.seq,
          );
          continue;
        }
        this.insert(owner, e, minute);
      } else {
        this.insert(owner, e, null);
      }
    }
  }

  private insert(owner: LedgerOwner, e: LedgerEntry, minute: number | null): void {
    this.sql.exec(
      `INSERT INTO ledger_outbox (id, account_id, key_id, user_id, minute, at, delta, balance_after, kind, count, request_id, actor, reason, queued_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)`,
      newId("cle"),
      owner.accountId,
      owner.keyId,
      owner.userId ?? null,
      minute,
      e.at,
      e.delta,
      e.balanceAfter,
      e.kind,
      // A summed row stands for many requests: it names none of them.
      minute === null ? (e.requestId ?? null) : null,
      e.actor ?? null,
      e.reason ?? null,
      this.clock(),
    );
  }

  /** Whether anything waits to reach D1 (the object sets its alarm when so). */
  pending(): boolean {
    return this.sql.exec("SELECT 1 FROM ledger_outbox LIMIT 1").toArray().length > 0;
  }

  /** Since when (ms since epoch) the oldest row waiting for D1 has waited, or null when none does: how far D1 lags. */
  waitingSince(): number | null {
    const [row] = this.sql.exec<{ since: number | null }>("SELECT min(queued_at) AS since FROM ledger_outbox").toArray();
    return row?.since ?? null;
  }

  /**
   * Writes what waits to D1 in one batch (idempotent: entry ids are made in the object, INSERT OR IGNORE, so a flush
   * retried after D1 failed mid-way never doubles), then removes it from storage. Throws when D1 fails: nothing is
   * lost, the next flush sends it again. At most LEDGER_FLUSH_ROWS rows, oldest first; `pending()` tells whether more
   * wait.
   */
  async flush(db: D1Database): Promise<void> {
    // Sealed in the same step as it is read: entries recorded while D1 answers open rows of their own.
    this.sql.exec("UPDATE ledger_outbox SET sealed = 1 WHERE sealed = 0");
    const rows = this.sql.exec<Row>("SELECT * FROM ledger_outbox ORDER BY seq LIMIT ?", LEDGER_FLUSH_ROWS).toArray();
    if (rows.length === 0) return;
    const statements: D1PreparedStatement[] = [];
    for (let i = 0; i < rows.length; i += ROWS_PER_STATEMENT) {
      const chunk = rows.slice(i, i + ROWS_PER_STATEMENT);
      const values = chunk.map(() => `(${COLUMNS.map(() => "?").join(", ")})`).join(", ");
      statements.push(
        db
          .prepare(`INSERT OR IGNORE INTO credit_ledger (${COLUMNS.join(", ")}) VALUES ${values}`)
          .bind(
            ...chunk.flatMap((r) => [
              r.id,
              r.account_id,
              r.key_id,
              r.user_id,
              new Date(r.at).toISOString(),
              r.delta,
              r.balance_after,
              r.kind,
              r.count,
              r.request_id,
              r.actor,
              r.reason,
            ]),
          ),
      );
    }
    await db.batch(statements);
    const last = (rows[rows.length - 1] as Row).seq;
    // Only rows sealed before the write: nothing opened since was sent.
    this.sql.exec("DELETE FROM ledger_outbox WHERE sealed = 1 AND seq <= ?", last);
  }
}
