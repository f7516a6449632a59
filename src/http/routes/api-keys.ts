import { createRoute } from "@hono/zod-openapi";
import { IdParam, PageQuery, page } from "../../core/schemas";
import { keyBalances } from "../../credits/service";
import { authenticate } from "../../guards/authenticate";
import { KeyChange, KeyView, KeyWithSecret, keyView, NewKey, Rotation } from "../../keys/schemas";
import { createKey, getKey, listKeys, revokeKey, rotateKey, updateKey } from "../../keys/service";
import { pageOf } from "../../platform/db/pagination";
import { KeyUsage, UsageQuery } from "../../usage/schemas";
import { keysUsage } from "../../usage/service";
import { BODY_PROBLEMS, json, jsonBody, KEY_PROBLEMS, KEY_SECURITY, problems, routes, withBody } from "../openapi";

const fullAccess = authenticate("full");
const security = KEY_SECURITY;

/** API keys of the caller's account. Admins manage every key; members only their own. */
export const apiKeysRoutes = routes()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      summary: "Create a key",
      description:
        "The answer carries the raw key, this once. Members create keys only where the account allows it, up to its `maxRateLimit`.",
      security,
      middleware: withBody(fullAccess),
      request: { body: jsonBody(NewKey) },
      responses: {
        201: json(KeyWithSecret, "The new key, with its raw value"),
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "external_id_taken"),
      },
    }),
    async (c) => {
      const p = c.get("principal");
      const sent = Object.keys(await c.req.json<Record<string, unknown>>());
      const { raw, row, now } = await createKey(c.get("deps"), p, c.req.valid("json"), sent);
      c.header("Cache-Control", "no-store");
      return c.json({ ...keyView(row, now), key: raw }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      summary: "List keys, newest first (members: their own)",
      security,
      middleware: fullAccess,
      request: { query: PageQuery },
      responses: { 200: json(page(KeyView), "A page of keys"), ...problems(...KEY_PROBLEMS, "invalid_request") },
    }),
    async (c) => {
      const deps = c.get("deps");
      const { rows, nextCursor } = await listKeys(deps, c.get("principal"), pageOf(c.req.valid("query")));
      const now = deps.now();
      const balances = await keyBalances(deps, rows);
      return c.json({ data: rows.map((k) => keyView(k, now, balances)), nextCursor }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      summary: "Read a key",
      security,
      middleware: fullAccess,
      request: { params: IdParam },
      responses: { 200: json(KeyView, "The key"), ...problems(...KEY_PROBLEMS, "not_found") },
    }),
    async (c) => {
      const deps = c.get("deps");
      const key = await getKey(deps, c.get("principal"), c.req.valid("param").id);
      return c.json(keyView(key, deps.now(), await keyBalances(deps, [key])), 200);
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      summary: "Change a key's externalId, meta or allowedIps",
      description:
        "Members change their own keys (their `allowedIps` within the account's). In force before the answer (verify and the upstream see it on the next request, a narrower list refuses the next request from outside it); 503 `change_pending` when it could not be, and a repeat completes it.",
      security,
      middleware: withBody(fullAccess),
      request: { params: IdParam, body: jsonBody(KeyChange) },
      responses: {
        200: json(KeyView, "The key as stored"),
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "not_found", "external_id_taken", "change_pending"),
      },
    }),
    async (c) => {
      const deps = c.get("deps");
      const { key, now } = await updateKey(deps, c.get("principal"), c.req.valid("param").id, c.req.valid("json"));
      return c.json(keyView(key, now, await keyBalances(deps, [key])), 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/{id}",
      summary: "Revoke a key for good",
      description: "In force before the answer; 503 `change_pending` when it could not be, and a repeat completes it.",
      security,
      middleware: fullAccess,
      request: { params: IdParam },
      responses: {
        200: json(KeyView, "The key, now revoked"),
        ...problems(...KEY_PROBLEMS, "not_found", "last_active_key", "change_pending"),
      },
    }),
    async (c) => {
      const { key, now } = await revokeKey(c.get("deps"), c.get("principal"), c.req.valid("param").id);
      return c.json(keyView(key, now), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/rotate",
      summary: "Replace a key with a new one; the old one works until the grace period ends",
      security,
      middleware: withBody(fullAccess),
      request: { params: IdParam, body: jsonBody(Rotation) },
      responses: {
        201: json(KeyWithSecret, "The new key, with its raw value"),
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "not_found", "key_not_active", "change_pending"),
      },
    }),
    async (c) => {
      const deps = c.get("deps");
      const { raw, row, now } = await rotateKey(deps, c.get("principal"), c.req.valid("param").id, c.req.valid("json"));
      c.header("Cache-Control", "no-store");
      return c.json({ ...keyView(row, now, await keyBalances(deps, [row])), key: raw }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/usage",
      summary: "A key's requests per hour",
      description:
        "Admitted and rate-limited requests per hour in [from, to), and the credits they spent, as the key's own counter has them: exact, and as of now.",
      security,
      middleware: fullAccess,
      request: { params: IdParam, query: UsageQuery },
      responses: {
        200: json(KeyUsage, "The key's hours, without gaps"),
        ...problems(...KEY_PROBLEMS, "invalid_request", "not_found", "rate_limiter_unavailable"),
      },
    }),
    async (c) => {
      const [deps, p] = [c.get("deps"), c.get("principal")];
      const key = await getKey(deps, p, c.req.valid("param").id);
      const { from, to } = c.req.valid("query");
      const series = (await keysUsage(deps, [key.id], { from, to })).get(key.id) ?? [];
      return c.json({ keyId: key.id, from, to, series }, 200);
    },
  );
