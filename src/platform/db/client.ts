import { type DrizzleD1Database, drizzle } from "drizzle-orm/d1";
import { deadline } from "../deadline";
import { ApiError } from "../errors";
import { log, safeError } from "../log";

export type Db = DrizzleD1Database;

/** D1, or one D1 session (reads from a replica that has caught up with the session's bookmark). */
export type D1 = D1Database | D1DatabaseSession;

export function db(d1: D1): Db {
  // A session has what drizzle's D1 driver calls: prepare and batch.
  return drizzle(d1 as D1Database);
}

/** What a D1 session bookmark looks like (`00000000-00000015-00000000-<32 hex>`); anything else is not one. */
const BOOKMARK = /^[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{32}$/;

/**
 * A D1 session through the Sessions API: its first read goes to whichever copy of the database is nearest (a read
 * replica in production) unless `bookmark` (a session's bookmark a client or a change handed on) asks for one that has
 * caught up with it (or, without one, as `otherwise` says: the primary itself for `first-primary`), and every later
 * read sees what the session wrote or read before. A malformed bookmark is ignored.
 */
export function session(
  d1: D1Database,
  bookmark?: string | null,
  otherwise: D1SessionConstraint = "first-unconstrained",
): D1DatabaseSession {
  return d1.withSession(bookmark && BOOKMARK.test(bookmark) ? bookmark : otherwise);
}

/** `session`, opened at its first statement: a request that reads nothing touches no D1 at all. */
export function lazySession(d1: D1Database, bookmark?: string | null): D1DatabaseSession {
  let opened: D1DatabaseSession | undefined;
  const open = () => {
    opened ??= session(d1, bookmark);
    return opened;
  };
  return {
    prepare: (query: string) => open().prepare(query),
    batch: <T>(statements: D1PreparedStatement[]) => open().batch<T>(statements),
    getBookmark: () => opened?.getBookmark() ?? null,
  } satisfies D1DatabaseSession;
}

export type Query = { toSQL(): { sql: string; params: unknown[] } };

/**
 * Runs drizzle queries and raw statements as one D1 batch: one transaction, all or nothing.
 * Results keep D1's `meta.changes`, which guarded updates are judged by.
 */
export function batch(d1: D1, queries: (Query | D1PreparedStatement)[]): Promise<D1Result[]> {
  return d1.batch(
    queries.map((q) => {
      if (!("toSQL" in q)) return q;
      const { sql, params } = q.toSQL();
      return d1.prepare(sql).bind(...params);
    }),
  );
}

const ROUND_TRIPS = new Set(["first", "run", "all", "raw"]);

/**
 * D1 with a deadline on every round trip (statements, batches, exec): a database that stalls or fails answers 503
 * `database_unavailable` instead of holding the request or answering 500. A write that timed out may still land; every write Keygate
 * makes is guarded or idempotent, so repeating the request is safe.
 */
export function withDeadline<T extends D1>(d1: T, ms: () => number): T {
  const real = new WeakMap<object, D1PreparedStatement>();
  const timed = <T>(p: Promise<T>) =>
    deadline(
      p.catch(unavailable),
      ms(),
      () => new ApiError("database_unavailable", "The database did not answer in time; retry shortly.", RETRY),
    );
  const statement = (s: D1PreparedStatement): D1PreparedStatement => {
    const wrapped = new Proxy(s, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (typeof value !== "function") return value;
        if (prop === "bind") return (...args: unknown[]) => statement(value.apply(target, args));
        if (ROUND_TRIPS.has(prop as string)) return (...args: unknown[]) => timed(value.apply(target, args));
        return value.bind(target);
      },
    });
    real.set(wrapped, s);
    return wrapped;
  };
  return new Proxy(d1, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop === "prepare") return (query: string) => statement(target.prepare(query));
      // D1 takes only its own statement objects in a batch.
      if (prop === "batch") return (list: D1PreparedStatement[]) => timed(target.batch(list.map((s) => real.get(s) ?? s)));
      if (prop === "exec") return (query: string) => timed((target as D1Database).exec(query));
      // A session of a deadline-wrapped database keeps the deadline.
      if (prop === "withSession") return (arg?: string) => withDeadline((target as D1Database).withSession(arg), ms);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

const RETRY = { headers: { "Retry-After": "5" } };

/** What SQLite itself says of a statement (a constraint the caller handles, or a bug): not the database being down. */
const STATEMENT_ERROR = /constraint failed|no such (table|column)|syntax error|SQLITE_/i;

/**
 * A database that fails (a lost connection, a reset, an overloaded or failed storage) is unavailable, like one that
 * stalls: 503, and the same caveat that a write may still have landed. Its message is logged, masked.
 */
function unavailable(err: unknown): never {
  if (err instanceof ApiError || (err instanceof Error && STATEMENT_ERROR.test(err.message))) throw err;
  log("error", "database_error", { error: safeError(err) });
  throw new ApiError("database_unavailable", "The database failed; retry shortly.", RETRY);
}

/** Whether a D1 error is the violation of the unique index on these columns (D1 reports only SQLite's message). */
export function violates(err: unknown, columns: string): boolean {
  return err instanceof Error && err.message.includes(`UNIQUE constraint failed: ${columns}`);
}

/** Whether D1 refused a write for a reference to a row that does not exist. */
export function violatesReference(err: unknown): boolean {
  return err instanceof Error && err.message.includes("FOREIGN KEY constraint failed");
}
