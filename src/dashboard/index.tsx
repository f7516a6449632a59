import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ApiError, ERRORS, problem as renderProblem } from "../errors";
import { log, safeError } from "../log";
import { MAX_BODY_BYTES } from "../openapi";
import { activityPages } from "./activity";
import { agentPages } from "./agents";
import { authPages } from "./auth";
import { keyPages } from "./keys";
import { Layout, POLICY, ProblemBox } from "./layout";
import { render } from "./render";
import { type DashEnv, sameOrigin } from "./session";
import { usagePages } from "./usage";
import { userPages } from "./users";

/** The static files the pages load, from public/dashboard through the ASSETS binding. */
const FILES = ["dashboard.css", "dashboard.js"];

async function asset(c: Context<DashEnv>, file: string): Promise<Response> {
  const res = await c.env.ASSETS.fetch(new URL(`/dashboard/${file}`, c.req.url));
  if (!res.ok) throw new ApiError("not_found", "No such file.");
  // A copy, so the app's middleware can add its headers.
  return new Response(res.body, res);
}

/**
 * The dashboard: server-rendered pages over the same services and rights as the API, signed in with a cookie session.
 * Every page gets the strict policy and `no-store` (a page may show a secret once); every form post must come from this
 * origin (see `sameOrigin`).
 */
export const dashboardRoutes = new Hono<DashEnv>()
  .use(async (c, next) => {
    await next();
    if (FILES.some((f) => c.req.path === `/dashboard/${f}`)) return;
    c.res.headers.set("Content-Security-Policy", POLICY);
    c.res.headers.set("Cache-Control", "no-store");
  })
  .use(sameOrigin)
  .use(
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: () => {
        throw new ApiError("payload_too_large", `Forms are limited to ${MAX_BODY_BYTES} bytes.`);
      },
    }),
  )
  .get("/", (c) => c.redirect("/dashboard/keys", 303))
  .get("/dashboard.css", (c) => asset(c, "dashboard.css"))
  .get("/dashboard.js", (c) => asset(c, "dashboard.js"))
  .route("/", authPages)
  .route("/keys", keyPages)
  .route("/usage", usagePages)
  .route("/users", userPages)
  .route("/agents", agentPages)
  .route("/activity", activityPages)
  .all("*", () => {
    throw new ApiError("not_found", "There is no such page in the dashboard.");
  })
  .onError(async (err, c) => {
    const known = err instanceof ApiError ? err : err.cause instanceof ApiError ? err.cause : null;
    if (!known) log("error", "unexpected_error", { requestId: c.get("requestId"), error: safeError(err) });
    const problem =
      known ?? new ApiError("internal_error", `Something went wrong on our side. Quote ${c.get("requestId")} when you report it.`);
    // A browser asks for HTML; any other client (a script, curl) gets the API's problem+json.
    if (!(c.req.header("Accept") ?? "").includes("text/html")) return renderProblem(c, problem);
    for (const [name, value] of Object.entries(problem.extra.headers ?? {})) c.header(name, value);
    const principal = c.get("principal");
    return render(
      c,
      <Layout title={ERRORS[problem.code][1]} who={principal && { principal, email: c.get("email") }}>
        <ProblemBox problem={problem} />
        <p>
          <a href={principal ? "/dashboard/keys" : "/dashboard/login"}>Back to the dashboard</a>
        </p>
      </Layout>,
      problem.status,
    );
  });
