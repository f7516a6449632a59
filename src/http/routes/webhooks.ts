import { createRoute, z } from "@hono/zod-openapi";
import { IdParam, PageQuery, page } from "../../core/schemas";
import { authenticate } from "../../guards/authenticate";
import { pageOf } from "../../platform/db/pagination";
import {
  DeliveryIdParam,
  DeliveryView,
  deliveryView,
  NewWebhook,
  WebhookChange,
  WebhookView,
  WebhookWithSecret,
  webhookView,
} from "../../webhooks/schemas";
import {
  createWebhook,
  deleteWebhook,
  getWebhook,
  listDeliveries,
  listWebhooks,
  retryDelivery,
  rotateSecret,
  testWebhook,
  updateWebhook,
} from "../../webhooks/service";
import { BODY_PROBLEMS, json, jsonBody, KEY_PROBLEMS, KEY_SECURITY, problems, routes, withBody } from "../openapi";

const admin = authenticate("admin");
const SECRET_SHOWN = "The answer shows the endpoint's secret, this once.";

/** The account's webhook endpoints and their deliveries; admins only. */
export const webhooksRoutes = routes()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      summary: "Add a webhook endpoint",
      description: `${SECRET_SHOWN} Deliveries are signed as the Standard Webhooks specification says (README, Events).`,
      security: KEY_SECURITY,
      middleware: withBody(admin),
      request: { body: jsonBody(NewWebhook) },
      responses: { 201: json(WebhookWithSecret, "The endpoint and its secret"), ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS) },
    }),
    async (c) => {
      const webhook = await createWebhook(c.get("deps"), c.get("principal"), c.req.valid("json"), new URL(c.req.url).origin);
      c.header("Cache-Control", "no-store");
      return c.json({ ...webhookView(webhook), secret: webhook.secret }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      summary: "List webhook endpoints, newest first",
      security: KEY_SECURITY,
      middleware: admin,
      request: { query: PageQuery },
      responses: { 200: json(page(WebhookView), "A page of endpoints"), ...problems(...KEY_PROBLEMS, "invalid_request") },
    }),
    async (c) => {
      const { rows, nextCursor } = await listWebhooks(c.get("deps"), c.get("principal"), pageOf(c.req.valid("query")));
      return c.json({ data: rows.map(webhookView), nextCursor }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      summary: "Read a webhook endpoint",
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: IdParam },
      responses: { 200: json(WebhookView, "The endpoint"), ...problems(...KEY_PROBLEMS, "not_found") },
    }),
    async (c) => c.json(webhookView(await getWebhook(c.get("deps"), c.get("principal"), c.req.valid("param").id)), 200),
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      summary: "Change a webhook endpoint, or disable or enable it",
      security: KEY_SECURITY,
      middleware: withBody(admin),
      request: { params: IdParam, body: jsonBody(WebhookChange) },
      responses: { 200: json(WebhookView, "The endpoint as stored"), ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "not_found") },
    }),
    async (c) => {
      const [deps, p] = [c.get("deps"), c.get("principal")];
      const webhook = await updateWebhook(deps, p, c.req.valid("param").id, c.req.valid("json"), new URL(c.req.url).origin);
      return c.json(webhookView(webhook), 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete",
      path: "/{id}",
      summary: "Delete a webhook endpoint",
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: IdParam },
      responses: { 204: { description: "Deleted: nothing more is sent to it" }, ...problems(...KEY_PROBLEMS, "not_found") },
    }),
    async (c) => {
      await deleteWebhook(c.get("deps"), c.get("principal"), c.req.valid("param").id);
      return c.body(null, 204);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/secret",
      summary: "Rotate a webhook endpoint's secret",
      description: `${SECRET_SHOWN} For 24 hours the old secret signs beside the new one: each delivery carries both signatures.`,
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: IdParam },
      responses: {
        200: json(WebhookWithSecret, "The endpoint and its new secret"),
        ...problems(...KEY_PROBLEMS, "not_found", "invalid_request"),
      },
    }),
    async (c) => {
      const webhook = await rotateSecret(c.get("deps"), c.get("principal"), c.req.valid("param").id);
      c.header("Cache-Control", "no-store");
      return c.json({ ...webhookView(webhook), secret: webhook.secret }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/test",
      summary: "Send a webhook.test event to an endpoint",
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: IdParam },
      responses: {
        202: json(z.strictObject({ eventId: z.string() }).openapi("WebhookTest"), "Queued: GET …/deliveries shows it"),
        ...problems(...KEY_PROBLEMS, "not_found"),
      },
    }),
    async (c) => c.json(await testWebhook(c.get("deps"), c.get("principal"), c.req.valid("param").id), 202),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/deliveries",
      summary: "An endpoint's deliveries, newest first, with every attempt",
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: IdParam, query: PageQuery },
      responses: { 200: json(page(DeliveryView), "A page of deliveries"), ...problems(...KEY_PROBLEMS, "invalid_request", "not_found") },
    }),
    async (c) => {
      const found = await listDeliveries(c.get("deps"), c.get("principal"), c.req.valid("param").id, pageOf(c.req.valid("query")));
      return c.json({ data: found.data.map((d) => deliveryView(d, found.attempts(d.id))), nextCursor: found.nextCursor }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/deliveries/{deliveryId}/retry",
      summary: "Send a delivery again now",
      description: "A new attempt of the same event (the same `webhook-id`), whatever became of the delivery.",
      security: KEY_SECURITY,
      middleware: admin,
      request: { params: DeliveryIdParam },
      responses: {
        202: json(z.strictObject({ id: z.string(), status: z.literal("pending") }).openapi("WebhookRetry"), "Queued"),
        ...problems(...KEY_PROBLEMS, "not_found"),
      },
    }),
    async (c) => {
      const { id, deliveryId } = c.req.valid("param");
      const delivery = await retryDelivery(c.get("deps"), c.get("principal"), id, deliveryId);
      return c.json({ id: delivery.id, status: delivery.status }, 202);
    },
  );
