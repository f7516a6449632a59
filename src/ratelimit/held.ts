import type { Principal } from "../auth/principal";
import { HeldLeases, LEASE_MS } from "./lease";

type Held = { principal: Principal; until: number; remaining: number; resetAt: number; leases: HeldLeases };

const MAX_HELD_KEYS = 10_000;

/**
 * What one isolate holds of each hot key: the record its object last answered (trusted until the isolate's leases of
 * it end, at most LEASE_MS after it asked) and those leases. Nothing is held of a key without a lease, so a key that
 * is not hot is judged by its object on every request, exactly as without leases.
 */
export class Holdings {
  private readonly held = new Map<string, Held>();

  /** `now` is replaceable in tests to move this isolate's time. */
  constructor(public now: () => number = Date.now) {}

  /** The held record and leases of a key, while the record may be trusted. */
  get(keyId: string): Held | undefined {
    const h = this.held.get(keyId);
    return h && h.until > this.now() ? h : undefined;
  }

  /** What ended leases of the key left unspent, removed from what is held (the object takes it back). */
  unspent(keyId: string): { id: number; left: number }[] {
    return this.held.get(keyId)?.leases.ended(this.now()) ?? [];
  }

  /** Keeps a lease the object granted, with the record it was granted for, until `askedAt + LEASE_MS`. */
  hold(
    keyId: string,
    askedAt: number,
    principal: Principal,
    lease: { id: number; units: number },
    remaining: number,
    resetAt: number,
  ): void {
    const until = askedAt + LEASE_MS;
    let h = this.held.get(keyId);
    if (h) Object.assign(h, { principal, until: Math.max(h.until, until), remaining, resetAt });
    else {
      if (this.held.size >= MAX_HELD_KEYS) this.held.delete(this.held.keys().next().value as string);
      h = { principal, until, remaining, resetAt, leases: new HeldLeases() };
      this.held.set(keyId, h);
    }
    h.leases.add(until, lease.id, lease.units);
  }

  /** Gives admissions spent from a lease back to it while it lasts; false when the object must take them back. */
  giveBack(keyId: string, id: number, cost: number): boolean {
    return this.held.get(keyId)?.leases.giveBack(this.now(), id, cost) ?? false;
  }

  /**
   * Stops trusting what is held of these keys, so a change made in this isolate is in force here at once; their
   * leases are only spent again under a record the object answers anew.
   */
  drop(keyIds: readonly string[]): void {
    for (const id of keyIds) {
      const h = this.held.get(id);
      if (h) h.until = 0;
    }
  }
}

/** This isolate's holdings. */
export const holdings = new Holdings();
