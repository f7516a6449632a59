import { z } from "@hono/zod-openapi";
import { RESOURCE_TYPE } from "./grants";
import { jsonText } from "./schemas";
import { LIMIT_NAME } from "./window";

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;
const LITERAL = /^[A-Za-z0-9._~-]+$/;
const PARAM = /^:([A-Za-z_][A-Za-z0-9_]*)$/;

/** What is wrong with a pattern: `/` then segments, each a literal, a `:param` (each name once), or a last `*`. */
function patternProblem(pattern: string): string | null {
  if (pattern === "/") return null;
  if (!pattern.startsWith("/")) return "must start with /";
  const segments = pattern.slice(1).split("/");
  const names = new Set<string>();
  for (const [i, segment] of segments.entries()) {
    if (segment === "*" && i === segments.length - 1) continue;
    const name = PARAM.exec(segment)?.[1];
    if (name !== undefined) {
      if (names.has(name)) return `names :${name} twice`;
      names.add(name);
    } else if (!LITERAL.test(segment)) {
      return `has a segment (${JSON.stringify(segment)}) that is not letters, digits and ._~-, a :param, or a last *`;
    }
  }
  return null;
}

/**
 * One gateway route (GATEWAY_ROUTES). `pattern` is a Hono-style path: `:name` matches one segment, a trailing `*`
 * the rest. `auth` is `key` (default), `key-or-token` (handshake tokens too) or `public`; `access: "full"` needs a
 * full-access key; `resource` names the path parameter whose value must be one of the key's grants; `account` names
 * the path parameter that must be the caller's own account (id or slug); `cost` is what a request spends of each of
 * the key's limits, unless `limits` (`{"day": 1}`) names the only limits it spends and what of each (a name the key
 * has no limit of is ignored; a handshake token's limit is spent at `cost`). `credits` is what a request spends of the
 * key's balance and its account's pool (default 0), or `{reserve, settle: true}`: `reserve` is held and the upstream
 * says what the request cost (`Keygate-Credits-Used`, or later through POST /v1/credits/settle). A forwarded request
 * gets its credits back when the upstream answers a status in `refundOn` (default: every 5xx, and the gateway's 504).
 * `forwardAuthorization: true` lets a public route pass the client's Authorization and X-API-Key on (the provider's
 * own credentials; never one of Keygate's secrets).
 */
const Route = z
  .strictObject({
    pattern: z.string().superRefine((p, ctx) => {
      const problem = patternProblem(p);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    }),
    methods: z.array(z.enum(METHODS)).min(1).optional(),
    auth: z.enum(["key", "key-or-token", "public"]).default("key"),
    access: z.literal("full").optional(),
    resource: z.strictObject({ type: z.string().regex(RESOURCE_TYPE), param: z.string() }).optional(),
    account: z.string().optional(),
    cost: z.number().int().min(1).max(1000).default(1),
    limits: z
      .record(z.string().regex(LIMIT_NAME, "must be a limit's name"), z.number().int().min(1).max(1000))
      .refine((m) => Object.keys(m).length > 0, "names no limit")
      .optional(),
    credits: z
      .union([
        z.number().int().min(0).max(1_000_000),
        z.strictObject({ reserve: z.number().int().min(1).max(1_000_000), settle: z.literal(true) }),
      ])
      .default(0),
    refundOn: z.array(z.number().int().min(100).max(599)).max(100).optional(),
    forwardAuthorization: z.boolean().default(false),
  })
  .superRefine((route, ctx) => {
    const params = route.pattern.split("/").flatMap((s) => PARAM.exec(s)?.[1] ?? []);
    for (const [field, name] of [
      ["resource", route.resource?.param],
      ["account", route.account],
    ] as const) {
      if (name !== undefined && !params.includes(name))
        ctx.addIssue({ code: "custom", path: [field], message: `names :${name}, which the pattern does not have` });
    }
    if (route.auth === "public" && (route.resource || route.account || route.access))
      ctx.addIssue({ code: "custom", path: ["auth"], message: "public routes take no credential, so no resource, account or access" });
    if (route.auth === "public" && (route.credits !== 0 || route.refundOn))
      ctx.addIssue({ code: "custom", path: ["credits"], message: "public routes have no balance to spend" });
    if (route.auth !== "public" && route.forwardAuthorization)
      ctx.addIssue({ code: "custom", path: ["forwardAuthorization"], message: "only public routes pass Authorization on" });
  });

export type GatewayRoute = z.output<typeof Route>;

/** GATEWAY_ROUTES: a JSON list of routes, first match wins. */
export const RouteTable = jsonText(z.array(Route).max(500), "[]").transform((routes) => new Table(routes));

/**
 * The path as the gateway matches and forwards it, or null when an upstream could read it otherwise than the gateway
 * does: an empty segment (`//`), an encoded `/`, `\`, `.` or `%` (which a second decoding would read again), a `;`, a
 * malformed escape, bytes that are not UTF-8, a control character or a blank at a segment's end (cut or trimmed by
 * some servers), or text that Unicode NFKC normalisation or case mapping would change
 * into other text (`ſ` to `s`, `ｒ` to `r`, `‥` to `..`, `ı` upper-cased to `I`). Encoded unreserved characters are
 * decoded (`%72uns` is `runs`), so every spelling of a path meets the same route.
 */
export function canonicalPath(raw: string): string | null {
  const segments = raw.slice(1).split("/");
  const out: string[] = [];
  for (const [i, segment] of segments.entries()) {
    // Empty: only the whole path `/` or a trailing slash.
    if (segment === "" && i < segments.length - 1) return null;
    if (/[;\\]/.test(segment)) return null;
    let s = "";
    for (let j = 0; j < segment.length; j++) {
      if (segment[j] !== "%") {
        s += segment[j];
        continue;
      }
      const hex = segment.slice(j + 1, j + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null;
      const char = String.fromCharCode(Number.parseInt(hex, 16));
      if (/[./\\;%]/.test(char)) return null;
      s += /[A-Za-z0-9_~-]/.test(char) ? char : `%${hex.toUpperCase()}`;
      j += 2;
    }
    if (s === "." || s === "..") return null;
    // Bytes that are not UTF-8 are read differently by every upstream (dropped, replaced, cut at): never forwarded.
    let text: string;
    try {
      text = decodeURIComponent(s);
    } catch {
      return null;
    }
    if (!isStable(text) || !isWhole(text)) return null;
    out.push(s);
  }
  return `/${out.join("/")}`;
}

/** Text no upstream reads as other text: NFKC leaves it as it is, and no character outside ASCII maps into ASCII by case. */
function isStable(text: string): boolean {
  if (text.normalize("NFKC") !== text) return false;
  const ascii = (c: string) => (c.codePointAt(0) as number) < 0x80;
  return [...text].every((char) => ascii(char) || ![...(char.toLowerCase() + char.toUpperCase())].some(ascii));
}

/**
 * Text no upstream cuts or trims: no control character (a server that keeps the path as a C string ends it at `%00`)
 * and no blank at either end (Spring's path matcher trimmed segments: `runs%20` was `runs`).
 */
function isWhole(text: string): boolean {
  return [...text].every((char) => char >= " " && char !== "\u007f") && text.trim() === text;
}

type Compiled = { route: GatewayRoute; segments: string[]; rest: boolean };

/**
 * The route table. Matching is Keygate's own, segment by segment, rather than a router library's: a router that reads
 * patterns as regular expressions or matches case-sensitively would let a stray `|` or a path spelt `RUNS` reach past
 * a stricter route to an upstream that reads it otherwise. Literals match without regard to case and a trailing slash
 * is ignored, so every spelling an upstream may treat alike meets the same route.
 */
export class Table {
  private readonly compiled: Compiled[];

  constructor(readonly routes: GatewayRoute[]) {
    this.compiled = routes.map((route) => {
      const segments = route.pattern === "/" ? [] : route.pattern.slice(1).split("/");
      const rest = segments[segments.length - 1] === "*";
      return { route, segments: rest ? segments.slice(0, -1) : segments, rest };
    });
  }

  /**
   * The first route that takes this method and canonical path, with its parameters (decoded), or null. Null too when
   * the last segment has an extension and, without it, meets another route (unless the route names the extension):
   * Rails (`.:format`) and Spring's suffix patterns route `runs.json` as `runs`, so either route could be the one the
   * upstream runs.
   */
  match(method: string, path: string): { route: GatewayRoute; params: Record<string, string> } | null {
    const parts = path === "/" ? [] : path.replace(/\/$/, "").slice(1).split("/");
    const found = this.first(method, parts);
    const last = parts.at(-1) ?? "";
    const dot = last.indexOf(".");
    if (dot <= 0 || (found && namesLast(found.route, last))) return found;
    const bare = this.first(method, [...parts.slice(0, -1), last.slice(0, dot)]);
    return bare && bare.route !== found?.route ? null : found;
  }

  private first(method: string, parts: string[]): { route: GatewayRoute; params: Record<string, string> } | null {
    for (const { route, segments, rest } of this.compiled) {
      // A browser's preflight for a route that takes tokens belongs to that route, whatever methods it lists.
      const preflight = method === "OPTIONS" && route.auth === "key-or-token";
      if (route.methods && !preflight && !route.methods.includes(method as (typeof METHODS)[number])) continue;
      if (rest ? parts.length < segments.length : parts.length !== segments.length) continue;
      const params = bind(segments, parts);
      if (params) return { route, params };
    }
    return null;
  }
}

/** Whether the route's pattern ends in this literal segment (any case): it names the extension itself. */
function namesLast(route: GatewayRoute, last: string): boolean {
  return route.pattern.split("/").at(-1)?.toLowerCase() === last.toLowerCase();
}

function bind(segments: string[], parts: string[]): Record<string, string> | null {
  const params: Record<string, string> = {};
  for (const [i, segment] of segments.entries()) {
    const part = parts[i] as string;
    const name = PARAM.exec(segment)?.[1];
    if (name === undefined) {
      if (segment.toLowerCase() !== part.toLowerCase()) return null;
      continue;
    }
    if (part === "") return null;
    // A canonical path always decodes.
    params[name] = decodeURIComponent(part);
  }
  return params;
}
