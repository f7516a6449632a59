import { ApiError } from "../../platform/errors";

/** 405 naming the methods the path takes. */
export function methodNotAllowed(methods: readonly string[]): ApiError {
  return new ApiError("method_not_allowed", `Use ${methods.join(" or ")} on this path.`, { headers: { Allow: methods.join(", ") } });
}

/** A Hono route path (`/keys/:id/revoke`, `/files/*`) as a pattern of the paths it takes. */
function pattern(path: string): RegExp {
  const source = path
    .replace(/\/$/, "")
    .split(/(:\w+|\*)/)
    .map((part) => (part === "*" ? ".*" : part.startsWith(":") ? "[^/]+" : part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")))
    .join("");
  return new RegExp(`^${source}/?$`);
}

type Route = { method: string; path: string };

const ORDER = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/** The methods the handlers (not middleware) of `routes` take on `path`, in one order whatever the routes' order. */
export function allowedMethods(routes: readonly Route[], path: string): string[] {
  const methods = new Set(routes.filter((r) => r.method !== "ALL" && pattern(r.path).test(path)).map((r) => r.method));
  return [...methods].sort((a, b) => ORDER.indexOf(a) - ORDER.indexOf(b));
}

/**
 * What a request no route took is: 405 with `Allow` when routes take its path with other methods, else 404. One
 * answer for every path, the API's, the pages' and the files'.
 */
export function unmatched(routes: readonly Route[], method: string, path: string): ApiError {
  const methods = allowedMethods(routes, path);
  return methods.length > 0 ? methodNotAllowed(methods) : new ApiError("not_found", `No route for ${method} ${path}.`);
}
