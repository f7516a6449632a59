import { type Hook, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Env, MiddlewareHandler } from "hono";
import { createMiddleware } from "hono/factory";
import { extend } from "../core/schemas";
import type { AppEnv } from "../guards/context";
import { ApiError, ERRORS, type ErrorCode, fieldErrors, invalidRequest } from "../platform/errors";

/** Largest request body accepted, in bytes; larger bodies get 413 `payload_too_large`. */
export const MAX_BODY_BYTES = 16 * 1024;

const defaultHook: Hook<unknown, AppEnv, string, undefined> = (result) => {
  if (!result.success) throw invalidRequest(fieldErrors(result.error));
};

/** A group of routes whose requests are validated by their schemas and whose contract is the OpenAPI document. */
export function routes() {
  return new OpenAPIHono<AppEnv>({ defaultHook });
}

/** `application/json` with well-formed parameters only: what the route validators accept too, so the two never disagree. */
const JSON_TYPE = /^application\/json(;\s*[a-zA-Z0-9-]+=[^;]+)*$/i;

/**
 * Reads the body as a JSON object before any schema sees it: 415 unless it is declared JSON (so every browser call is
 * preflighted; Hono's validator would quietly validate `{}` instead), 400 `malformed_json` unless it parses, and
 * 400 `invalid_request` unless it is an object. The validator then reads the same parsed body.
 */
export const jsonObject = createMiddleware<AppEnv>(async (c, next) => {
  if (!JSON_TYPE.test(c.req.header("Content-Type") ?? "")) {
    throw new ApiError("unsupported_media_type", "Send the body as JSON with `Content-Type: application/json`.");
  }
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new ApiError("malformed_json", "The request body is not valid JSON.");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ApiError("invalid_request", "The request body must be a JSON object.");
  }
  await next();
});

/**
 * A route's middleware: `first` (authentication), then `jsonObject`. A tuple, so the handler's context carries what
 * `first` sets (`principal`); an array literal would lose it.
 */
export function withBody<E extends Env>(first: MiddlewareHandler<E>): [MiddlewareHandler<E>, typeof jsonObject] {
  return [first, jsonObject];
}

/** One security scheme per kind of secret. */
const SECURITY_SCHEMES = {
  ApiKey: {
    type: "apiKey",
    in: "header",
    name: "X-API-Key",
    description:
      "An API key: `<prefix>_` and 64 hex characters. `Authorization: Bearer <key>` works as well (one of the two); until its sunset, the deprecated `?userApiToken=` query parameter too.",
  },
  AccessToken: {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
    description: "A person's access token (one hour) from `POST /v1/auth/login` or `/v1/auth/refresh`, with the user's rights.",
  },
  HandshakeToken: {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
    description: "A browser widget's short-lived token from `POST /v1/handshake`, bound to its origin; the chat routes only.",
  },
  OperatorToken: {
    type: "http",
    scheme: "bearer",
    description: "The deployment's `OPERATOR_TOKEN`: provisioning and recovery of accounts.",
  },
  VerifyToken: {
    type: "http",
    scheme: "bearer",
    description: "The deployment's `VERIFY_TOKEN`: the provider's backends (key verification, the resource registry).",
  },
} as const;

type Security = Record<string, string[]>[];
const needs = (...schemes: (keyof typeof SECURITY_SCHEMES)[]): Security => schemes.map((s) => ({ [s]: [] }));

/** A route that takes an API key or a person's access token. */
export const KEY_SECURITY = needs("ApiKey", "AccessToken");
/** The chat: an API key, an access token or a widget's handshake token. */
export const CHAT_SECURITY = needs("ApiKey", "AccessToken", "HandshakeToken");
/** A person's own session: an access token only. */
export const PERSON_SECURITY = needs("AccessToken");
export const OPERATOR_SECURITY = needs("OperatorToken");
export const VERIFY_SECURITY = needs("VerifyToken");

/** The problems authenticating with an API key can give, whatever the route. */
export const KEY_PROBLEMS: ErrorCode[] = [
  "missing_credentials",
  "malformed_credentials",
  "conflicting_credentials",
  "invalid_key",
  "key_revoked",
  "key_expired",
  "key_owner_disabled",
  "query_token_discontinued",
  "invalid_token",
  "token_expired",
  "session_ended",
  "insufficient_scope",
  "insufficient_role",
  "ip_not_allowed",
  "rate_limited",
  "rate_limiter_unavailable",
  "database_unavailable",
];

/** The problems of reading a JSON body. */
export const BODY_PROBLEMS: ErrorCode[] = ["invalid_request", "malformed_json", "unsupported_media_type", "payload_too_large"];

/** A required JSON request body. */
export function jsonBody<T extends z.ZodType>(schema: T) {
  return { required: true, content: { "application/json": { schema } } };
}

/** A JSON response. */
export function json<T extends z.ZodType>(schema: T, description: string) {
  return { description, content: { "application/json": { schema } } };
}

/** RFC 9457 problem details, as every error answer carries them. */
export const Problem = z
  .strictObject({
    type: z.string().openapi({ example: "urn:keygate:error:not_found" }),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string(),
    requestId: z.string(),
    errors: z.array(z.strictObject({ field: z.string(), message: z.string() })).optional(),
    retry_after: z.number().int().optional(),
    limit: z.string().optional().openapi({ description: "`rate_limited`: the name of the limit that refused the request" }),
    variables: z.array(z.string()).optional().openapi({ description: "`configuration_error` on /health: the variables to fix" }),
    required: z.number().int().optional().openapi({ description: "`credits_exhausted`: the credits the request needed" }),
    remaining: z.number().int().optional().openapi({ description: "`credits_exhausted`, `credits_insufficient`: the credits left" }),
    nextRefillAt: z
      .string()
      .nullable()
      .optional()
      .openapi({ description: "`credits_exhausted`: when the next refill comes (then `Retry-After` says so too); null: none will" }),
  })
  .openapi("Problem");

/** What any route may answer, whatever it does: plain http, a misconfigured deployment, an unexpected failure. */
const EVERY_ROUTE: ErrorCode[] = ["https_required", "configuration_error", "internal_error"];

/**
 * The problem responses of a route, grouped by status from the ERRORS table, so a code is documented with the status
 * it really has; each status lists its codes.
 */
export function problems(...codes: ErrorCode[]) {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set([...codes, ...EVERY_ROUTE])) byStatus.set(ERRORS[code][0], [...(byStatus.get(ERRORS[code][0]) ?? []), code]);
  return Object.fromEntries(
    [...byStatus].map(([status, list]) => [
      status,
      {
        description: list.map((c) => `\`${c}\``).join(", "),
        content: { "application/problem+json": { schema: extend(Problem, { code: z.enum(list as [ErrorCode, ...ErrorCode[]]) }) } },
      },
    ]),
  );
}

/** What the reference says before the operations: how to authenticate, what errors look like, how lists page. */
const INTRODUCTION = `API-key authentication, rate limits and handshake tokens for HTTP APIs on Cloudflare Workers.

## Authentication
Each operation names the credentials it takes:
- **API key** (\`ApiKey\`): \`X-API-Key: <key>\` or \`Authorization: Bearer <key>\`. Keys are created with \`POST /v1/api-keys\`; the raw key is shown once.
- **Access token** (\`AccessToken\`): a person logs in with \`POST /v1/auth/login\` and sends \`Authorization: Bearer <access_token>\`; \`POST /v1/auth/refresh\` renews it.
- **Handshake token** (\`HandshakeToken\`): a browser widget gets one from \`POST /v1/handshake\`; it works on the chat routes only.
- **Operator token** and **verify token**: the deployment's own secrets, for provisioning accounts and for the provider's backends.
- The **dashboard** signs people in with a session cookie.

Every authenticated answer carries its rate limit (\`RateLimit\`, \`RateLimit-Policy\`, \`X-RateLimit-*\`); every answer carries \`X-Request-Id\`.

## Errors
Every error is an RFC 9457 problem (\`application/problem+json\`) with a stable \`code\`, the \`status\`, a \`detail\` for people and the \`requestId\`; invalid input lists each field in \`errors\`. Each operation lists the codes it can answer, grouped by status. A 429 carries \`Retry-After\`; a 402 \`credits_exhausted\` carries \`required\`, \`remaining\` and \`nextRefillAt\` (and \`Retry-After\` when a refill will come). A method a path does not take is 405 with \`Allow\`.

## Paging
Lists answer \`{data, nextCursor}\`, newest first. Pass \`limit\` (1–100, default 20) and, for the next page, \`cursor\` set to the previous page's \`nextCursor\`; \`null\` means there is no more.`;

/** The sections of the reference, by path prefix; the first that matches names an operation's tag. */
const TAGS: { prefix: string; name: string; description: string }[] = [
  { prefix: "/v1/api-keys", name: "API keys", description: "Create, list, rotate and revoke keys; their usage." },
  { prefix: "/v1/accounts", name: "Operator", description: "Provisioning and recovery of accounts, with the operator token." },
  { prefix: "/v1/account", name: "Account", description: "The caller's account, its settings and usage." },
  { prefix: "/v1/whoami", name: "Account", description: "" },
  { prefix: "/v1/users", name: "Users", description: "People of the account: invitations, roles, grants." },
  { prefix: "/v1/auth", name: "People", description: "Log in, refresh, passwords and sessions of people." },
  { prefix: "/v1/agents", name: "Agents", description: "Chat widgets: their allowed origins and identity secrets." },
  { prefix: "/v1/handshake", name: "Chat", description: "Handshake tokens for browser widgets, and the chat they reach." },
  { prefix: "/v1/chat", name: "Chat", description: "" },
  { prefix: "/v1/keys/verify", name: "Backend", description: "For the provider's backends, with the verify token." },
  { prefix: "/v1/credits", name: "Backend", description: "" },
  { prefix: "/v1/resource-owners", name: "Backend", description: "" },
  { prefix: "/dashboard", name: "Dashboard", description: "Server-rendered pages and forms for people, signed in with a cookie." },
  { prefix: "/demo", name: "Demo", description: "A minimal chat widget page." },
  { prefix: "/", name: "Service", description: "Health, this document, its reference and the gateway's public keys." },
];

const header = (description: string, example: string) => ({ description, schema: { type: "string", example } });
const HEADERS = {
  RequestId: { ...header("This request's id: quote it when you report a problem", "req_5f0c9a1e2b7d43a8c6e1f0b2"), required: true },
  RateLimit: header("The limit's state: requests remaining (`r`) and seconds to the window's end (`t`)", '"default";r=59;t=60'),
  RateLimitPolicy: header("The limit: `q` requests per `w` seconds", '"default";q=60;w=60'),
  XRateLimitLimit: header("Requests allowed per window", "60"),
  XRateLimitRemaining: header("Requests left in this window", "59"),
  XRateLimitReset: header("When the window ends, in Unix seconds", "1795334400"),
  RetryAfter: header("Seconds to wait before trying again", "1"),
  Deprecation: header("The key came in the deprecated `userApiToken` query parameter (RFC 9745)", "@1767225600"),
  Sunset: header("When the query parameter stops working (RFC 8594)", "Wed, 01 Jul 2026 00:00:00 GMT"),
  Link: header("Where the migration is documented", '<https://keygate.example/docs>; rel="deprecation"; type="text/html"'),
  WWWAuthenticate: header("Why the credential was refused", 'Bearer realm="keygate", error="invalid_token"'),
};
const ref = (name: keyof typeof HEADERS) => ({ $ref: `#/components/headers/${name}` });
const RATE_LIMIT_HEADERS = {
  RateLimit: ref("RateLimit"),
  "RateLimit-Policy": ref("RateLimitPolicy"),
  "X-RateLimit-Limit": ref("XRateLimitLimit"),
  "X-RateLimit-Remaining": ref("XRateLimitRemaining"),
  "X-RateLimit-Reset": ref("XRateLimitReset"),
};
const DEPRECATION_HEADERS = { Deprecation: ref("Deprecation"), Sunset: ref("Sunset"), Link: ref("Link") };

type Operation = {
  operationId?: string;
  tags?: string[];
  security?: Security;
  parameters?: { name: string; in: string; schema?: Record<string, unknown> }[];
  responses: Record<string, { headers?: Record<string, unknown> }>;
};
type Generated = {
  info: { description?: string };
  tags?: { name: string; description?: string }[];
  paths?: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, { properties?: Record<string, unknown>; additionalProperties?: unknown }> } & Record<
    string,
    unknown
  >;
};

/** `postApiKeysByIdRotate` for `POST /v1/api-keys/{id}/rotate`. */
function operationId(method: string, path: string): string {
  const words = path
    .split("/")
    .filter((part) => part && part !== "v1")
    .flatMap((part) => (part.startsWith("{") ? ["by", part.slice(1, -1)] : part.split(/[^A-Za-z0-9]+/)))
    .filter(Boolean);
  return method + words.map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join("");
}

/**
 * The document as served: what the routes declare, completed where one rule covers every route: an `operationId` and
 * a tag, `security: []` where a route takes no credential, the headers every answer carries (request id, rate limits,
 * deprecation, `Retry-After`, `WWW-Authenticate`), the security schemes, and, for the resource types this deployment
 * configures (`resourceTypes`), the `<type>Ids` fields of a new key and the values of a `{type}` path parameter.
 */
export function completeDocument<T extends object>(generated: T, resourceTypes: readonly string[]): T {
  const doc = generated as Generated;
  doc.info.description = INTRODUCTION;
  const used = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const [method, op] of Object.entries(item)) {
      op.operationId ??= operationId(method, path);
      const tag = TAGS.find((t) => path === t.prefix || path.startsWith(t.prefix === "/" ? "/" : `${t.prefix}/`));
      op.tags ??= tag ? [tag.name] : [];
      for (const name of op.tags) used.add(name);
      op.security ??= [];
      // A path's resource type is one this deployment configures (the resource registry refuses any other).
      for (const p of op.parameters ?? []) if (p.in === "path" && p.name === "type") p.schema = { ...p.schema, enum: [...resourceTypes] };
      const schemes = new Set(op.security.flatMap((s) => Object.keys(s)));
      const limited = ["ApiKey", "AccessToken", "HandshakeToken", "DashboardCookie"].some((s) => schemes.has(s));
      for (const [status, response] of Object.entries(op.responses)) {
        response.headers = {
          ...response.headers,
          "X-Request-Id": ref("RequestId"),
          ...(limited ? RATE_LIMIT_HEADERS : {}),
          ...(schemes.has("ApiKey") ? DEPRECATION_HEADERS : {}),
          ...(status === "429" || status === "503" ? { "Retry-After": ref("RetryAfter") } : {}),
          ...(status === "401" ? { "WWW-Authenticate": ref("WWWAuthenticate") } : {}),
        };
      }
    }
  }
  doc.tags = TAGS.filter((t) => t.description && used.has(t.name)).map(({ name, description }) => ({ name, description }));
  doc.components ??= {};
  const components = doc.components;
  components.securitySchemes = { ...SECURITY_SCHEMES, ...(components.securitySchemes as object) };
  components.headers = HEADERS;
  // A grant names a resource type this deployment configures.
  const grants = components.schemas?.Grants as { items: { pattern: string } } | undefined;
  if (grants) grants.items.pattern = `^\\s*(?:\\*|(?:${resourceTypes.join("|")}):[A-Za-z0-9][A-Za-z0-9_.-]{0,127})\\s*$`;
  const newKey = components.schemas?.NewKey;
  if (newKey) {
    const ids = newKey.additionalProperties;
    newKey.properties = {
      ...newKey.properties,
      ...Object.fromEntries(
        resourceTypes.map((type) => [`${type}Ids`, { ...(ids as object), description: `Adds the grants \`${type}:<id>\`` }]),
      ),
    };
    newKey.additionalProperties = false;
  }
  return generated;
}
