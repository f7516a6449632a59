import { type DrizzleD1Database, drizzle } from "drizzle-orm/d1";

export type Db = DrizzleD1Database;

export function db(d1: D1Database): Db {
  return drizzle(d1);
}

type Query = { toSQL(): { sql: string; params: unknown[] } };

/**
 * Runs drizzle queries and raw statements as one D1 batch: one transaction, all or nothing.
 * Results keep D1's `meta.changes`, which guarded updates are judged by.
 */
export function batch(d1: D1Database, queries: (Query | D1PreparedStatement)[]): Promise<D1Result[]> {
  return d1.batch(
    queries.map((q) => {
      if (!("toSQL" in q)) return q;
      const { sql, params } = q.toSQL();
      return d1.prepare(sql).bind(...params);
    }),
  );
}
