import { originProblem } from "./agents/store";
import type { Bindings } from "./env";
import { ApiError } from "./errors";
import { log } from "./log";
import { MAX_LIMIT, MAX_WINDOW_SECONDS, type Policy } from "./ratelimit/window";
import type { SigningKey } from "./tokens/handshake";

export type Config = {
  operatorToken: string | undefined;
  resourceTypes: readonly string[];
  queryTokenSunset: Date;
  queryTokenDeprecatedAt: Date;
  authDocsUrl: string;
  allowHttp: boolean;
  rateLimitFailureMode: "open" | "closed";
  rateLimitTimeoutMs: number;
  /** Deadline of every D1 round trip. */
  d1TimeoutMs: number;
  /** Failed authentications (and provisioning calls) allowed per client IP. */
  ipPolicy: Policy;
  /** From the JWT_SIGNING_KEYS secret; empty when it is not set (handshakes then answer configuration_error). */
  signingKeys: SigningKey[];
  /** Anonymous browser handshakes per agent. */
  handshakeAgentPolicy: Policy;
  handshakeIpPolicy: Policy;
  /** Browser handshakes per identified end user (a userId with its identity proof). */
  handshakeUserPolicy: Policy;
  chatPolicy: Policy;
  /** Other Keygate origins the demo page may be pointed at with `?api=`; by default only its own. */
  demoApiOrigins: readonly string[];
};

export const DEFAULTS = {
  RESOURCE_TYPES: "",
  QUERY_TOKEN_SUNSET: "2026-07-01T00:00:00Z",
  QUERY_TOKEN_DEPRECATED_AT: "2026-01-01T00:00:00Z",
  AUTH_DOCS_URL: "https://github.com/keygate/keygate#authentication",
  ALLOW_HTTP: "false",
  RATE_LIMIT_FAILURE_MODE: "closed",
  RATE_LIMIT_TIMEOUT_MS: "1000",
  D1_TIMEOUT_MS: "5000",
  IP_FAILURE_RATE_LIMIT: "30/60",
  HANDSHAKE_AGENT_RATE_LIMIT: "600/60",
  HANDSHAKE_IP_RATE_LIMIT: "20/60",
  HANDSHAKE_USER_RATE_LIMIT: "30/60",
  CHAT_RATE_LIMIT: "30/60",
  DEMO_API_ORIGINS: "",
} as const;

const RESOURCE_TYPE = /^[a-z][a-z0-9]{0,31}$/;

const cache = new WeakMap<Bindings, Config>();

/** Reads and validates vars and secrets once per environment object. */
export function getConfig(env: Bindings): Config {
  let config = cache.get(env);
  if (!config) {
    config = parseConfig(env);
    cache.set(env, config);
  }
  return config;
}

function parseConfig(env: Bindings): Config {
  const resourceTypes = (env.RESOURCE_TYPES ?? DEFAULTS.RESOURCE_TYPES)
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  for (const type of resourceTypes) {
    if (!RESOURCE_TYPE.test(type)) misconfigured("RESOURCE_TYPES", `"${type}" is not a resource type name`);
  }
  const operatorToken = env.OPERATOR_TOKEN || undefined;
  if (operatorToken !== undefined && operatorToken.length < 32) misconfigured("OPERATOR_TOKEN", "must be at least 32 characters");
  const allowHttp = env.ALLOW_HTTP ?? DEFAULTS.ALLOW_HTTP;
  if (allowHttp !== "true" && allowHttp !== "false") misconfigured("ALLOW_HTTP", 'must be "true" or "false"');
  const failureMode = env.RATE_LIMIT_FAILURE_MODE ?? DEFAULTS.RATE_LIMIT_FAILURE_MODE;
  if (failureMode !== "open" && failureMode !== "closed") misconfigured("RATE_LIMIT_FAILURE_MODE", 'must be "open" or "closed"');
  return {
    rateLimitFailureMode: failureMode,
    rateLimitTimeoutMs: int("RATE_LIMIT_TIMEOUT_MS", env.RATE_LIMIT_TIMEOUT_MS ?? DEFAULTS.RATE_LIMIT_TIMEOUT_MS, 1, 60_000),
    d1TimeoutMs: int("D1_TIMEOUT_MS", env.D1_TIMEOUT_MS ?? DEFAULTS.D1_TIMEOUT_MS, 1, 60_000),
    ipPolicy: policy("IP_FAILURE_RATE_LIMIT", env.IP_FAILURE_RATE_LIMIT ?? DEFAULTS.IP_FAILURE_RATE_LIMIT),
    signingKeys: signingKeys(env.JWT_SIGNING_KEYS),
    handshakeAgentPolicy: policy("HANDSHAKE_AGENT_RATE_LIMIT", env.HANDSHAKE_AGENT_RATE_LIMIT ?? DEFAULTS.HANDSHAKE_AGENT_RATE_LIMIT),
    handshakeIpPolicy: policy("HANDSHAKE_IP_RATE_LIMIT", env.HANDSHAKE_IP_RATE_LIMIT ?? DEFAULTS.HANDSHAKE_IP_RATE_LIMIT),
    handshakeUserPolicy: policy("HANDSHAKE_USER_RATE_LIMIT", env.HANDSHAKE_USER_RATE_LIMIT ?? DEFAULTS.HANDSHAKE_USER_RATE_LIMIT),
    chatPolicy: policy("CHAT_RATE_LIMIT", env.CHAT_RATE_LIMIT ?? DEFAULTS.CHAT_RATE_LIMIT),
    demoApiOrigins: origins("DEMO_API_ORIGINS", env.DEMO_API_ORIGINS ?? DEFAULTS.DEMO_API_ORIGINS),
    operatorToken,
    resourceTypes,
    queryTokenSunset: date("QUERY_TOKEN_SUNSET", env.QUERY_TOKEN_SUNSET ?? DEFAULTS.QUERY_TOKEN_SUNSET),
    queryTokenDeprecatedAt: date("QUERY_TOKEN_DEPRECATED_AT", env.QUERY_TOKEN_DEPRECATED_AT ?? DEFAULTS.QUERY_TOKEN_DEPRECATED_AT),
    authDocsUrl: env.AUTH_DOCS_URL ?? DEFAULTS.AUTH_DOCS_URL,
    allowHttp: allowHttp === "true",
  };
}

/** `"<limit>/<windowSeconds>"`, e.g. `"30/60"`. */
function policy(name: string, value: string): Policy {
  const [limit = "", windowSeconds = ""] = value.split("/");
  return { limit: int(name, limit, 1, MAX_LIMIT), windowSeconds: int(name, windowSeconds, 1, MAX_WINDOW_SECONDS) };
}

/** A JSON list of `{kid, secret}`, each secret at least 32 bytes; kids unique. */
function signingKeys(value: string | undefined): SigningKey[] {
  if (!value) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    misconfigured("JWT_SIGNING_KEYS", "is not JSON");
  }
  if (!Array.isArray(parsed) || parsed.length === 0) misconfigured("JWT_SIGNING_KEYS", "must be a non-empty list of {kid, secret}");
  const keys = parsed.map((k: { kid?: unknown; secret?: unknown }) => {
    if (typeof k?.kid !== "string" || k.kid === "" || typeof k.secret !== "string")
      misconfigured("JWT_SIGNING_KEYS", "entries need a kid and a secret");
    const secret = new TextEncoder().encode(k.secret);
    if (secret.length < 32) misconfigured("JWT_SIGNING_KEYS", `secret of kid ${k.kid} is shorter than 32 bytes`);
    return { kid: k.kid, secret };
  });
  if (new Set(keys.map((k) => k.kid)).size !== keys.length) misconfigured("JWT_SIGNING_KEYS", "kids must be unique");
  return keys;
}

/** A comma-separated list of exact origins (as agents' allowed origins are). */
function origins(name: string, value: string): string[] {
  const list = value
    .split(",")
    .map((o) => o.trim())
    .filter(Boolean);
  for (const o of list) {
    const problem = originProblem(o);
    if (problem) misconfigured(name, `"${o}" ${problem}`);
  }
  return list;
}

function int(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) misconfigured(name, `must be an integer from ${min} to ${max}`);
  return n;
}

function date(name: string, value: string): Date {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) misconfigured(name, "must be an ISO-8601 date");
  return d;
}

/** Logs which variable is wrong and answers 500 `configuration_error`, without telling the caller more. */
export function misconfigured(name: string, reason: string): never {
  log("error", "configuration_error", { variable: name, reason });
  throw new ApiError("configuration_error", "The server is misconfigured.");
}
