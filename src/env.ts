import type { Context } from "hono";
import type { Principal } from "./auth/principal";
import type { Config } from "./config";

/**
 * Worker bindings: `Env` is generated from wrangler.toml by `npm run types` (worker-configuration.d.ts).
 * Secrets (`wrangler secret put`) and optional variables are not in wrangler.toml, so they are listed here;
 * every variable is read through the schema in src/config.ts, never directly.
 */
export type Bindings = Env &
  Partial<
    Record<
      | "OPERATOR_TOKEN"
      | "JWT_SIGNING_KEYS"
      | "QUERY_TOKEN_DEPRECATED_AT"
      | "AUTH_DOCS_URL"
      | "ALLOW_HTTP"
      | "RATE_LIMIT_FAILURE_MODE"
      | "RATE_LIMIT_TIMEOUT_MS"
      | "D1_TIMEOUT_MS"
      | "IP_FAILURE_RATE_LIMIT"
      | "HANDSHAKE_AGENT_RATE_LIMIT"
      | "HANDSHAKE_IP_RATE_LIMIT"
      | "HANDSHAKE_USER_RATE_LIMIT"
      | "CHAT_RATE_LIMIT"
      | "DEMO_API_ORIGINS"
      | "VERIFY_TOKEN"
      | "UPSTREAM_URL"
      | "GATEWAY_ROUTES"
      | "UPSTREAM_TIMEOUT_MS"
      | "ASSERTION_SIGNING_KEYS"
      | "PUBLIC_ORIGIN"
      | "DASHBOARD_HOST",
      string
    >
  >;

/** Per-request values set by middleware. */
export type Variables = {
  requestId: string;
  config: Config;
  /** An origin this response may be read from (CORS), once the request proved it is allowed. */
  corsOrigin: string | null;
  /** Set once the gateway has the upstream's answer: that answer is not Keygate's to refund. */
  forwarded?: true;
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
