import { app } from "./http/app";
import { announceExpiries } from "./keys/expiry";
import type { EventMessage } from "./platform/db/events";
import { publishEvents } from "./platform/db/events";
import { makeDeps } from "./platform/deps";
import type { Bindings } from "./platform/env";
import { consumeUsage, isUsageMessage, type UsageMessage } from "./usage/queue";
import { consume, sweepDeliveries } from "./webhooks/deliver";

export { AccountObject } from "./counters/account-object";
export { Counter } from "./counters/counter-object";
export { KeyObject } from "./keys/object";
export { KeyRelay } from "./keys/relay";
export { KeygateVerifier } from "./verifier";

export default {
  fetch: app.fetch,
  /** Keys' usage on its way to the rollups and D1 (src/usage/queue.ts); events on their way to webhook endpoints (src/webhooks/deliver.ts). */
  async queue(batch, env, ctx) {
    const deps = makeDeps(env, ctx);
    const [usage, events] = partition(batch.messages);
    if (usage.length > 0) await consumeUsage(deps, usage);
    if (events.length > 0) await consume(deps, events);
  },
  /**
   * Every minute: events whose hand-off to the queue failed after their change, deliveries whose attempt was lost, and
   * notices of keys' expiry.
   */
  async scheduled(_controller, env, ctx) {
    const deps = makeDeps(env, ctx);
    await publishEvents(deps);
    await sweepDeliveries(deps);
    await announceExpiries(deps);
  },
} satisfies ExportedHandler<Bindings, EventMessage | UsageMessage>;

/** A batch holds one queue's messages; told apart by their bodies all the same, whatever the queues are named. */
function partition(messages: readonly Message<EventMessage | UsageMessage>[]) {
  const usage: Message<UsageMessage>[] = [];
  const events: Message<EventMessage>[] = [];
  for (const m of messages) {
    if (isUsageMessage(m.body)) usage.push(m as Message<UsageMessage>);
    else events.push(m as Message<EventMessage>);
  }
  return [usage, events] as const;
}
