import { DurableObject } from "cloudflare:workers";
import { keyRefusal, type Principal, refusal } from "../core/principal";
import { Holdings } from "../counters/held";
import type { CallTag, Spending, Unspent } from "../counters/protocol";
import { Relay, type Routed } from "../counters/relay";
import { makeDeps } from "../platform/deps";
import type { Bindings } from "../platform/env";
import type { Authorization, KeyCall } from "./object";

/** A key object's answer as the counter protocol reads it (its record is the key's principal), with its relays. */
export function routedOf(a: Authorization): Routed<Principal, Exclude<Authorization, { ok: true }>> {
  return a.ok ? { ok: true as const, record: a.principal, granted: a.granted, relays: a.relays } : a;
}

/**
 * One relay of a hot key (`relay:<n>:key:<id>`, counters/relay.ts): what it holds lives in memory only (a block of the
 * key's budget, for a second at most, and the record it was granted under), so an evicted relay strands at most one
 * block until it ends.
 */
export class KeyRelay extends DurableObject<Bindings> {
  private readonly relay = new Relay(new Holdings());

  /** What this relay holds unspent of the key `keyId`'s blocks now, and what it has yet to give back. */
  unspent(keyId: string): number {
    const name = `key:${keyId}`;
    return this.relay.held.available(name) + this.relay.held.owing(name);
  }

  /** An isolate gave up on its call `tag` of the key `keyId`: see Relay.cancel. */
  cancel({ keyId, ...call }: { keyId: string; tag: CallTag; returned: Unspent[] }): void {
    this.relay.cancel(`key:${keyId}`, call);
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
    const call = (s: DurableObjectStub<import("./object").KeyObject>, k: KeyCall, sp: Spending) =>
      s.authorize({ ...k, ...sp }) as Promise<Authorization>;
    return this.relay.serve(
      { ...base, config },
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
  }
}
