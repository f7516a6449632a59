import type { AuthMethod } from "../core/principal";
import type { Config } from "../platform/config";
import { ApiError, type ErrorCode } from "../platform/errors";

/** The deprecated query parameter (Robohead's `?userApiToken=...`, discontinued on its sunset date). */
export const QUERY_PARAM = "userApiToken";

/** The credential a request carries, and how it came; or why none can be taken from it. */
export type Extracted = { ok: true; credential: string; method: AuthMethod } | { ok: false; refusal: ApiError };

/**
 * Finds the credential a request carries: `Authorization: Bearer`, `X-API-Key`, or until the sunset the
 * deprecated query parameter.
 */
export function extractCredential(req: Request, url: URL, config: Config, now: Date): Extracted {
  const authorization = req.headers.get("Authorization");
  const apiKey = req.headers.get("X-API-Key")?.trim() || null;
  let bearer: string | null = null;
  if (authorization !== null) {
    const m = /^Bearer +(\S+) *$/i.exec(authorization);
    if (!m) return refuse("malformed_credentials", "The Authorization header must be `Bearer <key>`.", invalidToken);
    bearer = m[1] as string;
  }
  if (bearer !== null && apiKey !== null && bearer !== apiKey) {
    return refuse("conflicting_credentials", "The Authorization and X-API-Key headers carry different credentials; send one.");
  }
  if (bearer !== null) return { ok: true, credential: bearer, method: "bearer" };
  if (apiKey !== null) return { ok: true, credential: apiKey, method: "header" };

  const query = url.searchParams.get(QUERY_PARAM);
  if (query === null)
    return refuse("missing_credentials", "Send your API key in the `X-API-Key` header or as `Authorization: Bearer <key>`.");
  if (now >= config.queryTokenSunset) {
    return refuse(
      "query_token_discontinued",
      `The ${QUERY_PARAM} query parameter was discontinued on ${config.queryTokenSunset.toISOString()}. Send the key in the X-API-Key header (or Authorization: Bearer) instead.`,
      invalidToken,
    );
  }
  return { ok: true, credential: query, method: "query" };
}

function refuse(code: ErrorCode, detail: string, headers?: Record<string, string>): Extracted {
  return { ok: false, refusal: new ApiError(code, detail, headers && { headers }) };
}

/** The challenge for a request that sent a credential which was refused. */
export const invalidToken = { "WWW-Authenticate": 'Bearer realm="keygate", error="invalid_token"' };

/** RFC 9745 / RFC 8594 headers that mark the query parameter as deprecated. */
export function deprecationHeaders(config: Config): Record<string, string> {
  return {
    Deprecation: `@${Math.floor(config.queryTokenDeprecatedAt.getTime() / 1000)}`,
    Sunset: config.queryTokenSunset.toUTCString(),
    Link: `<${config.authDocsUrl}>; rel="deprecation"; type="text/html"`,
  };
}
