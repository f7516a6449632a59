import { and, eq, isNull, lt, or } from "drizzle-orm";
import { newId } from "../core/ids";
import { actOnLeaks } from "../keys/leaks";
import { auditIfChanged } from "../platform/db/audit";
import { batch } from "../platform/db/client";
import { type EventMessage, eventIfChanged, newEvent, publishEvents } from "../platform/db/events";
import { type Webhook, webhookAttempts, webhookDeliveries, webhookEvents, webhooks } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { safeError } from "../platform/log";
import { ed25519Key, type SigningJwk, signedHeaders } from "./signature";

/**
 * How long after each failed attempt the next one comes, in seconds: the Standard Webhooks specification's example
 * schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), continued with three 12-hour waits (the longest a queue message
 * may be delayed), so a delivery is tried 11 times over about 2.6 days before it is marked failed.
 */
export const RETRY_SCHEDULE_S = [5, 300, 1800, 7200, 18_000, 36_000, 36_000, 43_200, 43_200, 43_200];
/** An endpoint that has failed every attempt for this long is disabled. */
export const DISABLE_AFTER_MS = 24 * 3_600_000;
/** A 2xx within this long is success; anything else is a failure. */
export const DELIVERY_TIMEOUT_MS = 15_000;
/** The longest a queue message may be delayed. */
const MAX_DELAY_S = 43_200;

/**
 * The queue's consumer: hands each event on to the account's endpoints that asked for it (one delivery each, made
 * once whatever arrives twice), and makes each delivery's attempts. A message whose work failed (D1 down) comes back
 * from the queue; an endpoint's failure is not that: its next attempt is a new message, delayed by the schedule.
 */
export async function consume(deps: Deps, messages: readonly Message<EventMessage>[]): Promise<void> {
  // Side by side: one account's slow endpoint holds up none of the batch's other messages.
  await Promise.all(
    messages.map(async (message) => {
      try {
        const body = message.body;
        if ("event" in body) await fanOut(deps, body.event);
        else if ("emit" in body) {
          // Told by a counting object: written down once (a copy of the message writes nothing), then handed on.
          await deps.db
            .insert(webhookEvents)
            .values({ ...body.emit, queuedAt: deps.now().toISOString() })
            .onConflictDoNothing();
          await fanOut(deps, body.emit.id);
        } else if ("leak" in body) {
          // A leak the request could not act on: tried again here until it is done.
          await actOnLeaks(deps, [body.leak]);
        } else await attempt(deps, body.delivery, body.attempt);
        message.ack();
      } catch (err) {
        deps.log("error", "webhook_consume_failed", { error: safeError(err) });
        message.retry({ delaySeconds: 5 });
      }
    }),
  );
}

/** Makes the event's deliveries (one per endpoint that asked for it) and sends each one's first attempt. */
async function fanOut(deps: Deps, eventId: string): Promise<void> {
  const d = deps.db;
  const [event] = await d.select().from(webhookEvents).where(eq(webhookEvents.id, eventId)).limit(1);
  if (!event) return;
  const endpoints = await d
    .select()
    .from(webhooks)
    .where(and(eq(webhooks.accountId, event.accountId), isNull(webhooks.disabledAt)));
  const data = JSON.parse(event.data) as Record<string, unknown>;
  const wanted = endpoints.filter((w) => {
    // A test goes to the endpoint it was sent for, whatever events that endpoint asked for.
    if (event.type === "webhook.test") return data.webhookId === w.id;
    const events = JSON.parse(w.events) as string[];
    return events.includes("*") || events.includes(event.type);
  });
  const now = deps.now().toISOString();
  await Promise.all(
    wanted.map(async (w) => {
      await d
        .insert(webhookDeliveries)
        .values({
          id: newId("dlv"),
          webhookId: w.id,
          eventId: event.id,
          accountId: event.accountId,
          status: "pending",
          attempts: 0,
          nextAttemptAt: now,
          createdAt: now,
          updatedAt: now,
        })
        .onConflictDoNothing();
      // Made now, or by an earlier hand-off of the same event that may have failed before its first attempt: the
      // attempt due is made unless another consumer claimed it (the claim decides).
      const [delivery] = await d
        .select({ id: webhookDeliveries.id, attempts: webhookDeliveries.attempts, status: webhookDeliveries.status })
        .from(webhookDeliveries)
        .where(and(eq(webhookDeliveries.webhookId, w.id), eq(webhookDeliveries.eventId, event.id)))
        .limit(1);
      if (delivery?.status === "pending" && delivery.attempts === 0) await attempt(deps, delivery.id, 0);
    }),
  );
}

/** How long a claimed attempt may take before the sweep takes it for lost (its consumer died, or D1 lost its outcome). */
const CLAIM_MS = DELIVERY_TIMEOUT_MS + 45_000;

/**
 * The cron's sweep of deliveries whose attempt is overdue by more than CLAIM_MS: a consumer that died mid-attempt, or
 * whose outcome D1 did not record, left them pending with nothing scheduled. Each gets its due attempt again (the claim
 * keeps a delivery that is in fact under way from being sent twice).
 */
export async function sweepDeliveries(deps: Deps): Promise<number> {
  const overdue = await deps.db
    .select({ id: webhookDeliveries.id, attempts: webhookDeliveries.attempts })
    .from(webhookDeliveries)
    .where(
      and(
        eq(webhookDeliveries.status, "pending"),
        lt(webhookDeliveries.nextAttemptAt, new Date(deps.now().getTime() - CLAIM_MS).toISOString()),
      ),
    )
    .limit(100);
  if (overdue.length > 0)
    await deps.env.EVENTS.sendBatch(overdue.map((o) => ({ body: { delivery: o.id, attempt: o.attempts } satisfies EventMessage })));
  return overdue.length;
}

type Outcome = { statusCode: number | null; error: string | null; durationMs: number; retryAfterS: number | null };

/** POSTs the delivery to its endpoint: what it answered, within DELIVERY_TIMEOUT_MS, redirects not followed. */
async function post(deps: Deps, w: Webhook, event: { id: string; type: string; data: string; createdAt: string }): Promise<Outcome> {
  const now = deps.now();
  const body = JSON.stringify({ type: event.type, timestamp: event.createdAt, data: JSON.parse(event.data) });
  const secrets = [
    w.secret,
    ...(w.previousSecret && w.previousSecretUntil && w.previousSecretUntil > now.toISOString() ? [w.previousSecret] : []),
  ];
  const jwk = deps.config.webhookSigningKey;
  const ed25519 = w.ed25519 && jwk ? await ed25519Key(jwk as SigningJwk) : undefined;
  const headers = await signedHeaders({ id: event.id, timestamp: Math.floor(now.getTime() / 1000), body }, secrets, ed25519);
  const started = Date.now();
  try {
    const res = await fetch(w.url, {
      method: "POST",
      headers: { ...headers, "User-Agent": "Keygate-Webhooks/1" },
      body,
      redirect: "manual",
      signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS),
    });
    // The answer's body is not read: only its status counts.
    await res.body?.cancel();
    const retryAfter = Number(res.headers.get("Retry-After"));
    return {
      statusCode: res.status,
      error: null,
      durationMs: Date.now() - started,
      retryAfterS: Number.isInteger(retryAfter) && retryAfter > 0 ? retryAfter : null,
    };
  } catch (err) {
    const timedOut = err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError");
    return { statusCode: null, error: timedOut ? "timeout" : "connection_failed", durationMs: Date.now() - started, retryAfterS: null };
  }
}

/**
 * Attempt number `n` of a delivery: claimed first (only one consumer makes it, however many copies of the message
 * arrive), sent, recorded; a failure schedules attempt n + 1 (or marks the delivery failed when the schedule is
 * spent), and an endpoint failing for DISABLE_AFTER_MS, or answering 410, is disabled.
 */
export async function attempt(deps: Deps, deliveryId: string, n: number): Promise<void> {
  const d = deps.db;
  const [found] = await d
    .select({ delivery: webhookDeliveries, webhook: webhooks, event: webhookEvents })
    .from(webhookDeliveries)
    .leftJoin(webhooks, eq(webhooks.id, webhookDeliveries.webhookId))
    .innerJoin(webhookEvents, eq(webhookEvents.id, webhookDeliveries.eventId))
    .where(eq(webhookDeliveries.id, deliveryId))
    .limit(1);
  if (found?.delivery.status !== "pending" || found.delivery.attempts !== n) return;
  const { webhook, event } = found;
  const at = deps.now().toISOString();
  if (!webhook || webhook.disabledAt !== null) {
    await d
      .update(webhookDeliveries)
      .set({ status: "failed", nextAttemptAt: null, updatedAt: at })
      .where(eq(webhookDeliveries.id, deliveryId));
    return;
  }
  const claimed = await d
    .update(webhookDeliveries)
    // The claim holds the delivery for CLAIM_MS: past it with nothing recorded, the sweep sends the attempt again.
    .set({ attempts: n + 1, nextAttemptAt: new Date(Date.parse(at) + CLAIM_MS).toISOString(), updatedAt: at })
    .where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.attempts, n), eq(webhookDeliveries.status, "pending")))
    .returning({ id: webhookDeliveries.id });
  if (claimed.length === 0) return;
  const outcome = await post(deps, webhook, event);
  const now = deps.now();
  const record = d.insert(webhookAttempts).values({
    id: newId("att"),
    deliveryId,
    at,
    statusCode: outcome.statusCode,
    error: outcome.error,
    durationMs: outcome.durationMs,
  });
  // A success stands whatever else happened; a failure ends only a delivery still pending (a manual retry may have
  // succeeded meanwhile).
  const done = (status: "succeeded" | "failed") =>
    d
      .update(webhookDeliveries)
      .set({ status, nextAttemptAt: null, updatedAt: now.toISOString() })
      .where(and(eq(webhookDeliveries.id, deliveryId), status === "failed" ? eq(webhookDeliveries.status, "pending") : undefined));
  if (outcome.statusCode !== null && outcome.statusCode >= 200 && outcome.statusCode < 300) {
    await batch(deps.env.DB, [
      record,
      done("succeeded"),
      d.update(webhooks).set({ failingSince: null }).where(eq(webhooks.id, webhook.id)),
    ]);
    return;
  }
  const failingSince = webhook.failingSince ?? at;
  const gone = outcome.statusCode === 410;
  if (gone || now.getTime() - Date.parse(failingSince) >= DISABLE_AFTER_MS) {
    const event = newEvent(
      {
        accountId: webhook.accountId,
        type: "webhook.disabled",
        data: { webhookId: webhook.id, origin: new URL(webhook.url).origin, reason: gone ? "gone" : "failing" },
      },
      now,
    );
    await batch(deps.env.DB, [
      record,
      done("failed"),
      ...disable(deps, webhook, gone ? "gone" : "failing", now),
      eventIfChanged(deps.env.DB, event),
    ]);
    await publishEvents(deps, [event.id]);
    return;
  }
  const markFailing = d
    .update(webhooks)
    .set({ failingSince })
    .where(and(eq(webhooks.id, webhook.id), or(isNull(webhooks.failingSince), eq(webhooks.failingSince, failingSince))));
  const wait = RETRY_SCHEDULE_S[n];
  if (wait === undefined) {
    await batch(deps.env.DB, [record, done("failed"), markFailing]);
    return;
  }
  const delaySeconds = Math.min(MAX_DELAY_S, Math.max(wait, outcome.retryAfterS ?? 0));
  const next = new Date(now.getTime() + delaySeconds * 1000).toISOString();
  await batch(deps.env.DB, [
    record,
    d
      .update(webhookDeliveries)
      .set({ nextAttemptAt: next, updatedAt: now.toISOString() })
      .where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.status, "pending"))),
    markFailing,
  ]);
  await deps.env.EVENTS.send({ delivery: deliveryId, attempt: n + 1 } satisfies EventMessage, { delaySeconds });
}

/**
 * Disables an endpoint Keygate gave up on, audited once (two consumers giving up at once disable it once); the event
 * after it in the batch tells the account's other endpoints (`webhook.disabled`).
 */
function disable(deps: Deps, webhook: Webhook, reason: "gone" | "failing", now: Date) {
  return [
    deps.db
      .update(webhooks)
      .set({ disabledAt: now.toISOString(), disabledReason: reason, updatedAt: now.toISOString() })
      .where(and(eq(webhooks.id, webhook.id), isNull(webhooks.disabledAt))),
    auditIfChanged(
      deps.env.DB,
      { accountId: webhook.accountId, actor: "keygate", action: "webhook.disabled", target: webhook.id, requestId: deps.requestId },
      now,
    ),
  ];
}
