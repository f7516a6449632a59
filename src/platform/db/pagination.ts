import { and, desc, type SQL, sql } from "drizzle-orm";
import type { AnySQLiteTable, SQLiteColumn } from "drizzle-orm/sqlite-core";
import { DEFAULT_PAGE } from "../../core/schemas";
import { ApiError } from "../errors";
import type { Db } from "./client";

/** A page request over rows ordered newest first by (createdAt, id). */
export type Page = { limit: number; after: { createdAt: string; id: string } | null };

/** A page request from the validated `?limit=&cursor=`; a cursor this API did not write is a 400 naming the field. */
export function pageOf(query: { limit?: number | undefined; cursor?: string | undefined }): Page {
  return { limit: query.limit ?? DEFAULT_PAGE, after: query.cursor === undefined ? null : decodeCursor(query.cursor) };
}

function decodeCursor(cursor: string): Page["after"] {
  try {
    const pair: unknown = JSON.parse(atob(cursor.replace(/-/g, "+").replace(/_/g, "/")));
    if (Array.isArray(pair) && pair.length === 2) {
      const [createdAt, id] = pair as unknown[];
      if (typeof createdAt === "string" && !Number.isNaN(Date.parse(createdAt)) && typeof id === "string") return { createdAt, id };
    }
  } catch {
    // fall through to the 400 below
  }
  throw new ApiError("invalid_request", "The query is invalid.", {
    errors: [{ field: "cursor", message: "is not a cursor this API returned" }],
  });
}

function encodeCursor(row: { createdAt: string; id: string }): string {
  return btoa(JSON.stringify([row.createdAt, row.id]))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

/**
 * The condition that starts a page after its cursor. The leading `createdAt <= cursor` says nothing the rest does not,
 * but SQLite can seek an index on it (`(account_id, created_at)`): page 100 starts where page 99 ended instead of
 * reading the 99 pages before it, which an OR alone would make it do.
 */
export function pageWhere(table: { createdAt: SQLiteColumn; id: SQLiteColumn }, page: Page): SQL | undefined {
  if (!page.after) return undefined;
  const { createdAt, id } = page.after;
  return sql`(${table.createdAt} <= ${createdAt} AND (${table.createdAt} < ${createdAt} OR ${table.id} < ${id}))`;
}

/** Cuts the one extra row fetched to learn whether another page follows. */
export function toPage<T extends { createdAt: string; id: string }>(rows: T[], page: Page): { rows: T[]; nextCursor: string | null } {
  if (rows.length <= page.limit) return { rows, nextCursor: null };
  const kept = rows.slice(0, page.limit);
  return { rows: kept, nextCursor: encodeCursor(kept[kept.length - 1] as T) };
}

type Listable = AnySQLiteTable & { createdAt: SQLiteColumn; id: SQLiteColumn };

/** One page of a table's rows matching `where`, newest first, and the cursor of the next page. */
export async function listPage<T extends Listable>(d: Db, table: T, where: SQL | undefined, page: Page) {
  type Row = T["$inferSelect"] & { createdAt: string; id: string };
  const rows = (await d
    .select()
    .from(table as AnySQLiteTable)
    .where(and(where, pageWhere(table, page)))
    .orderBy(desc(table.createdAt), desc(table.id))
    .limit(page.limit + 1)) as Row[];
  return toPage<Row>(rows, page);
}
