import type { z } from "@hono/zod-openapi";
import { app } from "../src/app";

/** What the OpenAPI document promises for one route: its answers by status and media type. */
type Documented = {
  method: string;
  path: string;
  pattern: RegExp;
  /** The security schemes it takes (`[]`: none; an empty entry `{}`: credentials optional). */
  security: Record<string, string[]>[];
  responses: Record<string, { content?: Record<string, { schema?: unknown }> }>;
};

/** Every documented route, from the same registry the document is generated from. */
export const documented: Documented[] = app.openAPIRegistry.definitions.flatMap((d) =>
  d.type === "route"
    ? [
        {
          method: d.route.method.toUpperCase(),
          path: d.route.path,
          pattern: new RegExp(`^${d.route.path.replace(/\{[^/]+\}/g, "[^/]+")}$`),
          security: (d.route.security ?? []) as Record<string, string[]>[],
          responses: d.route.responses as Documented["responses"],
        },
      ]
    : [],
);

/**
 * Throws unless the answer carries the secure headers and is one the contract documents for its route: a listed status, a listed media type, and for
 * JSON a body its schema accepts (problems included, so a code the route's list lacks fails). Paths no documented
 * route matches (unknown paths, other methods) have nothing to check.
 */
export async function checkContract(req: Request, res: Response): Promise<void> {
  const { pathname } = new URL(req.url);
  if (res.headers.get("X-Content-Type-Options") !== "nosniff") throw new Error(`${req.method} ${pathname} answered without nosniff`);
  const route = documented.find((r) => r.method === req.method && r.pattern.test(pathname));
  if (!route) return;
  const where = `${req.method} ${pathname} answered ${res.status}`;
  const answer = route.responses[String(res.status)];
  if (!answer) throw new Error(`${where}, a status its contract does not list`);
  const type = (res.headers.get("Content-Type") ?? "").split(";")[0]?.trim() ?? "";
  // An answer documented with no body (204) must have none.
  if (!answer.content && !type && (await res.clone().text()) === "") return;
  const media = answer.content?.[type];
  if (!media) throw new Error(`${where} as ${type}, a media type its contract does not list`);
  if (!type.endsWith("json")) return;
  const parsed = (media.schema as z.ZodType).safeParse(await res.clone().json());
  if (!parsed.success) throw new Error(`${where} with a body its contract refuses: ${JSON.stringify(parsed.error.issues)}`);
}
