import { createRoute, z } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { secureHeaders } from "hono/secure-headers";
import { gateway } from "../gateway/handler";
import { problem } from "../guards/problem";
import { type Config, misconfiguredVariables } from "../platform/config";
import { makeDeps, newRequestId } from "../platform/deps";
import { ApiError, apiErrorOf } from "../platform/errors";
import { log, safeError } from "../platform/log";
import { dashboardRoutes, documentDashboard } from "./dashboard";
import { REFERENCE_PAGE, REFERENCE_POLICY, RENDERER } from "./docs";
import { completeDocument, json, MAX_BODY_BYTES, problems, routes } from "./openapi";
import { accountRoutes, whoamiRoutes } from "./routes/account";
import { accountsRoutes } from "./routes/accounts";
import { agentsRoutes } from "./routes/agents";
import { apiKeysRoutes } from "./routes/api-keys";
import { asset } from "./routes/assets";
import { authRoutes } from "./routes/auth";
import { chatRoutes } from "./routes/chat";
import {
  accountCreditsRoutes,
  keyCreditsAdjustRoutes,
  keyCreditsRoutes,
  operatorCreditsRoutes,
  poolCreditsAdjustRoutes,
  settleRoutes,
  userCreditsRoutes,
} from "./routes/credits";
import { demoRoutes } from "./routes/demo";
import { handshakeRoutes } from "./routes/handshake";
import { leaksRoutes } from "./routes/leaks";
import { unmatched } from "./routes/method-not-allowed";
import { plansRoutes } from "./routes/plans";
import { resourceOwnersRoutes } from "./routes/resource-owners";
import { usersRoutes } from "./routes/users";
import { verifyRoutes } from "./routes/verify";
import { webhooksRoutes } from "./routes/webhooks";
import { wellKnownRoutes } from "./routes/well-known";

export const app = routes();

const CHAT = "/v1/chat";

app.use(async (c, next) => {
  c.set("requestId", newRequestId());
  await next();
  c.res.headers.set("X-Request-Id", c.get("requestId"));
});

app.use(async (c, next) => {
  const deps = makeDeps(c.env, c.executionCtx, c.get("requestId"), undefined, c.req.header("Keygate-Bookmark"));
  c.set("deps", deps);
  c.set("config", deps.config);
  // Only the exact "true" allows plain http: anything else, a malformed value included (which /health names), keeps
  // Keygate on https, so every route still answers.
  if (c.env.ALLOW_HTTP !== "true" && new URL(c.req.url).protocol !== "https:") {
    throw new ApiError("https_required", "Keygate only answers over HTTPS; send the request to the https:// URL.");
  }
  await next();
});

// Requests the route table forwards leave here; what the upstream answers is its own (no headers added but the request
// id and rate limits). Everything else is Keygate's: every path its routes serve, read once all are mounted.
app.use(gateway(() => ownPaths(app.routes)));

// Keygate's own answers carry their D1 session's bookmark: a later request that sends it back (`Keygate-Bookmark`)
// reads a copy of the database that has caught up with it, so a client sees its own change wherever it is read.
app.use(async (c, next) => {
  await next();
  const bookmark = c.get("deps").bookmark();
  if (bookmark) c.res.headers.set("Keygate-Bookmark", bookmark);
});

// Secure headers on every answer of Keygate's own. No Cross-Origin-Resource-Policy: widgets on other origins read the
// chat endpoints.
app.use(secureHeaders({ crossOriginResourcePolicy: false, xFrameOptions: "DENY" }));

const limitBody = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: () => {
    throw new ApiError("payload_too_large", `Request bodies are limited to ${MAX_BODY_BYTES} bytes.`);
  },
});
/** A GitHub secret scanning alert carries up to 1,000 matches. */
const ALERT_BYTES = 1024 * 1024;
const limitAlert = bodyLimit({
  maxSize: ALERT_BYTES,
  onError: () => {
    throw new ApiError("payload_too_large", `An alert is limited to ${ALERT_BYTES} bytes.`);
  },
});
// A GET or HEAD has no body for Keygate to read (the limiter would rebuild such a request with one and fail).
app.use("/v1/*", (c, next) => {
  if (c.req.method === "GET" || c.req.method === "HEAD") return next();
  return (c.req.path === "/v1/leaks/github" ? limitAlert : limitBody)(c, next);
});

app.openapi(
  createRoute({
    method: "get",
    path: "/health",
    summary: "Whether Keygate answers",
    responses: { 200: json(z.strictObject({ status: z.literal("ok") }).openapi("Health"), "Keygate answers"), ...problems() },
  }),
  (c) => {
    // Answers whatever else is wrong, naming the variables a deployment must fix (never their values).
    const variables = misconfiguredVariables(c.env);
    if (variables.length > 0) {
      throw new ApiError("configuration_error", `Misconfigured: ${variables.join(", ")}.`, { body: { variables } });
    }
    return c.json({ status: "ok" as const }, 200);
  },
);
/** Keygate's resources' prefixes: the gateway forwards no path under one, served or not. */
const resources: string[] = [];
const resource = (prefix: string) => {
  resources.push(prefix);
  return prefix;
};
app.route(resource("/v1/accounts"), accountsRoutes);
app.route("/v1/accounts", operatorCreditsRoutes);
app.route("/v1/accounts", poolCreditsAdjustRoutes);
app.route(resource("/v1/plans"), plansRoutes);
app.route(resource("/v1/account"), accountRoutes);
app.route("/v1/account", accountCreditsRoutes);
app.route(resource("/v1/api-keys"), apiKeysRoutes);
app.route("/v1/api-keys", keyCreditsRoutes);
app.route("/v1/api-keys", keyCreditsAdjustRoutes);
app.route("/v1/credits", settleRoutes);
app.route(resource("/v1/users"), usersRoutes);
app.route("/v1/users", userCreditsRoutes);
app.route(resource("/v1/whoami"), whoamiRoutes);
app.route(resource("/v1/agents"), agentsRoutes);
app.route(resource("/v1/webhooks"), webhooksRoutes);
app.route(resource("/v1/leaks"), leaksRoutes);
app.route(resource("/v1/handshake"), handshakeRoutes);
// Not a resource of Keygate's: a gateway route may take the chat's paths for the provider's own chat; Keygate's echo
// answers where none does.
app.route(CHAT, chatRoutes);
app.route(resource("/demo"), demoRoutes);
app.route(resource("/.well-known"), wellKnownRoutes);
app.route(resource("/v1/keys/verify"), verifyRoutes);
app.route(resource("/v1/resource-owners"), resourceOwnersRoutes);
app.route(resource("/v1/auth"), authRoutes);
// With DASHBOARD_HOST, the dashboard is that host's alone: elsewhere its paths are 404, so no page of the gateway's
// upstream shares its origin (the gateway forwards nothing on that host).
app.use("/dashboard/*", async (c, next) => {
  const host = c.get("config").dashboardHost;
  if (host !== undefined && new URL(c.req.url).host !== host) throw new ApiError("not_found", "There is no dashboard on this host.");
  await next();
});
app.route(resource("/dashboard"), dashboardRoutes);
documentDashboard(app.openAPIRegistry, app.routes);

const DOCUMENT = {
  openapi: "3.1.0",
  info: { title: "Keygate", version: "0.1.0" },
  servers: [{ url: "/", description: "The Keygate that serves this document" }],
};
/** The contract as served: generated from the routes, completed for this deployment's resource types. */
const contract = (config: Config) => completeDocument(app.getOpenAPI31Document(DOCUMENT), config.resourceTypes);

app.openapi(
  createRoute({
    method: "get",
    path: "/openapi.json",
    summary: "This document: the API's contract (OpenAPI 3.1)",
    responses: {
      200: { description: "The OpenAPI document", content: { "application/json": { schema: z.object({}).passthrough() } } },
      ...problems(),
    },
  }),
  (c) => c.json(contract(c.get("config")), 200),
);

app.openapi(
  createRoute({
    method: "get",
    path: "/docs",
    summary: "The reference of this API, rendered from this document by Redoc, all served by this Keygate",
    responses: { 200: { description: "The reference page", content: { "text/html": { schema: z.string() } } }, ...problems() },
  }),
  (c) => {
    c.header("Content-Security-Policy", REFERENCE_POLICY);
    return c.html(REFERENCE_PAGE, 200);
  },
);

app.openapi(
  createRoute({
    method: "get",
    path: RENDERER,
    summary: "The reference page's renderer (Redoc's standalone bundle)",
    responses: { 200: { description: "The script", content: { "text/javascript": { schema: z.string() } } }, ...problems("not_found") },
  }),
  (c) => asset(c, RENDERER),
);

/**
 * Keygate's own paths, which the gateway never forwards, nor any path under one: its resources' prefixes, and the fixed
 * start (`/v1/api-keys` of `/v1/api-keys/:id`) of every route it serves, the chat's excepted. Middleware (method `ALL`)
 * serves nothing.
 */
function ownPaths(mounted: readonly { method: string; path: string }[]): string[] {
  const served = mounted.filter((r) => r.method !== "ALL").map((r) => r.path.split(/\/[:*]/)[0] as string);
  return [...new Set([...resources, ...served])].filter((p) => p !== CHAT && !p.startsWith(`${CHAT}/`));
}

app.notFound((c) => problem(c, unmatched(app.routes, c.req.method, new URL(c.req.url).pathname)));

app.onError((err, c) => {
  const known = apiErrorOf(err);
  if (known) return problem(c, known);
  // Hono's own refusals (a library's validator, say) still answer in Keygate's shape.
  if (err instanceof HTTPException && err.status === 415)
    return problem(c, new ApiError("unsupported_media_type", "Send the body as JSON."));
  if (err instanceof HTTPException && err.status === 400)
    return problem(c, new ApiError("malformed_json", "The request body is not valid JSON."));
  // Never a stack, a request body, a credential or a query's parameters: safeError keeps the class and a masked line.
  log("error", "unexpected_error", { requestId: c.get("requestId"), error: safeError(err) });
  return problem(c, new ApiError("internal_error", "Something went wrong on our side. Quote the request id when you report it."));
});
