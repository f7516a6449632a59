const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * Why a string is not an origin an agent may allow, or null when it is one: exactly `scheme://host[:port]` as a browser
 * sends it in `Origin` (lowercase, no default port, no path, no trailing dot), https, or http on a loopback host.
 */
export function originProblem(value: string): string | null {
  if (value.includes("*")) return "wildcards are not allowed; list each origin";
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return "is not an origin such as https://app.example.com";
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && LOOPBACK.has(url.hostname))) {
    return "must use https (http only for localhost)";
  }
  if (url.origin !== value) return `must be exactly scheme://host[:port], as browsers send it (here: ${url.origin})`;
  if (url.hostname.endsWith(".")) return "must not end with a dot";
  return null;
}
