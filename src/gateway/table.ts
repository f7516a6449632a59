import { z } from "@hono/zod-openapi";
import { PatternRouter } from "hono/router/pattern-router";

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;
const PARAM = /^:([A-Za-z_][A-Za-z0-9_]*)$/;

/**
 * One gateway route (GATEWAY_ROUTES). `pattern` is a Hono-style path: `:name` matches one segment, a trailing `*`
 * the rest. `auth` is `key` (default), `key-or-token` (handshake tokens too) or `public`; `access: "full"` needs a
 * full-access key; `resource` names the path parameter whose value must be one of the key's grants; `account` names
 * the path parameter that must be the caller's own account (id or slug); `cost` is what a request spends.
 */
const Route = z
  .strictObject({
    pattern: z
      .string()
      .regex(/^\/[^?#\s]*$/, "must be a path starting with /")
      .refine((p) => !p.slice(0, -1).includes("*"), "may hold * only at its end"),
    methods: z.array(z.enum(METHODS)).min(1).optional(),
    auth: z.enum(["key", "key-or-token", "public"]).default("key"),
    access: z.literal("full").optional(),
    resource: z.strictObject({ type: z.string().regex(/^[a-z][a-z0-9]{0,31}$/), param: z.string() }).optional(),
    account: z.string().optional(),
    cost: z.number().int().min(1).max(1000).default(1),
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
  });

export type GatewayRoute = z.output<typeof Route>;

/** GATEWAY_ROUTES: a JSON list of routes, first match wins. */
export const RouteTable = z
  .string()
  .default("[]")
  .transform((v, ctx) => {
    try {
      return JSON.parse(v) as unknown;
    } catch {
      ctx.addIssue({ code: "custom", message: "is not JSON" });
      return z.NEVER;
    }
  })
  .pipe(z.array(Route).max(500))
  .transform((routes) => new Table(routes));

/** The route table, matched with Hono's pattern router (no hand-written path matching). */
export class Table {
  private readonly router = new PatternRouter<number>();

  constructor(readonly routes: GatewayRoute[]) {
    routes.forEach((route, i) => {
      for (const method of route.methods ?? ["ALL"]) this.router.add(method, route.pattern, i);
    });
  }

  /** The first route that takes this method and path, with its parameters (decoded), or null. */
  match(method: string, path: string): { route: GatewayRoute; params: Record<string, string> } | null {
    const [matches] = this.router.match(method, path);
    let best: [number, Record<string, string>] | null = null;
    for (const [i, params] of matches) if (best === null || i < best[0]) best = [i, params as Record<string, string>];
    if (best === null) return null;
    const params: Record<string, string> = {};
    for (const [name, value] of Object.entries(best[1])) {
      try {
        params[name] = decodeURIComponent(value);
      } catch {
        return null;
      }
    }
    return { route: this.routes[best[0]] as GatewayRoute, params };
  }
}
