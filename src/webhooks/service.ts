import type { z } from "@hono/zod-openapi";
import { and, asc, count, eq, inArray } from "drizzle-orm";
import { newId } from "../core/ids";
import type { Principal } from "../core/principal";
import { auditIfChanged, auditInsert } from "../platform/db/audit";
import { batch } from "../platform/db/client";
import { type EventMessage, newEvent, publishEvents } from "../platform/db/events";
import { listPage, type Page } from "../platform/db/pagination";
import { type Webhook, webhookAttempts, webhookDeliveries, webhookEvents, webhooks } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import { MAX_WEBHOOKS, type NewWebhook, type WebhookChange } from "./schemas";
import { newSecret } from "./signature";

// The webhook aggregate: an account's endpoints (admins only), their secrets, and what was delivered to them. Every
// change is audited in the same batch; deliveries are made by the queue consumer (deliver.ts).

/** How long a rotated secret still signs beside the new one (the specification's zero-downtime rotation). */
export const SECRET_OVERLAP_MS = 24 * 3_600_000;

/** An endpoint that asks for Ed25519 signatures needs the deployment's key. */
function checkEd25519(deps: Deps, ed25519: boolean | undefined): void {
  if (ed25519 && !deps.config.webhookSigningKey)
    throw new ApiError("invalid_request", "Invalid fields: ed25519.", {
      errors: [{ field: "ed25519", message: "needs the deployment's WEBHOOK_SIGNING_KEY, which is not set" }],
    });
}

/** A host as a URL names it, compared as DNS does: case aside, with or without the final dot. */
const hostOf = (host: string) => host.toLowerCase().replace(/\.$/, "");

/**
 * The endpoint's URL is one the deployment may POST to: https unless ALLOW_HTTP, and never one of Keygate's own hosts
 * (the one the request reached, PUBLIC_ORIGIN's, DASHBOARD_HOST), whatever the scheme, port or spelling.
 */
function checkUrl(deps: Deps, value: string, ownOrigin: string): void {
  const url = new URL(value);
  const own = [ownOrigin, deps.config.publicOrigin, deps.config.dashboardHost && `https://${deps.config.dashboardHost}`]
    .filter((o): o is string => typeof o === "string")
    .map((o) => hostOf(new URL(o).hostname));
  const problem =
    url.protocol === "http:" && !deps.config.allowHttp
      ? "must be an https URL"
      : own.includes(hostOf(url.hostname))
        ? "must not be Keygate's own origin"
        : null;
  if (problem) throw new ApiError("invalid_request", "Invalid fields: url.", { errors: [{ field: "url", message: problem }] });
}

async function findWebhook(deps: Deps, p: Principal, id: string): Promise<Webhook> {
  const [found] = await deps.db
    .select()
    .from(webhooks)
    .where(and(eq(webhooks.accountId, p.accountId), eq(webhooks.id, id)))
    .limit(1);
  if (!found) throw new ApiError("not_found", "No webhook endpoint with this id in this account.");
  return found;
}

const audit = (deps: Deps, p: Principal, action: string, target: string) => ({
  accountId: p.accountId,
  actor: p.userId,
  action,
  target,
  requestId: deps.requestId,
});

export async function createWebhook(deps: Deps, p: Principal, input: z.infer<typeof NewWebhook>, ownOrigin: string): Promise<Webhook> {
  checkUrl(deps, input.url, ownOrigin);
  checkEd25519(deps, input.ed25519);
  const d = deps.db;
  const [{ n } = { n: 0 }] = await d.select({ n: count() }).from(webhooks).where(eq(webhooks.accountId, p.accountId));
  if (n >= MAX_WEBHOOKS)
    throw new ApiError("invalid_request", `An account keeps at most ${MAX_WEBHOOKS} webhook endpoints; delete one first.`);
  const now = deps.now();
  const webhook: Webhook = {
    id: newId("whk"),
    accountId: p.accountId,
    url: input.url,
    events: JSON.stringify(input.events),
    description: input.description ?? null,
    secret: newSecret(),
    previousSecret: null,
    previousSecretUntil: null,
    ed25519: input.ed25519,
    failingSince: null,
    disabledAt: null,
    disabledReason: null,
    createdAt: now.toISOString(),
    updatedAt: now.toISOString(),
  };
  await batch(deps.env.DB, [d.insert(webhooks).values(webhook), auditInsert(d, audit(deps, p, "webhook.created", webhook.id), now)]);
  return webhook;
}

export function listWebhooks(deps: Deps, p: Principal, page: Page) {
  return listPage(deps.db, webhooks, eq(webhooks.accountId, p.accountId), page);
}

export const getWebhook = findWebhook;

export async function updateWebhook(
  deps: Deps,
  p: Principal,
  id: string,
  change: z.infer<typeof WebhookChange>,
  ownOrigin: string,
): Promise<Webhook> {
  const webhook = await findWebhook(deps, p, id);
  if (change.url !== undefined) checkUrl(deps, change.url, ownOrigin);
  checkEd25519(deps, change.ed25519);
  const now = deps.now();
  const set = {
    ...(change.url === undefined ? {} : { url: change.url }),
    ...(change.events === undefined ? {} : { events: JSON.stringify(change.events) }),
    ...(change.description === undefined ? {} : { description: change.description }),
    ...(change.ed25519 === undefined ? {} : { ed25519: change.ed25519 }),
    ...(change.disabled === undefined
      ? {}
      : change.disabled
        ? { disabledAt: webhook.disabledAt ?? now.toISOString(), disabledReason: webhook.disabledReason ?? "by_admin" }
        : { disabledAt: null, disabledReason: null, failingSince: null }),
  };
  if (Object.keys(set).length === 0) return webhook;
  const d = deps.db;
  await batch(deps.env.DB, [
    d
      .update(webhooks)
      .set({ ...set, updatedAt: now.toISOString() })
      .where(eq(webhooks.id, webhook.id)),
    auditInsert(d, audit(deps, p, "webhook.updated", webhook.id), now),
  ]);
  return { ...webhook, ...set, updatedAt: now.toISOString() };
}

/** Deletes the endpoint: nothing more is sent to it, and its deliveries are no longer shown. */
export async function deleteWebhook(deps: Deps, p: Principal, id: string): Promise<void> {
  const webhook = await findWebhook(deps, p, id);
  const d = deps.db;
  const now = deps.now();
  await batch(deps.env.DB, [
    d.delete(webhooks).where(eq(webhooks.id, webhook.id)),
    d.update(webhookDeliveries).set({ status: "failed", updatedAt: now.toISOString() }).where(eq(webhookDeliveries.webhookId, webhook.id)),
    auditInsert(d, audit(deps, p, "webhook.deleted", webhook.id), now),
  ]);
}

/** A new secret; the old one keeps signing beside it for SECRET_OVERLAP_MS, so receivers can switch without a gap. */
export async function rotateSecret(deps: Deps, p: Principal, id: string): Promise<Webhook> {
  const webhook = await findWebhook(deps, p, id);
  const now = deps.now();
  const rotated = {
    secret: newSecret(),
    previousSecret: webhook.secret,
    previousSecretUntil: new Date(now.getTime() + SECRET_OVERLAP_MS).toISOString(),
    updatedAt: now.toISOString(),
  };
  const d = deps.db;
  await batch(deps.env.DB, [
    // Only from the secret read: two rotations at once cannot both keep an old secret that no one holds.
    d
      .update(webhooks)
      .set(rotated)
      .where(and(eq(webhooks.id, webhook.id), eq(webhooks.secret, webhook.secret))),
    // Audited only when this rotation stood: of concurrent ones, one does.
    auditIfChanged(deps.env.DB, audit(deps, p, "webhook.secret_rotated", webhook.id), now),
  ]);
  const [saved] = await d.select().from(webhooks).where(eq(webhooks.id, webhook.id)).limit(1);
  if (saved?.secret !== rotated.secret) throw new ApiError("invalid_request", "The secret was rotated at the same time; read it again.");
  return saved;
}

/** Sends `webhook.test` to this endpoint alone (whatever events it asked for). */
export async function testWebhook(deps: Deps, p: Principal, id: string): Promise<{ eventId: string }> {
  const webhook = await findWebhook(deps, p, id);
  const now = deps.now();
  const event = newEvent({ accountId: p.accountId, type: "webhook.test", data: { webhookId: webhook.id } }, now);
  await deps.db.insert(webhookEvents).values(event);
  await publishEvents(deps, [event.id]);
  return { eventId: event.id };
}

/** The endpoint's deliveries, newest first, each with its attempts. */
export async function listDeliveries(deps: Deps, p: Principal, id: string, page: Page) {
  const webhook = await findWebhook(deps, p, id);
  const d = deps.db;
  const { rows, nextCursor } = await listPage(d, webhookDeliveries, eq(webhookDeliveries.webhookId, webhook.id), page);
  const ids = rows.map((r) => r.id);
  const [attempts, events] = await Promise.all([
    ids.length === 0
      ? []
      : d.select().from(webhookAttempts).where(inArray(webhookAttempts.deliveryId, ids)).orderBy(asc(webhookAttempts.at)),
    ids.length === 0
      ? []
      : d
          .select({ id: webhookEvents.id, type: webhookEvents.type })
          .from(webhookEvents)
          .where(
            inArray(
              webhookEvents.id,
              rows.map((r) => r.eventId),
            ),
          ),
  ]);
  const types = new Map(events.map((e) => [e.id, e.type]));
  return {
    data: rows.map((r) => ({ ...r, eventType: types.get(r.eventId) ?? "" })),
    attempts: (deliveryId: string) => attempts.filter((a) => a.deliveryId === deliveryId),
    nextCursor,
  };
}

/** Sends a delivery again now, whatever became of it (a new attempt of the same event, with the same `webhook-id`). */
export async function retryDelivery(deps: Deps, p: Principal, id: string, deliveryId: string) {
  const webhook = await findWebhook(deps, p, id);
  const d = deps.db;
  const [delivery] = await d
    .select()
    .from(webhookDeliveries)
    .where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.webhookId, webhook.id)))
    .limit(1);
  if (!delivery) throw new ApiError("not_found", "No delivery with this id for this endpoint.");
  const now = deps.now().toISOString();
  await d
    .update(webhookDeliveries)
    .set({ status: "pending", nextAttemptAt: now, updatedAt: now })
    .where(eq(webhookDeliveries.id, delivery.id));
  await deps.env.EVENTS.send({ delivery: delivery.id, attempt: delivery.attempts } satisfies EventMessage);
  return { ...delivery, status: "pending" as const, nextAttemptAt: now };
}
