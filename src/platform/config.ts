import { z } from "@hono/zod-openapi";
import { RESOURCE_TYPE } from "../core/grants";
import { DEFAULT_NAMESPACE, NAME } from "../core/key-format";
import { originProblem } from "../core/origins";
import { RouteTable } from "../core/route-table";
import { jsonText, keyList } from "../core/schemas";
import { MAX_LIMIT, MAX_WINDOW_SECONDS } from "../core/window";
import type { Bindings } from "./env";
import { ApiError } from "./errors";
import { log } from "./log";

/** A comma-separated list, blanks dropped. */
const list = (item: z.ZodType<string, string>) =>
  z
    .string()
    .default("")
    .transform((v) =>
      v
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean),
    )
    .pipe(z.array(item));

/** A whole number of the variable's unit, from `min` to `max`. */
const int = (fallback: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(fallback);

/** `"<limit>/<windowSeconds>"`, e.g. `"30/60"`: at most `limit` requests in any window of `windowSeconds`. */
const policy = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((v, ctx) => {
      const m = /^(\d+)\/(\d+)$/.exec(v);
      const limit = Number(m?.[1]);
      const windowSeconds = Number(m?.[2]);
      if (!m || limit < 1 || limit > MAX_LIMIT || windowSeconds < 1 || windowSeconds > MAX_WINDOW_SECONDS) {
        ctx.addIssue({ code: "custom", message: `must be <limit>/<windowSeconds>, limit 1-${MAX_LIMIT}, window 1-${MAX_WINDOW_SECONDS}` });
        return z.NEVER;
      }
      return { limit, windowSeconds };
    });

const instant = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((v, ctx) => {
      const d = new Date(v);
      if (Number.isNaN(d.getTime())) ctx.addIssue({ code: "custom", message: "must be an ISO-8601 date" });
      return d;
    });

const flag = (fallback: "true" | "false") =>
  z
    .enum(["true", "false"])
    .default(fallback)
    .transform((v) => v === "true");

/** JWT_SIGNING_KEYS: a JSON list of `{kid, secret}`, each secret at least 32 bytes, kids unique; the first signs. */
const signingKeys = jsonText(
  keyList(
    z.object({
      kid: z.string().min(1),
      secret: z
        .string()
        .refine((s) => new TextEncoder().encode(s).length >= 32, "secrets must be at least 32 bytes")
        .transform((s) => new TextEncoder().encode(s)),
    }),
  ),
  "[]",
);

/** A secret that must be long enough to resist guessing; unset (or empty) means the feature it guards is off. */
const secret = () =>
  z
    .string()
    .optional()
    .transform((v) => v || undefined)
    .pipe(z.string().min(32, "must be at least 32 characters").optional());

/** UPSTREAM_URL: the provider's origin (and optional base path) the gateway forwards to. */
const upstream = z
  .string()
  .optional()
  .transform((v, ctx) => {
    if (!v) return undefined;
    const url = URL.canParse(v) ? new URL(v) : null;
    if (!url || !["http:", "https:"].includes(url.protocol) || url.search || url.hash || url.username || url.password) {
      ctx.addIssue({ code: "custom", message: "must be an http(s) URL without query, fragment or credentials" });
      return z.NEVER;
    }
    return url;
  });

/** PUBLIC_ORIGIN: the origin clients reach Keygate at, e.g. `https://keygate.example.com`. */
const publicOrigin = z
  .string()
  .optional()
  .transform((v, ctx) => {
    if (!v) return undefined;
    const url = URL.canParse(v) ? new URL(v) : null;
    if (!url || !["http:", "https:"].includes(url.protocol) || url.origin !== v.toLowerCase().replace(/\/$/, "")) {
      ctx.addIssue({ code: "custom", message: "must be an origin: http(s)://host[:port], nothing before or after it" });
      return z.NEVER;
    }
    return url.origin;
  });

/** DASHBOARD_HOST: the hostname (and port, if not the default) the dashboard alone is served on. */
const dashboardHost = z
  .string()
  .optional()
  .transform((v, ctx) => {
    if (!v) return undefined;
    const url = URL.canParse(`https://${v}`) ? new URL(`https://${v}`) : null;
    if (!url || url.host !== v.toLowerCase()) {
      ctx.addIssue({ code: "custom", message: "must be a hostname with an optional port, such as dashboard.example.com" });
      return z.NEVER;
    }
    return url.host;
  });

/** A P-256 key component: 32 bytes, base64url without padding (43 characters). */
const coordinate = z.string().regex(/^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/, "holds a key that is not a P-256 JWK");

/** ASSERTION_SIGNING_KEYS: a JSON list of private P-256 JWKs with unique `kid`s; the first signs, all are published. */
const assertionKeys = jsonText(
  keyList(
    z.looseObject({
      kid: z.string().min(1),
      kty: z.literal("EC"),
      crv: z.literal("P-256"),
      x: coordinate,
      y: coordinate,
      d: coordinate,
    }),
  ),
  "[]",
);

/**
 * SECRET_SCANNING_KEYS: GitHub's secret scanning public keys, as GitHub publishes them
 * (`{"public_keys": [{"key_identifier", "key"}, ...]}`, the document itself) or just that list; unset, the partner
 * endpoint is off.
 */
const secretScanningKeys = jsonText(
  z
    .union([
      z.object({ public_keys: z.array(z.looseObject({ key_identifier: z.string().min(1), key: z.string().includes("PUBLIC KEY") })) }),
      z.array(z.looseObject({ key_identifier: z.string().min(1), key: z.string().includes("PUBLIC KEY") })),
    ])
    .transform((v) => (Array.isArray(v) ? v : v.public_keys)),
  "[]",
);

/** An Ed25519 key component: 32 bytes, base64url without padding (43 characters). */
const okp = z.string().regex(/^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/, "holds a key that is not an Ed25519 JWK");

/** WEBHOOK_SIGNING_KEY: a private Ed25519 JWK with a `kid`; its public half is published, and signs `v1a` deliveries. */
const webhookSigningKey = jsonText(
  z.looseObject({ kid: z.string().min(1), kty: z.literal("OKP"), crv: z.literal("Ed25519"), x: okp, d: okp }).nullable(),
  "null",
);

/** Every variable and secret Keygate reads, with its default; README's configuration table lists the same. */
const ConfigSchema = z.object({
  OPERATOR_TOKEN: secret(),
  VERIFY_TOKEN: secret(),
  UPSTREAM_URL: upstream,
  GATEWAY_ROUTES: RouteTable,
  UPSTREAM_TIMEOUT_MS: int(30_000, 1, 300_000),
  CREDITS_SETTLE_TIMEOUT_S: int(900, 1, 86_400),
  ASSERTION_SIGNING_KEYS: assertionKeys,
  PUBLIC_ORIGIN: publicOrigin,
  DASHBOARD_HOST: dashboardHost,
  RESOURCE_TYPES: list(z.string().regex(RESOURCE_TYPE, "holds a name that is not a resource type name")),
  KEY_PREFIX_NAMESPACE: z
    .string()
    .default(DEFAULT_NAMESPACE)
    .pipe(z.string().regex(NAME, "must be 2-12 characters: a lowercase letter, then lowercase letters or digits")),
  QUERY_TOKEN_SUNSET: instant("2026-07-01T00:00:00Z"),
  QUERY_TOKEN_DEPRECATED_AT: instant("2026-01-01T00:00:00Z"),
  AUTH_DOCS_URL: z.string().default("https://github.com/keygate/keygate#authentication"),
  ALLOW_HTTP: flag("false"),
  RATE_LIMIT_FAILURE_MODE: z.enum(["open", "closed"]).default("closed"),
  RATE_LIMIT_TIMEOUT_MS: int(1000, 1, 60_000),
  D1_TIMEOUT_MS: int(5000, 1, 60_000),
  IP_FAILURE_RATE_LIMIT: policy("30/60"),
  JWT_SIGNING_KEYS: signingKeys,
  HANDSHAKE_AGENT_RATE_LIMIT: policy("600/60"),
  HANDSHAKE_IP_RATE_LIMIT: policy("20/60"),
  HANDSHAKE_USER_RATE_LIMIT: policy("30/60"),
  CHAT_RATE_LIMIT: policy("30/60"),
  SECRET_SCANNING_KEYS: secretScanningKeys,
  WEBHOOK_SIGNING_KEY: webhookSigningKey,
  LEAK_REPORT_RATE_LIMIT: policy("10/60"),
  DEMO_API_ORIGINS: list(
    z.string().superRefine((o, ctx) => {
      const problem = originProblem(o);
      if (problem) ctx.addIssue({ code: "custom", message: `holds an entry that ${problem.replace(/ \(here: .*\)$/, "")}` });
    }),
  ),
});

/** The field of Config each variable becomes. */
const FIELDS = {
  operatorToken: "OPERATOR_TOKEN",
  resourceTypes: "RESOURCE_TYPES",
  /** What every checksummed key starts with: the deployment's own, for secret scanners to recognise its keys by. */
  keyPrefixNamespace: "KEY_PREFIX_NAMESPACE",
  queryTokenSunset: "QUERY_TOKEN_SUNSET",
  queryTokenDeprecatedAt: "QUERY_TOKEN_DEPRECATED_AT",
  authDocsUrl: "AUTH_DOCS_URL",
  rateLimitFailureMode: "RATE_LIMIT_FAILURE_MODE",
  rateLimitTimeoutMs: "RATE_LIMIT_TIMEOUT_MS",
  /** Deadline of every D1 round trip. */
  d1TimeoutMs: "D1_TIMEOUT_MS",
  /** Failed authentications (and provisioning calls) allowed per client IP. */
  ipPolicy: "IP_FAILURE_RATE_LIMIT",
  /** Empty when JWT_SIGNING_KEYS is not set (handshakes then answer configuration_error). */
  signingKeys: "JWT_SIGNING_KEYS",
  /** Anonymous browser handshakes per agent. */
  handshakeAgentPolicy: "HANDSHAKE_AGENT_RATE_LIMIT",
  handshakeIpPolicy: "HANDSHAKE_IP_RATE_LIMIT",
  /** Browser handshakes per identified end user (a userId with its identity proof). */
  handshakeUserPolicy: "HANDSHAKE_USER_RATE_LIMIT",
  chatPolicy: "CHAT_RATE_LIMIT",
  /** Other Keygate origins the demo page may be pointed at with `?api=`; by default only its own. */
  demoApiOrigins: "DEMO_API_ORIGINS",
  /** The secret backends send to POST /v1/keys/verify; verification over HTTP is off while it is unset. */
  verifyToken: "VERIFY_TOKEN",
  /** Where the gateway forwards; unset, everything outside Keygate's own routes is 404. */
  upstreamUrl: "UPSTREAM_URL",
  gatewayRoutes: "GATEWAY_ROUTES",
  /** How long the gateway waits for the upstream's response headers. */
  upstreamTimeoutMs: "UPSTREAM_TIMEOUT_MS",
  /** How long a reservation waits for the upstream to say what its request cost; then it settles at its reserve. */
  creditsSettleTimeoutS: "CREDITS_SETTLE_TIMEOUT_S",
  /** Private JWKs signing the identity assertion sent upstream; the first signs, all are in /.well-known/jwks.json. */
  assertionKeys: "ASSERTION_SIGNING_KEYS",
  /** The assertion's issuer; unset, local development's request origin (see `localOrigin`), else a configuration error. */
  publicOrigin: "PUBLIC_ORIGIN",
  /** The one host the dashboard is served on (and no gateway traffic); unset, every host serves it. */
  dashboardHost: "DASHBOARD_HOST",
  /** Keygate's Ed25519 key for webhook deliveries (`v1a`), published in /.well-known/jwks.json; null: none. */
  webhookSigningKey: "WEBHOOK_SIGNING_KEY",
  /** GitHub's secret scanning public keys; empty: POST /v1/leaks/github is off. */
  secretScanningKeys: "SECRET_SCANNING_KEYS",
  /** Leak reports (POST /v1/leaks) per client address. */
  leakReportPolicy: "LEAK_REPORT_RATE_LIMIT",
  /** Plain http allowed: local development's requests, and webhook endpoints. */
  allowHttp: "ALLOW_HTTP",
} as const satisfies Record<string, keyof typeof ConfigSchema.shape>;

type Shape = typeof ConfigSchema.shape;
export type Config = { readonly [K in keyof typeof FIELDS]: z.output<Shape[(typeof FIELDS)[K]]> };

const cache = new WeakMap<Bindings, Config>();

/**
 * The deployment's configuration. Each variable is validated when a request first needs it, once per environment: a
 * malformed variable answers 500 `configuration_error` on the routes that use it, and only there.
 */
export function getConfig(env: Bindings): Config {
  let config = cache.get(env);
  if (!config) {
    const lazy: Record<string, unknown> = {};
    for (const [field, name] of Object.entries(FIELDS)) {
      Object.defineProperty(lazy, field, {
        configurable: true,
        enumerable: true,
        get() {
          const parsed = ConfigSchema.shape[name].safeParse(env[name]);
          if (!parsed.success) misconfigured(name, parsed.error.issues[0]?.message ?? "is invalid");
          Object.defineProperty(lazy, field, { value: parsed.data, enumerable: true });
          return parsed.data;
        },
      });
    }
    config = lazy as Config;
    cache.set(env, config);
  }
  return config;
}

const checked = new WeakMap<Bindings, string[]>();

/** The names (never the values) of the variables that are set to something Keygate refuses; once per environment. */
export function misconfiguredVariables(env: Bindings): string[] {
  let names = checked.get(env);
  if (!names) {
    names = ConfigSchema.keyof().options.filter((name) => !ConfigSchema.shape[name].safeParse(env[name]).success);
    // The gateway cannot vouch for a forwarded request without a signing key: named too, though unset is valid alone.
    const upstream = ConfigSchema.shape.UPSTREAM_URL.safeParse(env.UPSTREAM_URL);
    const keys = ConfigSchema.shape.ASSERTION_SIGNING_KEYS.safeParse(env.ASSERTION_SIGNING_KEYS);
    if (upstream.data && keys.success && keys.data.length === 0) names.push("ASSERTION_SIGNING_KEYS");
    // Nor name itself in its assertions, outside local development.
    const origin = ConfigSchema.shape.PUBLIC_ORIGIN.safeParse(env.PUBLIC_ORIGIN);
    if (upstream.data && origin.success && origin.data === undefined && env.ALLOW_HTTP !== "true") names.push("PUBLIC_ORIGIN");
    checked.set(env, names);
  }
  return names;
}

/**
 * The origin a request was sent to when Keygate runs in local development: plain http allowed (ALLOW_HTTP, which only
 * `.dev.vars` sets) and a loopback host. Null anywhere else, where the request's Host is the client's to choose.
 */
export function localOrigin(env: Bindings, url: URL): string | null {
  const loopback = url.hostname === "localhost" || url.hostname === "[::1]" || /^127(\.\d{1,3}){3}$/.test(url.hostname);
  return env.ALLOW_HTTP === "true" && loopback ? url.origin : null;
}

/** Where people open the dashboard: DASHBOARD_HOST (on the request's scheme), else PUBLIC_ORIGIN, else the request's origin. */
export function dashboardOrigin(config: Config, url: URL): string {
  if (config.dashboardHost) return `${url.protocol}//${config.dashboardHost}`;
  return config.publicOrigin ?? url.origin;
}

/** The operator and verify tokens, where set and valid: secrets that never leave Keygate. */
export function serviceTokens(env: Bindings): string[] {
  return (["OPERATOR_TOKEN", "VERIFY_TOKEN"] as const).flatMap((name) => ConfigSchema.shape[name].safeParse(env[name]).data ?? []);
}

/** Logs which variable is wrong (never its value) and answers 500 `configuration_error`, without telling the caller more. */
export function misconfigured(name: string, reason: string): never {
  log("error", "configuration_error", { variable: name, reason });
  throw new ApiError("configuration_error", "The server is misconfigured.");
}
