import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

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
  agent_disabled: [403, "Forbidden"],
  identity_unverified: [403, "Forbidden"],
  not_found: [404, "Not Found"],
  method_not_allowed: [405, "Method Not Allowed"],
  last_active_key: [409, "Conflict"],
  last_admin: [409, "Conflict"],
  email_taken: [409, "Conflict"],
  key_not_active: [409, "Conflict"],
  slug_taken: [409, "Conflict"],
  payload_too_large: [413, "Payload Too Large"],
  unsupported_media_type: [415, "Unsupported Media Type"],
  rate_limited: [429, "Too Many Requests"],
  internal_error: [500, "Internal Server Error"],
  configuration_error: [500, "Internal Server Error"],
  rate_limiter_unavailable: [503, "Service Unavailable"],
  change_pending: [503, "Service Unavailable"],
  database_unavailable: [503, "Service Unavailable"],
  upstream_unavailable: [502, "Bad Gateway"],
  upstream_timeout: [504, "Gateway Timeout"],
  invalid_verify_token: [401, "Unauthorized"],
  invalid_credentials: [401, "Unauthorized"],
  invalid_refresh_token: [401, "Unauthorized"],
  session_ended: [401, "Unauthorized"],
  account_required: [409, "Conflict"],
} as const satisfies Record<string, readonly [ContentfulStatusCode, string]>;

export type ErrorCode = keyof typeof ERRORS;

/** One invalid field of a request body or query. */
export type FieldError = { field: string; message: string };

/** The one error type handlers throw; `onError` renders it as problem+json. */
export class ApiError extends Error {
  readonly status: ContentfulStatusCode;
  constructor(
    readonly code: ErrorCode,
    readonly detail: string,
    readonly extra: { errors?: FieldError[]; headers?: Record<string, string>; body?: Record<string, unknown> } = {},
  ) {
    super(detail);
    this.status = ERRORS[code][0];
  }
}

/** Renders an RFC 9457 problem details response. */
export function problem(c: Context, err: ApiError): Response {
  const [status, title] = ERRORS[err.code];
  const body = {
    type: `urn:keygate:error:${err.code}`,
    title,
    status,
    detail: err.detail,
    code: err.code,
    requestId: c.get("requestId") ?? "",
    ...(err.extra.errors ? { errors: err.extra.errors } : {}),
    ...err.extra.body,
  };
  // nosniff here too: the gateway's problems do not pass the secure headers of Keygate's own routes.
  const headers: Record<string, string> = {
    "Content-Type": "application/problem+json",
    "X-Content-Type-Options": "nosniff",
    ...err.extra.headers,
  };
  if (status === 401 && !headers["WWW-Authenticate"]) headers["WWW-Authenticate"] = 'Bearer realm="keygate"';
  return c.body(JSON.stringify(body), status, headers);
}
