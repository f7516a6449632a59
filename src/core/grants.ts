/**
 * The grammar of rights, as users' grants, keys' scopes, gateway routes, the resource registry and RESOURCE_TYPES
 * spell them: `*` for full access, or grants `<type>:<id>` (`mailbox:mbx_1`) of one resource each.
 */

/** Full access: every resource of the account. */
export const FULL_ACCESS = "*";

const TYPE = "[a-z][a-z0-9]{0,31}";
const ID = "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}";

/** A resource type's name (`mailbox`). */
export const RESOURCE_TYPE = new RegExp(`^${TYPE}$`);
/** A resource's id (`mbx_1`). */
export const RESOURCE_ID = new RegExp(`^${ID}$`);
/** A grant of one resource, `<type>:<id>`. */
export const GRANT = new RegExp(`^(${TYPE}):(${ID})$`);
/** An entry of a list of rights: a grant, or `*`. */
export const SCOPE = new RegExp(`^(\\*|${TYPE}:${ID})$`);

/** The grant of one resource. */
export function grantOf(type: string, id: string): string {
  return `${type}:${id}`;
}

/** `mailbox:mbx_1` as its type and id, or null when it is not a grant. */
export function parseGrant(grant: string): { type: string; id: string } | null {
  const [, type, id] = GRANT.exec(grant) ?? [];
  return type !== undefined && id !== undefined ? { type, id } : null;
}

/** Whether a list of rights is full access. */
export function isFullAccess(rights: readonly string[]): boolean {
  return rights.includes(FULL_ACCESS);
}

/** Whether a list of rights reaches the resource `grant` names: full access, or that very grant. */
export function reaches(rights: readonly string[], grant: string): boolean {
  return isFullAccess(rights) || rights.includes(grant);
}

/** What is wrong with a list of rights against the configured resource types, each with its entry's index (null: the list). */
export function rightsProblems(rights: readonly string[], types: readonly string[]): { index: number | null; message: string }[] {
  const problems: { index: number | null; message: string }[] = [];
  const hint = `${GRANTS_HINT} with a type among: ${types.join(", ") || "(none configured)"}`;
  rights.forEach((s, index) => {
    const type = parseGrant(s)?.type;
    if (type !== undefined && !types.includes(type)) problems.push({ index, message: hint });
  });
  if (isFullAccess(rights) && rights.length > 1) problems.push({ index: null, message: MIXED });
  return problems;
}

/** How a list of rights is written, for answers that refuse one. */
export const GRANTS_HINT = 'must be "*" or grants of the form <type>:<id>';
/** Why full access and grants never share a list: the grants would mean nothing. */
export const MIXED = `"*" (full access) cannot be combined with resource grants`;
