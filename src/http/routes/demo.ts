import { createRoute, z } from "@hono/zod-openapi";
import { ApiError } from "../../platform/errors";
import { problems, routes } from "../openapi";
import { asset } from "./assets";

/**
 * GET /demo/widget?agent=agt_...: a minimal chat widget page, served from the static assets (public/demo). Its script
 * talks to the Keygate that served it; `?api=` may name another Keygate, and the Content-Security-Policy lets the page
 * reach only its own origin and those the operator listed in DEMO_API_ORIGINS.
 */
export const demoRoutes = routes()
  .openapi(
    createRoute({
      method: "get",
      path: "/widget",
      summary: "A minimal chat widget page (handshake, send, streamed reply, renewal)",
      request: {
        query: z.object({
          agent: z
            .string()
            .optional()
            .openapi({ param: { name: "agent", in: "query" }, example: "agt_5f0c9a1e2b7d43a8c6e1f0b2" }),
          api: z
            .string()
            .optional()
            .openapi({ param: { name: "api", in: "query" }, description: "Another Keygate, if listed in DEMO_API_ORIGINS" }),
        }),
      },
      responses: { 200: { description: "The page", content: { "text/html": { schema: z.string() } } }, ...problems() },
    }),
    async (c) => {
      const res = await asset(c, "/demo/widget");
      res.headers.set("Content-Security-Policy", pagePolicy(c.get("config").demoApiOrigins));
      return res;
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{file}",
      summary: "The widget page's script and stylesheet",
      request: { params: z.object({ file: z.string().openapi({ example: "widget.js", description: "`widget.js` or `widget.css`" }) }) },
      responses: {
        200: { description: "The file", content: { "text/javascript": { schema: z.string() }, "text/css": { schema: z.string() } } },
        ...problems("not_found"),
      },
    }),
    (c) => {
      const { file } = c.req.valid("param");
      if (!FILES.includes(file)) throw new ApiError("not_found", "No such file.");
      return asset(c, `/demo/${file}`);
    },
  );

/** The files of public/demo the page loads; the page itself is only served at /demo/widget, with its policy. */
const FILES = ["widget.js", "widget.css"];

/** No inline script or style, no other host than this Keygate and the listed ones, no framing, no form posts. */
function pagePolicy(others: readonly string[]): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    `connect-src 'self' ${others.join(" ")}`.trim(),
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}
