import { DrizzleQueryError } from "drizzle-orm";

type Field = string | number | boolean | null | undefined;

/**
 * Writes one structured log line (JSON). Fields are ids, codes, counts and kinds, never a key, hash, token, password,
 * query parameter, client address or end-user id: callers pass only such fields, and errors only through safeError.
 */
export function log(level: "info" | "warn" | "error", event: string, fields: Record<string, Field> = {}): void {
  console[level](JSON.stringify({ level, event, ...fields }));
}

/**
 * Long hex runs (key hashes, plain keys), the random part of a checksummed key (and any long letters-and-digits run
 * after an underscore) and JWT-shaped strings, in case a message quotes one.
 */
const SECRET_SHAPED = /[0-9a-f]{32,}|_[A-Za-z0-9]{40,}|[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*/gi;

/**
 * What may be logged of an unexpected error: its class and the first line of its own message. drizzle wraps database
 * errors in one whose message is the query and its parameters (a key hash among them), so the wrapper is skipped for
 * its cause, and anything shaped like a secret is masked all the same.
 */
export function safeError(err: unknown): string {
  let e = err;
  while (e instanceof DrizzleQueryError) e = e.cause;
  if (!(e instanceof Error)) return typeof e;
  const line = e.message.split("\n", 1)[0] ?? "";
  // A wrapper that lost its class on the way (across an RPC boundary, say) still starts with drizzle's words.
  if (line.startsWith("Failed query:")) return `${e.name}: a database query failed`;
  return `${e.name}: ${line.replace(SECRET_SHAPED, "[masked]")}`;
}
