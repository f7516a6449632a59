import { type Config, getConfig } from "./config";
import { type Db, db, lazySession, withDeadline } from "./db/client";
import type { Bindings } from "./env";
import { log } from "./log";

/**
 * What services, the counters and the objects take from the world, built once per request, per RPC call, per alarm and
 * per queue batch: never Hono's context, so any entrypoint can call them. `env.DB` and `db` answer within D1_TIMEOUT_MS
 * (503 `database_unavailable` past it).
 */
export type Deps = {
  /** The bindings, D1 deadline-wrapped: the objects' namespaces are reached through them. */
  env: Bindings;
  db: Db;
  config: Config;
  /** The id logs and counter calls carry (a counter spends once per id). */
  requestId: string;
  /** Work that may finish after the answer. */
  waitUntil(promise: Promise<unknown>): void;
  log: typeof log;
  now(): Date;
  /** The D1 session's bookmark so far (null before its first query): what a later read must have caught up with. */
  bookmark(): string | null;
};

/** A fresh id for a request or a call that came without one. */
export const newRequestId = () => `req_${crypto.randomUUID().replaceAll("-", "")}`;

/**
 * The Deps of one request or call: `env` as the runtime gave it, `ctx` its execution context. Its D1 is one session
 * (db/client.ts `session`), caught up with `bookmark` when the caller hands one on.
 */
export function makeDeps(
  env: Bindings,
  ctx: { waitUntil(promise: Promise<unknown>): void },
  requestId: string = newRequestId(),
  now: () => Date = () => new Date(),
  bookmark?: string | null,
): Deps {
  const config = getConfig(env);
  // Read when a call is made: a malformed D1_TIMEOUT_MS fails the call that needs it, not every entrypoint.
  const d1 = withDeadline(lazySession(env.DB, bookmark), () => config.d1TimeoutMs);
  return {
    // Code that takes `env.DB` uses prepare and batch, which a session has.
    env: { ...env, DB: d1 as unknown as D1Database },
    db: db(d1),
    bookmark: () => d1.getBookmark(),
    config,
    requestId,
    waitUntil: (promise) => ctx.waitUntil(promise),
    log,
    now,
  };
}
