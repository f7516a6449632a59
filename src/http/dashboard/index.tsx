import { type OpenAPIHono, z } from "@hono/zod-openapi";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { SESSION_COOKIE } from "../../people/sessions";
import { ApiError, apiErrorOf, ERRORS, type ErrorCode } from "../../platform/errors";
import { log, safeError } from "../../platform/log";
import { EVENT_TYPES } from "../../webhooks/schemas";
import { MAX_BODY_BYTES, problems } from "../openapi";
import { asset } from "../routes/assets";
import { allowedMethods, methodNotAllowed } from "../routes/method-not-allowed";
import { activityPages } from "./activity";
import { agentPages } from "./agents";
import { authPages } from "./auth";
import { keyPages } from "./keys";
import { Layout, POLICY, ProblemBox } from "./layout";
import { render } from "./render";
import { type DashEnv, sameOrigin } from "./session";
import { usagePages } from "./usage";
import { userPages } from "./users";
import { webhookPages } from "./webhooks";

/** The static files the pages load, from public/dashboard through the ASSETS binding. */
const FILES = ["dashboard.css", "dashboard.js"];

/**
 * The dashboard: server-rendered pages over the same services and rights as the API, signed in with a cookie session.
 * Every page gets the strict policy and `no-store` (a page may show a secret once); every form post must come from this
 * origin (see `sameOrigin`).
 */
export const dashboardRoutes: Hono<DashEnv> = new Hono<DashEnv>()
  .use(async (c, next) => {
    await next();
    if (FILES.some((f) => c.req.path === `/dashboard/${f}`)) return;
    c.res.headers.set("Content-Security-Policy", POLICY);
    c.res.headers.set("Cache-Control", "no-store");
  })
  .use(async (c, next) => {
    // A method the page does not take is 405, decided before the session is read. The router's paths are relative.
    const allowed = allowedMethods(dashboardRoutes.routes, c.req.path.slice("/dashboard".length) || "/");
    const method = c.req.method === "HEAD" ? "GET" : c.req.method;
    if (allowed.length > 0 && !allowed.includes(method)) throw methodNotAllowed(allowed);
    await next();
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
  .get("/dashboard.css", (c) => asset(c, "/dashboard/dashboard.css"))
  .get("/dashboard.js", (c) => asset(c, "/dashboard/dashboard.js"))
  .route("/", authPages)
  .route("/keys", keyPages)
  .route("/usage", usagePages)
  .route("/users", userPages)
  .route("/agents", agentPages)
  .route("/webhooks", webhookPages)
  .route("/activity", activityPages)
  .all("*", () => {
    throw new ApiError("not_found", "There is no such page in the dashboard.");
  })
  .onError(async (err, c) => {
    const known = apiErrorOf(err);
    if (!known) log("error", "unexpected_error", { requestId: c.get("requestId"), error: safeError(err) });
    const problem =
      known ?? new ApiError("internal_error", `Something went wrong on our side. Quote ${c.get("requestId")} when you report it.`);
    const principal = c.get("principal");
    return render(
      c,
      <Layout title={ERRORS[problem.code][1]} who={principal && { principal, email: c.get("email") }}>
        <ProblemBox problem={problem} />
        <p>
          <a href={principal ? "/dashboard/keys" : "/dashboard/login"}>Back to the dashboard</a>
        </p>
      </Layout>,
      problem,
    );
  });

const HTML = { "text/html": { schema: z.string() } };
const FILE_TYPES: Record<string, Record<string, { schema: z.ZodString }>> = {
  css: { "text/css": { schema: z.string() } },
  js: { "text/javascript": { schema: z.string() }, "application/javascript": { schema: z.string() } },
};

const text = (description: string) => ({ type: "string", description });
const AGENT_FORM = {
  name: text("The agent's name"),
  allowedOrigins: text("The origins its widget runs on, one per line"),
  tokenTtlSeconds: text("Lifetime of its handshake tokens, in seconds"),
};
/**
 * The fields of each form (`application/x-www-form-urlencoded`, every value text) and those it needs; what each means
 * and which values it takes are those of the API operation it stands for.
 */
const FORMS: Record<string, { fields: Record<string, object>; required?: string[]; ids?: boolean }> = {
  "/dashboard/login": {
    fields: {
      email: text("As for POST /v1/auth/login"),
      password: text("As for POST /v1/auth/login"),
      accountId: text("Needed only when the email belongs to users of several accounts"),
    },
    required: ["email", "password"],
  },
  "/dashboard/logout": { fields: {} },
  "/dashboard/accept-invitation": {
    fields: {
      token: text("The invitation's token"),
      password: text("The new password: 12 to 256 characters"),
      confirm: text("The same password again"),
    },
    required: ["token", "password", "confirm"],
  },
  "/dashboard/keys": {
    fields: {
      name: text("As for POST /v1/api-keys"),
      access: { type: "string", enum: ["full", "resources"], description: "Full access, or only the resources listed in `<type>Ids`" },
      expiresAt: text("A local date and time (`datetime-local`), empty for none"),
      limit: text("The key's own limit: requests per window, with windowSeconds"),
      windowSeconds: text("The key's own limit: the window, in seconds"),
    },
    required: ["name"],
    ids: true,
  },
  "/dashboard/keys/{id}/revoke": { fields: {} },
  "/dashboard/keys/{id}/credits": {
    fields: {
      operation: { type: "string", enum: ["add", "subtract", "set"], description: "As for POST /v1/api-keys/{id}/credits" },
      amount: text("As for POST /v1/api-keys/{id}/credits: an integer"),
      reason: text("As for POST /v1/api-keys/{id}/credits; empty for none"),
      idempotencyKey: text("The form's own Idempotency-Key: the same form sent twice applies the change once"),
    },
    required: ["operation", "amount"],
  },
  "/dashboard/keys/{id}/rotate": { fields: { gracePeriodSeconds: text("How long the old key keeps working, in seconds") } },
  "/dashboard/users": {
    fields: { email: text("As for POST /v1/users"), role: { type: "string", enum: ["admin", "member"] } },
    required: ["email", "role"],
  },
  "/dashboard/users/{id}": {
    fields: { role: { type: "string", enum: ["admin", "member"] }, grants: text("Grants, separated by commas") },
  },
  "/dashboard/users/{id}/disable": { fields: {} },
  "/dashboard/users/{id}/enable": { fields: {} },
  "/dashboard/users/{id}/invitation": { fields: {} },
  "/dashboard/agents": { fields: AGENT_FORM, required: ["name", "allowedOrigins"] },
  "/dashboard/agents/{id}": { fields: AGENT_FORM },
  "/dashboard/agents/{id}/disable": { fields: {} },
  "/dashboard/agents/{id}/enable": { fields: {} },
  "/dashboard/webhooks": {
    fields: {
      url: text("As for POST /v1/webhooks"),
      events: {
        type: "array",
        items: { type: "string", enum: [...EVENT_TYPES, "*"] },
        description: "One field per checked event type (`*`: all of them), as for POST /v1/webhooks",
      },
      description: text("As for POST /v1/webhooks; empty for none"),
      ed25519: { type: "string", enum: ["on"], description: "Present: also sign with Keygate's Ed25519 key" },
    },
    required: ["url", "events"],
  },
  "/dashboard/webhooks/{id}/test": { fields: {} },
  "/dashboard/webhooks/{id}/secret": { fields: {} },
  "/dashboard/webhooks/{id}/disable": { fields: {} },
  "/dashboard/webhooks/{id}/enable": { fields: {} },
  "/dashboard/webhooks/{id}/delete": { fields: {} },
  "/dashboard/webhooks/{id}/deliveries/{deliveryId}/retry": { fields: {} },
};

/** Pages open to anyone: the files, logging in and setting a password. */
const PUBLIC = ["/dashboard/login", "/dashboard/accept-invitation", "/dashboard/dashboard.css", "/dashboard/dashboard.js"];

/**
 * The dashboard in the OpenAPI document, derived from its router (`routes`: the app's routes under /dashboard), so no
 * page can be left out: each page and form answers HTML, a form answers 303 to the page that follows it, and a problem
 * comes as an HTML page to a browser and as problem+json to any other client (see onError above).
 */
export function documentDashboard(registry: OpenAPIHono["openAPIRegistry"], routes: readonly { method: string; path: string }[]): void {
  const problemPages = Object.fromEntries(
    Object.entries(problems(...(Object.keys(ERRORS) as ErrorCode[]))).map(([status, r]) => [
      status,
      { ...r, content: { ...r.content, ...HTML } },
    ]),
  );
  registry.registerComponent("securitySchemes", "DashboardCookie", {
    type: "apiKey",
    in: "cookie",
    name: SESSION_COOKIE,
    description: "The dashboard's session, set by `POST /dashboard/login`; every form post must come from Keygate's own origin.",
  });
  for (const { method, path } of routes) {
    if (method === "ALL" || !path.startsWith("/dashboard")) continue;
    const names = [...path.matchAll(/:(\w+)/g)].map((m) => m[1] as string);
    const file = FILE_TYPES[path.split(".").pop() ?? ""];
    const documented = path.replace(/\/$/, "").replace(/:(\w+)/g, "{$1}") || "/dashboard";
    const form = method === "POST" ? FORMS[documented] : undefined;
    if (method === "POST" && !form) throw new Error(`The form ${documented} has no documented fields`);
    registry.registerPath({
      method: method.toLowerCase() as "get" | "post",
      path: documented,
      security: PUBLIC.includes(documented) || documented === "/dashboard/logout" ? [] : [{ DashboardCookie: [] }],
      summary: file ? "A file of the dashboard" : "A page of the dashboard, for people signed in with its session cookie",
      tags: ["Dashboard"],
      request: {
        ...(names.length
          ? { params: z.object(Object.fromEntries(names.map((n) => [n, z.string().openapi({ param: { name: n, in: "path" } })]))) }
          : {}),
        ...(form
          ? {
              body: {
                required: true,
                content: {
                  "application/x-www-form-urlencoded": {
                    schema: {
                      type: "object",
                      properties: form.fields,
                      ...(form.required ? { required: form.required } : {}),
                      // A new key's `<type>Ids` (ids separated by commas), one field per configured resource type.
                      ...(form.ids ? { patternProperties: { "^[a-z][a-z0-9]*Ids$": { type: "string" } } } : {}),
                      additionalProperties: false,
                    },
                  },
                },
              },
            }
          : {}),
      },
      responses: file
        ? { 200: { description: "The file", content: file }, ...problemPages }
        : {
            200: { description: "The page", content: HTML },
            201: { description: "The page, showing what was created (a secret shown once)", content: HTML },
            303: { description: "Where the browser goes next", headers: { Location: { schema: { type: "string" } } } },
            ...problemPages,
          },
    });
  }
}
