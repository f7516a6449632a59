import { and, asc, inArray, isNull, lt } from "drizzle-orm";
import { newId } from "../../core/ids";
import type { Deps } from "../deps";
import { safeError } from "../log";
import { webhookEvents } from "./schema";

/** What the account's webhook endpoints are told of; `data` never holds a key, a hash, a password or a token. */
export type EventInput = { accountId: string; type: string; data: Record<string, unknown> };

export type EventRow = typeof webhookEvents.$inferInsert & { id: string };

/**
 * A queue message (src/webhooks/deliver.ts): an event of the outbox to hand on to its endpoints; an event a counting
 * object tells of (`emit`: written down by the consumer, then handed on); or the attempt numbered `attempt` (0 the
 * first) of one delivery; or a leak report to act on again.
 */
export type EventMessage =
  | { event: string }
  | { emit: EventRow }
  | { delivery: string; attempt: number }
  /** A reported leak that could not be acted on at once (src/keys/leaks.ts). */
  | { leak: { hash: string; source: "github" | "report"; url?: string } };

/**
 * An event as its outbox row: write it in the same D1 batch as the change it tells of (`d.insert(webhookEvents)
 * .values(row)`, or `eventIfChanged` after a guarded change), so the change and its event land together or not at all;
 * then `publishEvents(deps, [row.id])` once the change is known to stand.
 */
export function newEvent(e: EventInput, now: Date): EventRow {
  return {
    id: newId("msg"),
    accountId: e.accountId,
    type: e.type,
    data: JSON.stringify(e.data),
    createdAt: now.toISOString(),
    queuedAt: null,
  };
}

/** The event's row, written only when the statement just before it in the batch changed one row (see auditIfChanged). */
export function eventIfChanged(d1: D1Database, row: EventRow): D1PreparedStatement {
  return d1
    .prepare("INSERT INTO webhook_events (id, account_id, type, data, created_at) SELECT ?, ?, ?, ?, ? WHERE changes() = 1")
    .bind(row.id, row.accountId, row.type, row.data, row.createdAt);
}

/**
 * The most events one hand-off sends: a queue batch takes at most 100 messages, and D1 binds at most 100 parameters a
 * statement (the ids and one more).
 */
const PUBLISH_BATCH = 90;
/**
 * How old an event is before the sweep hands it on: a request hands its own events on once its change stands, and a
 * change it undoes (a rotation not put in force) takes its event with it well within this.
 */
export const SWEEP_AFTER_MS = 30_000;

/**
 * Hands events to the queue and marks them queued: these `ids` (a request's own, once its change stood), or every
 * event older than SWEEP_AFTER_MS that nothing handed on (the cron's sweep). An event may be sent twice (a delivery is
 * made once per endpoint and event whatever arrives); one the queue refused stays for the sweep. Failures are logged,
 * never thrown: the change they tell of stands.
 */
export async function publishEvents(deps: Deps, ids?: readonly string[]): Promise<number> {
  if (ids?.length === 0) return 0;
  if (ids && ids.length > PUBLISH_BATCH) {
    let sent = 0;
    for (let i = 0; i < ids.length; i += PUBLISH_BATCH) sent += await publishEvents(deps, ids.slice(i, i + PUBLISH_BATCH));
    return sent;
  }
  try {
    const waiting = await deps.db
      .select({ id: webhookEvents.id })
      .from(webhookEvents)
      .where(
        and(
          isNull(webhookEvents.queuedAt),
          ids
            ? inArray(webhookEvents.id, [...ids])
            : lt(webhookEvents.createdAt, new Date(deps.now().getTime() - SWEEP_AFTER_MS).toISOString()),
        ),
      )
      .orderBy(asc(webhookEvents.createdAt))
      .limit(PUBLISH_BATCH);
    if (waiting.length === 0) return 0;
    await deps.env.EVENTS.sendBatch(waiting.map(({ id }) => ({ body: { event: id } satisfies EventMessage })));
    const sent = waiting.map((e) => e.id);
    await deps.db
      .update(webhookEvents)
      .set({ queuedAt: deps.now().toISOString() })
      .where(and(inArray(webhookEvents.id, sent), isNull(webhookEvents.queuedAt)));
    return sent.length;
  } catch (err) {
    deps.log("error", "events_publish_failed", { error: safeError(err), requestId: deps.requestId });
    return 0;
  }
}
