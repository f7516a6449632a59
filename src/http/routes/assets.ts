import { ApiError } from "../../platform/errors";

/** A file of public/ (the ASSETS binding), answered with a copy of its headers so the app's middleware can add its own. */
export async function asset(c: { env: { ASSETS: Fetcher }; req: { url: string } }, path: string): Promise<Response> {
  const res = await c.env.ASSETS.fetch(new URL(path, c.req.url));
  if (!res.ok) throw new ApiError("not_found", "No such file.");
  return new Response(res.body, res);
}
