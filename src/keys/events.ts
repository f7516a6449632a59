import type { ApiKey } from "../platform/db/schema";

/** A key as events tell of it: who and what, never its secret or hash. */
export function keyEvent(k: ApiKey) {
  return {
    id: k.id,
    name: k.name,
    prefix: k.prefix,
    start: k.start,
    ownerId: k.ownerId,
    scopes: JSON.parse(k.scopes) as string[],
    expiresAt: k.expiresAt,
    revokedAt: k.revokedAt,
    externalId: k.externalId,
  };
}
