import { app } from "./http/app";
import { announceExpiries } from "./keys/expiry";
import type { EventMessage } from "./platform/db/events";
import { publishEvents } from "./platform/db/events";
import { makeDeps } from "./platform/deps";
import type { Bindings } from "./platform/env";
import { consume, sweepDeliveries } from "./webhooks/deliver";

export { AccountObject } from "./counters/account-object";
export { Counter } from "./counters/counter-object";
export { KeyObject } from "./keys/object";
export { KeygateVerifier } from "./verifier";

export default {
  fetch: app.fetch,
  /** Events on their way to webhook endpoints (src/webhooks/deliver.ts). */
  async queue(batch, env, ctx) {
    await consume(makeDeps(env, ctx), batch.messages);
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
} satisfies ExportedHandler<Bindings, EventMessage>;
