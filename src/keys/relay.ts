import { DurableObject } from "cloudflare:workers";
import { LEASE_MS } from "../core/lease";
import { keyRefusal, type Principal, refusal } from "../core/principal";
import { Holdings } from "../counters/held";
import { timedOut } from "../counters/leased-call";
import type { CallTag, Spending, Unspent } from "../counters/protocol";
import { Relay, type Routed } from "../counters/relay";
import { getConfig } from "../platform/config";
import { deadline, retryFor } from "../platform/deadline";
import { makeDeps } from "../platform/deps";
import type { Bindings } from "../platform/env";
import type { Authorization, KeyCall } from "./object";

/** A key object's answer as the counter protocol reads it (its record is the key's principal), with its relays. */
export function routedOf(a: Authorization): Routed<Principal, Exclude<Authorization, { ok: true }>> {
  return a.ok ? { ok: true as const, record: a.principal, granted: a.granted, relays: a.relays } : a;
}

/** How long a give-back that failed is tried again: within the call memory that takes it back once (budget.ts). */
const GIVE_BACK_RETRY_MS = 5_000;

/**
 * One relay of a hot key (`relay:<n>:key:<id>`, counters/relay.ts): what it holds lives in memory only (a block of the
 * key's budget, for a second at most, and the record it was granted under), so an evicted relay strands at most one
 * block until it ends.
 */
export class KeyRelay extends DurableObject<Bindings> {
  private readonly relay = new Relay(new Holdings(), `relay-${this.ctx.id.toString()}`);
  /** Keys whose give-back is due (`giveBackLater`). */
  private readonly due = new Set<string>();

  /** What this relay holds unspent of the key `keyId`'s blocks now, and what it has yet to give back. */
  unspent(keyId: string): number {
    const name = `key:${keyId}`;
    return this.relay.held.available(name) + this.relay.held.owing(name);
  }

  /** An isolate gave up on its call `tag` of the key `keyId`: see Relay.cancel. */
  cancel({ keyId, ...call }: { keyId: string; tag: CallTag; returned: Unspent[] }): void {
    this.relay.cancel(`key:${keyId}`, call);
    this.giveBackLater(keyId);
  }

  /**
   * What the relay owes the key's object (what its isolates gave back, its ended blocks' rests) leaves with its next
   * call there; so that it does not wait for one when the key's isolates stop coming, it is also sent a lease after
   * the relay last served the key (and each lease while it still holds a block), as the cancellation of a call never
   * made: the key's object takes it back once, however many tries reach it.
   */
  private giveBackLater(keyId: string): void {
    const name = `key:${keyId}`;
    const { held } = this.relay;
    if (this.due.has(keyId) || held.available(name) + held.owing(name) === 0) return;
    this.due.add(keyId);
    setTimeout(() => {
      this.due.delete(keyId);
      const returned = held.unspent(name);
      if (returned.length > 0) {
        const stub = this.env.KEYS.getByName(name);
        const ms = getConfig(this.env).rateLimitTimeoutMs;
        const stop = Date.now() + ms + GIVE_BACK_RETRY_MS;
        // The key's object remembers the id until well past `deadline`: past every try, so it takes `returned` once.
        const tag = { id: `relay-return-${crypto.randomUUID()}`, deadline: stop };
        const attempt = () =>
          deadline(stub.cancel({ tag, returned }), Math.max(1, Math.min(ms, stop - Date.now())), timedOut).then(
            () => true,
            () => false,
          );
        this.ctx.waitUntil(attempt().then((done) => done || retryFor(GIVE_BACK_RETRY_MS, attempt)));
      }
      this.giveBackLater(keyId);
    }, LEASE_MS);
  }

  /** A plain call of one of the key's isolates (see KeyObject.authorize), answered as the key's object answers it. */
  authorize({ keyId, method, need, ip, anyAddress = false, ...spending }: KeyCall & Spending) {
    const name = `key:${keyId}`;
    const base = makeDeps(this.env, this.ctx, spending.tag.id);
    // Within the isolate's deadline; a failure is the isolate's to handle, as its own call's would be.
    const config = {
      ...base.config,
      rateLimitFailureMode: "closed" as const,
      rateLimitTimeoutMs: Math.max(1, spending.tag.deadline - Date.now()),
    };
    // A block renewed in the background lands after the answer: what it brings is given back in time too.
    const waitUntil = (p: Promise<unknown>) => base.waitUntil(p.finally(() => this.giveBackLater(keyId)));
    const call = (s: DurableObjectStub<import("./object").KeyObject>, k: KeyCall, sp: Spending) =>
      s.authorize({ ...k, ...sp }) as Promise<Authorization>;
    const answer = this.relay.serve(
      { ...base, config, waitUntil },
      {
        name,
        stub: this.env.KEYS.getByName(name),
        spending,
        ask: async (stub, s) => routedOf(await call(stub, { keyId, method, need, ip, anyAddress }, s)),
        renew: async (stub, s) => routedOf(await call(stub, { keyId, method, need: "any", anyAddress: true }, s)),
        check: (principal) => {
          const code = anyAddress ? refusal(principal, need) : keyRefusal(principal, need, ip);
          return code && { ok: false as const, refusal: code };
        },
      },
    );
    // Whatever it answers, what it now holds or owes is given back in time.
    return answer.finally(() => this.giveBackLater(keyId));
  }
}
