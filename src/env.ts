import type { Principal } from "./auth/principal";
import type { Config } from "./config";
import type { Counter } from "./objects/counter";
import type { KeyObject } from "./objects/key";

/** Worker bindings: wrangler.toml vars and bindings, plus secrets set with `wrangler secret put`. */
export type Bindings = {
  DB: D1Database;
  /** One object per API key: its record, verdict, last use and budget. */
  KEYS: DurableObjectNamespace<KeyObject>;
  /** Plain counters: per client address, per agent, per agent user. */
  COUNTERS: DurableObjectNamespace<Counter>;
  OPERATOR_TOKEN?: string;
  RESOURCE_TYPES?: string;
  QUERY_TOKEN_SUNSET?: string;
  QUERY_TOKEN_DEPRECATED_AT?: string;
  AUTH_DOCS_URL?: string;
  ALLOW_HTTP?: string;
  RATE_LIMIT_FAILURE_MODE?: string;
  RATE_LIMIT_TIMEOUT_MS?: string;
  D1_TIMEOUT_MS?: string;
  IP_FAILURE_RATE_LIMIT?: string;
  JWT_SIGNING_KEYS?: string;
  HANDSHAKE_AGENT_RATE_LIMIT?: string;
  HANDSHAKE_IP_RATE_LIMIT?: string;
  HANDSHAKE_USER_RATE_LIMIT?: string;
  CHAT_RATE_LIMIT?: string;
  DEMO_API_ORIGINS?: string;
};

/** Per-request values set by middleware. */
export type Variables = {
  requestId: string;
  config: Config;
  principal: Principal;
  /** An origin this response may be read from (CORS), once the request proved it is allowed. */
  corsOrigin: string | null;
};

export type AppEnv = { Bindings: Bindings; Variables: Variables };
