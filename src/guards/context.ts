import type { Context } from "hono";
import type { Principal } from "../core/principal";
import type { Config } from "../platform/config";
import type { Deps } from "../platform/deps";
import type { Bindings } from "../platform/env";

/** Per-request values set by middleware. */
export type Variables = {
  requestId: string;
  /** What services take of this request (src/platform/deps.ts). */
  deps: Deps;
  config: Config;
  /** An origin this response may be read from (CORS), once the request proved it is allowed. */
  corsOrigin: string | null;
};

export type AppEnv = { Bindings: Bindings; Variables: Variables };

/** Routes behind `authenticate`: the key's principal, set by the middleware before the handler runs. */
export type KeyEnv = { Bindings: Bindings; Variables: Variables & { principal: Principal } };
/** Routes that take a key or a handshake token (chat), or a key only when one is sent (handshake). */
export type MaybeKeyEnv = { Bindings: Bindings; Variables: Variables & { principal?: Principal } };

/**
 * What services and the rate limiter use of a request. Hono's `Context<E>` is invariant in `E`, so a handler's context
 * (which also carries `principal`) would not pass as `Context<AppEnv>`; every route's context passes as this.
 */
export type RequestContext = CounterContext &
  Pick<Context<AppEnv>, "req" | "res"> & {
    set<K extends keyof Variables>(key: K, value: Variables[K]): void;
  };

/** What the rate limiter and the key's authorization use: also available outside a request (the verify entrypoint). */
export type CounterContext = Pick<Context<AppEnv>, "env" | "executionCtx" | "header"> & {
  get<K extends keyof Variables>(key: K): Variables[K];
};
