import { type KeyRecord, type KeyRow, keyPrincipal, type Principal } from "./principal";

export type KeyStatus = "active" | "revoked" | "expired";

/** A revocation may be scheduled (rotation grace), so status is computed against the clock, as instants. */
export function keyStatus(key: Pick<KeyRow, "revokedAt" | "expiresAt">, now: Date): KeyStatus {
  const t = now.getTime();
  if (key.revokedAt !== null && Date.parse(key.revokedAt) <= t) return "revoked";
  if (key.expiresAt !== null && Date.parse(key.expiresAt) <= t) return "expired";
  return "active";
}

export type VerifyResult =
  | { ok: true; principal: Principal }
  | { ok: false; code: "invalid_key" | "key_revoked" | "key_expired" | "key_owner_disabled" };

/** Whether a key (undefined: none has its hash) may be used at `now`, and with which rights. An unusable key is a result, not an exception. */
export function evaluateKey(found: KeyRecord | undefined, now: Date): VerifyResult {
  if (!found) return { ok: false, code: "invalid_key" };
  const status = keyStatus(found.key, now);
  if (status === "revoked") return { ok: false, code: "key_revoked" };
  if (status === "expired") return { ok: false, code: "key_expired" };
  if (found.disabled) return { ok: false, code: "key_owner_disabled" };
  return { ok: true, principal: keyPrincipal(found) };
}
