import type { core, ZodError } from "zod";
import type { Refusal } from "../core/principal";

/** Every error code Keygate answers with, its HTTP status and its title. README lists the same table. */
export const ERRORS = {
  invalid_request: [400, "Invalid request"],
  malformed_json: [400, "Malformed JSON"],
  conflicting_credentials: [400, "Conflicting credentials"],
  invalid_invitation: [400, "Invalid invitation"],
  invitation_expired: [400, "Invitation expired"],
  missing_credentials: [401, "Unauthorized"],
  malformed_credentials: [401, "Unauthorized"],
  invalid_key: [401, "Unauthorized"],
  key_revoked: [401, "Unauthorized"],
  key_expired: [401, "Unauthorized"],
  key_owner_disabled: [401, "Unauthorized"],
  query_token_discontinued: [401, "Unauthorized"],
  invalid_operator_token: [401, "Unauthorized"],
  invalid_token: [401, "Unauthorized"],
  token_expired: [401, "Token Expired"],
  https_required: [403, "Forbidden"],
  insufficient_scope: [403, "Forbidden"],
  insufficient_role: [403, "Forbidden"],
  origin_not_allowed: [403, "Forbidden"],
  ip_not_allowed: [403, "Forbidden"],
  operator_only: [403, "Forbidden"],
  agent_disabled: [403, "Forbidden"],
  identity_unverified: [403, "Forbidden"],
  not_found: [404, "Not Found"],
  method_not_allowed: [405, "Method Not Allowed"],
  last_active_key: [409, "Conflict"],
  last_admin: [409, "Conflict"],
  email_taken: [409, "Conflict"],
  key_not_active: [409, "Conflict"],
  slug_taken: [409, "Conflict"],
  external_id_taken: [409, "Conflict"],
  idempotency_in_flight: [409, "Conflict"],
  credits_insufficient: [409, "Conflict"],
  credits_unlimited: [409, "Conflict"],
  idempotency_key_reused: [422, "Unprocessable Content"],
  payload_too_large: [413, "Payload Too Large"],
  unsupported_media_type: [415, "Unsupported Media Type"],
  credits_exhausted: [402, "Payment Required"],
  rate_limited: [429, "Too Many Requests"],
  internal_error: [500, "Internal Server Error"],
  configuration_error: [500, "Internal Server Error"],
  rate_limiter_unavailable: [503, "Service Unavailable"],
  change_pending: [503, "Service Unavailable"],
  database_unavailable: [503, "Service Unavailable"],
  upstream_unavailable: [502, "Bad Gateway"],
  upstream_timeout: [504, "Gateway Timeout"],
  invalid_verify_token: [401, "Unauthorized"],
  invalid_signature: [401, "Unauthorized"],
  invalid_credentials: [401, "Unauthorized"],
  invalid_refresh_token: [401, "Unauthorized"],
  session_ended: [401, "Unauthorized"],
  account_required: [409, "Conflict"],
} as const satisfies Record<string, readonly [number, string]>;

export type ErrorCode = keyof typeof ERRORS;

/** One invalid field of a request body or query. */
export type FieldError = { field: string; message: string };

/** The one error type handlers throw; `onError` renders it as problem+json. */
export class ApiError extends Error {
  readonly status: (typeof ERRORS)[ErrorCode][0];
  constructor(
    readonly code: ErrorCode,
    readonly detail: string,
    readonly extra: { errors?: FieldError[]; headers?: Record<string, string>; body?: Record<string, unknown> } = {},
  ) {
    super(detail);
    this.status = ERRORS[code][0];
  }
}

/**
 * The ApiError an error is or carries (drizzle wraps what the database layer throws, a deadline's 503 among it, in an
 * error of its own); null for any other.
 */
export function apiErrorOf(err: unknown): ApiError | null {
  if (err instanceof ApiError) return err;
  return err instanceof Error && err.cause instanceof ApiError ? err.cause : null;
}

/** A field's path as the API names it: `scopes[0]`, `admin.email`. */
function fieldName(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (name, part) => (typeof part === "number" ? `${name}[${part}]` : name ? `${name}.${String(part)}` : String(part)),
    "",
  );
}

/**
 * A value that is not null but fails `orNull(x)` is wrong as an `x`: its problems are those the `x` found, by field
 * (zod answers only that it is neither, at the union's path).
 */
function notNull(issue: core.$ZodIssue): core.$ZodIssue[] {
  if (issue.code !== "invalid_union") return [issue];
  const isNull = (o: core.$ZodIssue[]) =>
    o.length === 1 && o[0]?.code === "invalid_type" && o[0].expected === "null" && o[0].path.length === 0;
  const [only, ...more] = issue.errors.filter((o) => !isNull(o));
  if (!only || more.length > 0 || issue.errors.length !== 2) return [issue];
  return only.flatMap((i) => notNull({ ...i, path: [...issue.path, ...i.path] }));
}

/** Every problem a schema found, one entry per field; unknown fields are named one by one. */
export function fieldErrors(error: ZodError): FieldError[] {
  return error.issues.flatMap(notNull).flatMap((issue) => {
    if (issue.code === "unrecognized_keys")
      return issue.keys.map((key) => ({ field: fieldName([...issue.path, key]), message: "is not a known field" }));
    return [{ field: fieldName(issue.path) || "body", message: issue.message }];
  });
}

/** The one 400 for invalid input: every bad field listed. */
export function invalidRequest(errors: FieldError[]): ApiError {
  return new ApiError("invalid_request", `Invalid fields: ${errors.map((e) => e.field).join(", ")}.`, { errors });
}

const REFUSAL_DETAIL = {
  insufficient_scope: "This action needs a full-access key; this key is limited to specific resources.",
  insufficient_role: "This action needs an account admin.",
  not_granted: "This key has no grant for this resource.",
  other_account: "No such resource.",
  ip_not_allowed: "This key may not be used from this address (CF-Connecting-IP); its allowedIps do not include it.",
} as const satisfies Record<Refusal, string>;

/** The answer to a principal that falls short: another account's resource is not found, the rest are 403. */
export function refused(code: Refusal): ApiError {
  if (code === "other_account") return new ApiError("not_found", REFUSAL_DETAIL[code]);
  return new ApiError(code === "not_granted" ? "insufficient_scope" : code, REFUSAL_DETAIL[code]);
}
