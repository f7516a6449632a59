import { z } from "@hono/zod-openapi";
import { extend, orNull, Timestamp, text } from "../core/schemas";
import type { Webhook, WebhookAttempt, WebhookDelivery } from "../platform/db/schema";

/** Every event an endpoint may ask for (README, Events). */
export const EVENT_TYPES = [
  "api_key.created",
  "api_key.rotated",
  "api_key.revoked",
  "api_key.expiring",
  "api_key.expired",
  "api_key.leaked",
  "rate_limit.exceeded",
  "credits.low",
  "credits.exhausted",
  "user.invited",
  "user.disabled",
  "session.reuse_detected",
  "webhook.test",
  "webhook.disabled",
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

/** The most endpoints an account keeps. */
export const MAX_WEBHOOKS = 20;

/** An endpoint's URL: https (http only with ALLOW_HTTP, checked where the deployment is known), no credentials or fragment. */
const WebhookUrl = z
  .string()
  .max(2048)
  .superRefine((value, ctx) => {
    const url = URL.canParse(value) ? new URL(value) : null;
    if (!url || !["https:", "http:"].includes(url.protocol)) ctx.addIssue({ code: "custom", message: "must be an https URL" });
    else if (url.username || url.password) ctx.addIssue({ code: "custom", message: "must not carry credentials" });
    else if (url.hash) ctx.addIssue({ code: "custom", message: "must not carry a fragment" });
  })
  .openapi({ example: "https://hooks.example.com/keygate", description: "https (http only with ALLOW_HTTP); no credentials" });

const Events = z
  .array(z.enum([...EVENT_TYPES, "*"]))
  .min(1)
  .max(EVENT_TYPES.length + 1)
  .transform((list) => (list.includes("*") ? ["*"] : [...new Set(list)]))
  .openapi({ description: 'The event types sent to it, or `["*"]` for all', example: ["api_key.revoked", "api_key.leaked"] });

export const NewWebhook = z
  .strictObject({
    url: WebhookUrl,
    events: Events,
    description: text(200).optional(),
    ed25519: z
      .boolean()
      .default(false)
      .openapi({ description: "Also sign with Keygate's Ed25519 key (`v1a,`), published in /.well-known/jwks.json" }),
  })
  .openapi("NewWebhook");

export const WebhookChange = z
  .strictObject({
    url: WebhookUrl.optional(),
    events: Events.optional(),
    description: text(200).nullable().optional(),
    ed25519: z.boolean().optional(),
    disabled: z.boolean().optional().openapi({ description: "`false` enables an endpoint disabled by hand or by failures" }),
  })
  .openapi("WebhookChange");

export const WebhookView = z
  .strictObject({
    id: z.string().openapi({ example: "whk_5f0c9a1e2b7d43a8c6e1f0b2" }),
    url: z.string(),
    events: z.array(z.string()),
    description: z.string().nullable(),
    ed25519: z.boolean(),
    disabled: z.boolean(),
    disabledAt: Timestamp.nullable(),
    disabledReason: orNull(z.enum(["by_admin", "gone", "failing"])),
    failingSince: Timestamp.nullable(),
    createdAt: Timestamp,
  })
  .openapi("Webhook");

/** An endpoint with its secret: the answers that create or rotate it, the only ones that show it. */
export const WebhookWithSecret = extend(WebhookView, {
  secret: z.string().openapi({ example: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }),
}).openapi("WebhookWithSecret");

export const AttemptView = z
  .strictObject({
    at: Timestamp,
    statusCode: z.number().int().nullable().openapi({ description: "What the endpoint answered; null when it did not" }),
    error: z.string().nullable(),
    durationMs: z.number().int(),
  })
  .openapi("WebhookAttempt");

export const DeliveryView = z
  .strictObject({
    id: z.string(),
    eventId: z.string().openapi({ description: "The `webhook-id` of every attempt" }),
    eventType: z.string(),
    status: z.enum(["pending", "succeeded", "failed"]),
    attempts: z.array(AttemptView),
    nextAttemptAt: Timestamp.nullable(),
    createdAt: Timestamp,
  })
  .openapi("WebhookDelivery");

export const DeliveryIdParam = z.object({
  id: z.string().openapi({ param: { name: "id", in: "path" } }),
  deliveryId: z.string().openapi({ param: { name: "deliveryId", in: "path" } }),
});

export function webhookView(w: Webhook): z.infer<typeof WebhookView> {
  return {
    id: w.id,
    url: w.url,
    events: JSON.parse(w.events) as string[],
    description: w.description,
    ed25519: w.ed25519,
    disabled: w.disabledAt !== null,
    disabledAt: w.disabledAt,
    disabledReason: w.disabledReason as z.infer<typeof WebhookView>["disabledReason"],
    failingSince: w.failingSince,
    createdAt: w.createdAt,
  };
}

export function deliveryView(d: WebhookDelivery & { eventType: string }, attempts: WebhookAttempt[]): z.infer<typeof DeliveryView> {
  return {
    id: d.id,
    eventId: d.eventId,
    eventType: d.eventType,
    status: d.status,
    attempts: attempts.map(({ at, statusCode, error, durationMs }) => ({ at, statusCode, error, durationMs })),
    nextAttemptAt: d.status === "pending" ? d.nextAttemptAt : null,
    createdAt: d.createdAt,
  };
}
