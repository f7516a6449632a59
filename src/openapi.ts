import { type Hook, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Env, MiddlewareHandler } from "hono";
import { createMiddleware } from "hono/factory";
import type { ZodError } from "zod";
import type { AppEnv } from "./env";
import { ApiError, ERRORS, type ErrorCode, type FieldError } from "./errors";
import { extend } from "./schemas";

/** Largest request body accepted, in bytes; larger bodies get 413 `payload_too_large`. */
export const MAX_BODY_BYTES = 16 * 1024;

/** A field's path as the API names it: `scopes[0]`, `admin.email`. */
function fieldName(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (name, part) => (typeof part === "number" ? `${name}[${part}]` : name ? `${name}.${String(part)}` : String(part)),
    "",
  );
}

/** Every problem a schema found, one entry per field; unknown fields are named one by one. */
export function fieldErrors(error: ZodError): FieldError[] {
  return error.issues.flatMap((issue) => {
    if (issue.code === "unrecognized_keys")
      return issue.keys.map((key) => ({ field: fieldName([...issue.path, key]), message: "is not a known field" }));
    return [{ field: fieldName(issue.path) || "body", message: issue.message }];
  });
}

/** The one 400 for invalid input: every bad field listed. */
export function invalidRequest(errors: FieldError[]): ApiError {
  return new ApiError("invalid_request", `Invalid fields: ${errors.map((e) => e.field).join(", ")}.`, { errors });
}

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

/** The security schemes of a route that takes an API key. */
export const KEY_SECURITY: Record<string, string[]>[] = [{ ApiKey: [] }, { Bearer: [] }];

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
    variables: z.array(z.string()).optional().openapi({ description: "`configuration_error` on /health: the variables to fix" }),
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
