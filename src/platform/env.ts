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
      | "CREDITS_SETTLE_TIMEOUT_S"
      | "ASSERTION_SIGNING_KEYS"
      | "PUBLIC_ORIGIN"
      | "DASHBOARD_HOST"
      | "SECRET_SCANNING_KEYS"
      | "WEBHOOK_SIGNING_KEY"
      | "LEAK_REPORT_RATE_LIMIT",
      string
    >
  >;
