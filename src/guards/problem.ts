import type { Context } from "hono";
import { type ApiError, ERRORS } from "../platform/errors";

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
