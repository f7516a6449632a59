import type { Context } from "hono";
import type { JSX } from "hono/jsx/jsx-runtime";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { problem as renderProblem } from "../../guards/problem";
import { ApiError } from "../../platform/errors";

/** How a page answers: a status, or the problem it shows. */
export type Answer = ContentfulStatusCode | ApiError;

/** Whether the client asked for HTML (a browser does); any other client (a script, curl) gets problem+json. */
const wantsHtml = (c: Context) => (c.req.header("Accept") ?? "").includes("text/html");

/**
 * A whole page: the doctype, then the rendered JSX. A page showing a problem is that problem's status and headers, and
 * to a client that does not ask for HTML it is the API's problem+json instead.
 */
export async function render(c: Context, page: JSX.Element, answer: Answer = 200): Promise<Response> {
  if (!(answer instanceof ApiError)) return c.html(`<!DOCTYPE html>${await page}`, answer);
  if (!wantsHtml(c)) return renderProblem(c, answer);
  for (const [name, value] of Object.entries(answer.extra.headers ?? {})) c.header(name, value);
  return c.html(`<!DOCTYPE html>${await page}`, answer.status);
}
