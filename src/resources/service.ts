import type { Deps } from "../platform/deps";
import { ApiError, invalidRequest } from "../platform/errors";
import { accountExists, getOwnership, type Ownership, removeOwner, setOwner } from "./owners";

// The registry of resource owners, for the provider's backend (VERIFY_TOKEN): no principal, every resource of every
// account. Keys reach a resource through their grants and its owner (ownerOf), never through these.

type Resource = { type: string; id: string };

const notFound = () => new ApiError("not_found", "No account owns this resource.");

/** A resource whose type is one of RESOURCE_TYPES (no key or route can name another), else 400. */
function configured(deps: Deps, resource: Resource): Resource {
  const types = deps.config.resourceTypes;
  if (!types.includes(resource.type))
    throw invalidRequest([{ field: "type", message: `must be one of RESOURCE_TYPES: ${types.join(", ") || "(none configured)"}` }]);
  return resource;
}

/** Says which account owns a resource, replacing any owner; 404 when no account has that id. */
export async function assignOwner(deps: Deps, resource: Resource, accountId: string): Promise<Ownership> {
  const { type, id } = configured(deps, resource);
  if (!(await accountExists(deps.db, accountId))) throw new ApiError("not_found", "No account has this id.");
  return setOwner(deps.db, type, id, accountId, deps.now());
}

/** Which account owns a resource; 404 when none does. */
export async function ownership(deps: Deps, resource: Resource): Promise<Ownership> {
  const { type, id } = configured(deps, resource);
  const found = await getOwnership(deps.db, type, id);
  if (!found) throw notFound();
  return found;
}

/** Forgets a resource's owner, whoever it is; 404 when it had none. */
export async function forgetOwner(deps: Deps, resource: Resource): Promise<void> {
  const { type, id } = configured(deps, resource);
  if (!(await removeOwner(deps.db, type, id))) throw notFound();
}
