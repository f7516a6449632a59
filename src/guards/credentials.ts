import type { AuthMethod } from "../core/principal";
import type { Config } from "../platform/config";
import { ApiError } from "../platform/errors";

/** How a key reached Keygate: with a request (bearer, header, query), or from a backend through the verify API. */

/** The deprecated query parameter (Robohead's `?userApiToken=...`, discontinued on its sunset date). */
export const QUERY_PARAM = "userApiToken";

/**
 * Finds the credential a request carries: `Authorization: Bearer`, `X-API-Key`, or until the sunset the
 * deprecated query parameter. Returns null when there is none.
 */
export function extractCredential(req: Request, url: URL, config: Config, now: Date): { credential: string; method: AuthMethod } | null {
  const authorization = req.headers.get("Authorization");
  const apiKey = req.headers.get("X-API-Key")?.trim() || null;
  let bearer: string | null = null;
  if (authorization !== null) {
    const m = /^Bearer +(\S+) *$/i.exec(authorization);
    if (!m) throw new ApiError("malformed_credentials", "The Authorization header must be `Bearer <key>`.", { headers: invalidToken });
    bearer = m[1] as string;
  }
  if (bearer !== null && apiKey !== null && bearer !== apiKey) {
    throw new ApiError("conflicting_credentials", "The Authorization and X-API-Key headers carry different credentials; send one.");
  }
  if (bearer !== null) return { credential: bearer, method: "bearer" };
  if (apiKey !== null) return { credential: apiKey, method: "header" };

  const query = url.searchParams.get(QUERY_PARAM);
  if (query === null) return null;
  if (now >= config.queryTokenSunset) {
    throw new ApiError(
      "query_token_discontinued",
      `The ${QUERY_PARAM} query parameter was discontinued on ${config.queryTokenSunset.toISOString()}. Send the key in the X-API-Key header (or Authorization: Bearer) instead.`,
      { headers: invalidToken },
    );
  }
  return { credential: query, method: "query" };
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
