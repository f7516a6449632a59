import type { z } from "@hono/zod-openapi";
import { Hono } from "hono";
import { FULL_ACCESS } from "../../core/grants";
import { IdempotencyKey } from "../../core/schemas";
import { CreditsAdjustment } from "../../credits/schemas";
import { adjustKeyCredits, keyBalances, keyLedger } from "../../credits/service";
import { keyHygiene } from "../../keys/hygiene";
import { HYGIENE_IDS, type KeyHygiene, keyView, MAX_GRACE_SECONDS, NewKey, Rotation } from "../../keys/schemas";
import { createKey, getKey, keysByIds, listKeys, mayCreateKeys, revokeKey, rotateKey } from "../../keys/service";
import { pageOf } from "../../platform/db/pagination";
import type { ApiKey } from "../../platform/db/schema";
import type { ApiError } from "../../platform/errors";
import { fieldErrors, invalidRequest } from "../../platform/errors";
import { emailsOf } from "../../users/service";
import { Balance, LedgerTable } from "./credits";
import { field, formOf, Layout, Notice, Pager, ProblemBox, problemOf, Secret, Table, Time } from "./layout";
import { type Answer, render } from "./render";
import { type DashContext, type DashEnv, needs, signedIn } from "./session";

const PATH = "/dashboard/keys";
const GRACE_CHOICES = [
  { seconds: 0, label: "No grace: the old key stops now" },
  { seconds: 3600, label: "1 hour" },
  { seconds: 86_400, label: "24 hours" },
  { seconds: MAX_GRACE_SECONDS, label: "7 days" },
];
/** The hygiene categories as the keys page names them: the section's line, and the tag a key of it carries. */
const HYGIENE: { name: Exclude<keyof z.infer<typeof KeyHygiene>, "activeKeys">; line: string; tag: string }[] = [
  { name: "leakedActive", line: "reported leaked and still active: rotate or revoke them", tag: "leaked" },
  { name: "neverUsed", line: "never used", tag: "never used" },
  { name: "idle90d", line: "not used for more than 90 days", tag: "idle 90 days" },
  { name: "noExpiry", line: "without an expiry", tag: "no expiry" },
  { name: "olderThanYear", line: "created more than a year ago", tag: "over a year old" },
];

const NOTICES: Record<string, string> = {
  revoked: "The key is revoked: requests with it are refused from now on.",
  adjusted: "The key's credits are adjusted.",
};

type Shown = { title: string; raw: string; note?: string };

/**
 * API keys: the list (members: their own) with each key's own credits, create, rotate with grace, revoke after a
 * confirmation; an admin adjusts a key's credits; a key's credits ledger.
 */
export const keyPages = new Hono<DashEnv>()
  .use(signedIn("full"))
  .get("/", (c) => keysPage(c, { notice: NOTICES[c.req.query("done") ?? ""] ?? null }))
  .post("/", async (c) => {
    const form = await formOf(c);
    const types = c.get("config").resourceTypes;
    const body = newKeyBody(form, types);
    try {
      if (field(form, "access") === "resources" && !types.some((t) => `${t}Ids` in body)) {
        throw invalidRequest([{ field: "resources", message: "name at least one resource id, or choose full access" }]);
      }
      const parsed = NewKey.safeParse(body);
      if (!parsed.success) throw invalidRequest(fieldErrors(parsed.error));
      const { raw, row } = await createKey(c.get("deps"), c.get("principal"), parsed.data, Object.keys(body));
      return keysPage(c, { shown: { title: `Your new key "${row.name}"`, raw } }, 201);
    } catch (err) {
      const problem = problemOf(err);
      return keysPage(c, { problem, form }, problem);
    }
  })
  .get("/:id/revoke", async (c) => {
    const key = await getKey(c.get("deps"), c.get("principal"), c.req.param("id"));
    return confirmPage(c, key, "revoke");
  })
  .post("/:id/revoke", async (c) => {
    const [deps, p] = [c.get("deps"), c.get("principal")];
    const key = await getKey(deps, p, c.req.param("id"));
    try {
      await revokeKey(deps, p, key.id);
    } catch (err) {
      return confirmPage(c, key, "revoke", problemOf(err));
    }
    return c.redirect(`${PATH}?done=revoked`, 303);
  })
  .get("/:id/rotate", async (c) => {
    const key = await getKey(c.get("deps"), c.get("principal"), c.req.param("id"));
    return confirmPage(c, key, "rotate");
  })
  .post("/:id/rotate", async (c) => {
    const [deps, p] = [c.get("deps"), c.get("principal")];
    const key = await getKey(deps, p, c.req.param("id"));
    const form = await formOf(c);
    try {
      const parsed = Rotation.safeParse({ gracePeriodSeconds: Number(field(form, "gracePeriodSeconds") || "0") });
      if (!parsed.success) throw invalidRequest(fieldErrors(parsed.error));
      const { raw, row } = await rotateKey(deps, p, key.id, parsed.data);
      const grace = parsed.data.gracePeriodSeconds;
      const note =
        grace === 0
          ? "The old key no longer works."
          : `The old key keeps working until ${new Date(Date.parse(row.createdAt) + grace * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC.`;
      return keysPage(c, { shown: { title: `The new key replacing "${row.name}"`, raw, note } }, 201);
    } catch (err) {
      return confirmPage(c, key, "rotate", problemOf(err));
    }
  })
  // POST /v1/api-keys/{id}/credits: admins only, refused before the key is looked up, as the API does.
  .post("/:id/credits", needs("admin"), async (c) => {
    const [deps, p] = [c.get("deps"), c.get("principal")];
    const key = await getKey(deps, p, c.req.param("id"));
    const form = await formOf(c);
    try {
      const amount = field(form, "amount");
      const reason = field(form, "reason");
      const parsed = CreditsAdjustment.safeParse({
        operation: field(form, "operation"),
        amount: amount === "" ? undefined : Number(amount),
        ...(reason === "" ? {} : { reason }),
      });
      if (!parsed.success) throw invalidRequest(fieldErrors(parsed.error));
      // The form's own Idempotency-Key, written when the page was drawn: a second click on it applies the change once.
      const once = IdempotencyKey.safeParse(field(form, "idempotencyKey"));
      await adjustKeyCredits(deps, p, key.id, parsed.data, once.success ? once.data : undefined);
    } catch (err) {
      const problem = problemOf(err);
      return keysPage(c, { problem: null, adjusting: { name: key.name, problem } }, problem);
    }
    return c.redirect(`${PATH}?done=adjusted`, 303);
  })
  .get("/:id/ledger", async (c) => {
    const [deps, p] = [c.get("deps"), c.get("principal")];
    const key = await getKey(deps, p, c.req.param("id"));
    const [ledger, balances] = await Promise.all([
      keyLedger(deps, p, key.id, pageOf({ cursor: c.req.query("cursor") })),
      keyBalances(deps, [key]),
    ]);
    const actors = await emailsOf(
      deps,
      p,
      ledger.data.flatMap((e) => (e.actor === null ? [] : [e.actor])),
    );
    const path = `${PATH}/${key.id}/ledger`;
    return render(
      c,
      <Layout title="Credits ledger" who={{ principal: p, email: c.get("email") }} current={PATH}>
        <p>
          <strong>{key.name}</strong> (<code>{`${key.prefix}_${key.start}…`}</code>):{" "}
          <Balance credits={keyView(key, deps.now(), balances).credits} none="no limit of its own" />
        </p>
        <p class="hint">Newest first, in UTC. A minute's spends are one row (Count of them); entries arrive within a minute or so.</p>
        <LedgerTable rows={ledger.data} actors={actors} />
        <Pager path={path} next={ledger.nextCursor} />
        <p>
          <a href={PATH}>Back to the keys</a>
        </p>
      </Layout>,
    );
  });

/**
 * The API's body for a new key from the form: name, full access or `<type>Ids` (ids separated by commas or spaces), an
 * expiry in UTC, a limit. Fields left empty are left out, so the API's defaults apply.
 */
function newKeyBody(form: Record<string, unknown>, types: readonly string[]): Record<string, unknown> {
  const body: Record<string, unknown> = { name: field(form, "name") };
  if (field(form, "access") === "resources") {
    for (const type of types) {
      const ids = field(form, `${type}Ids`)
        .split(/[\s,]+/)
        .filter(Boolean);
      if (ids.length > 0) body[`${type}Ids`] = ids;
    }
  }
  // A datetime-local field has no zone: the form says it is UTC.
  const expires = field(form, "expiresAt");
  if (expires) body.expiresAt = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(expires) ? `${expires}:00Z` : expires;
  const limit = field(form, "limit");
  const windowSeconds = field(form, "windowSeconds");
  if (limit || windowSeconds) body.rateLimit = { limit: Number(limit), windowSeconds: Number(windowSeconds || "60") };
  return body;
}

type KeysState = {
  shown?: Shown;
  problem?: ApiError | null;
  notice?: string | null;
  form?: Record<string, unknown>;
  /** A refused adjustment of a key's credits: the key's name and why. */
  adjusting?: { name: string; problem: ApiError };
};

async function keysPage(c: DashContext, state: KeysState, status: Answer = 200) {
  const [deps, p] = [c.get("deps"), c.get("principal")];
  const { rows, nextCursor } = await listKeys(deps, p, pageOf({ cursor: c.req.query("cursor") }));
  // Admins see every owner (a member's keys are all their own); the keys' own balances live in their objects, asked as
  // GET /v1/api-keys asks them.
  const [canCreate, owners, balances, hygiene] = await Promise.all([
    mayCreateKeys(deps, p),
    p.role === "admin"
      ? emailsOf(
          deps,
          p,
          rows.map((k) => k.ownerId),
        )
      : new Map<string, string>(),
    keyBalances(deps, rows),
    keyHygiene(deps, p),
  ]);
  // Leaked keys that still work are named at the top whichever page of the list they are on.
  const leaked = (await keysByIds(deps, p, hygiene.leakedActive.keyIds)).sort((a, b) => (a.leakedAt ?? "").localeCompare(b.leakedAt ?? ""));
  const tags = (id: string) => HYGIENE.filter((h) => hygiene[h.name].keyIds.includes(id)).map((h) => h.tag);
  const now = deps.now();
  const form = state.form ?? {};
  const types = c.get("config").resourceTypes;
  return render(
    c,
    <Layout title="API keys" who={{ principal: p, email: c.get("email") }} current={PATH}>
      <Notice text={state.notice} />
      {state.shown && (
        <Secret id="new-key" title={state.shown.title} value={state.shown.raw}>
          {state.shown.note && <p>{state.shown.note}</p>}
        </Secret>
      )}
      {leaked.length > 0 && (
        <div class="alert warning" role="alert" id="leaked-keys">
          <p>
            <strong>
              {leaked.length === 1
                ? "A key was reported leaked and still works."
                : `${hygiene.leakedActive.count} keys were reported leaked and still work.`}
            </strong>{" "}
            Anyone who found it can use it: rotate it (a new key replaces it) or revoke it.
          </p>
          <ul>
            {leaked.map((k) => (
              <li data-leaked={k.id}>
                <strong>{k.name}</strong> (<code>{`${k.prefix}_${k.start}…`}</code>) was reported leaked at <Time at={k.leakedAt} />:{" "}
                {k.revokedAt === null && (
                  <>
                    <a href={`${PATH}/${k.id}/rotate`} aria-label={`Rotate the leaked key ${k.name}`}>
                      rotate
                    </a>{" "}
                    or{" "}
                  </>
                )}
                <a class="danger" href={`${PATH}/${k.id}/revoke`} aria-label={`Revoke the leaked key ${k.name}`}>
                  revoke it
                </a>
                .
              </li>
            ))}
          </ul>
        </div>
      )}
      <section aria-labelledby="keys-title">
        <h2 id="keys-title">{p.role === "admin" ? "Keys of this account" : "Your keys"}</h2>
        {state.adjusting && (
          <>
            <p>{`The credits of "${state.adjusting.name}" were not changed:`}</p>
            <ProblemBox problem={state.adjusting.problem} />
          </>
        )}
        {rows.length === 0 ? (
          <p class="muted">No keys yet.</p>
        ) : (
          <Table columns={["Name", "Key", "Scope", "Status", "Credits", p.role === "admin" && "Owner", "Created", "Last used", ""]}>
            {rows.map((k) => {
              const { status, credits } = keyView(k, now, balances);
              const scheduled = status === "active" && k.revokedAt !== null;
              return (
                <tr>
                  <td>{k.name}</td>
                  <td>
                    <code>{`${k.prefix}_${k.start}…`}</code>
                  </td>
                  <td>
                    <Scope scopes={JSON.parse(k.scopes) as string[]} />
                  </td>
                  <td>
                    <span class={`status ${status}`}>{status}</span>
                    {scheduled && (
                      <span class="hint">
                        {" "}
                        until <Time at={k.revokedAt} />
                      </span>
                    )}
                    {status === "active" && k.expiresAt !== null && !scheduled && (
                      <span class="hint">
                        {" "}
                        expires <Time at={k.expiresAt} />
                      </span>
                    )}
                    {status === "active" && k.leakedAt !== null && (
                      <>
                        {" "}
                        <span class="status leaked">leaked</span>
                      </>
                    )}
                    {status === "active" && (
                      <div>
                        {tags(k.id)
                          .filter((t) => t !== "leaked")
                          .map((t) => (
                            <span class="tag">{t}</span>
                          ))}
                      </div>
                    )}
                  </td>
                  <td data-credits={k.id}>
                    <Balance credits={credits} none="no limit of its own" />
                    {credits !== null && (
                      <>
                        {" "}
                        <a href={`${PATH}/${k.id}/ledger`} aria-label={`Credits ledger of ${k.name}`}>
                          Ledger
                        </a>
                      </>
                    )}
                    {credits !== null && p.role === "admin" && status === "active" && <AdjustForm id={k.id} name={k.name} />}
                  </td>
                  {p.role === "admin" && <td>{owners.get(k.ownerId) ?? k.ownerId}</td>}
                  <td>
                    <Time at={k.createdAt} />
                  </td>
                  <td>
                    <Time at={k.lastUsedAt} />
                  </td>
                  <td class="actions">
                    {status === "active" && !scheduled && (
                      <a href={`${PATH}/${k.id}/rotate`} aria-label={`Rotate ${k.name}`}>
                        Rotate
                      </a>
                    )}
                    {status === "active" && (
                      <a class="danger" href={`${PATH}/${k.id}/revoke`} aria-label={`Revoke ${k.name}`}>
                        Revoke
                      </a>
                    )}
                  </td>
                </tr>
              );
            })}
          </Table>
        )}
        <Pager path={PATH} next={nextCursor} />
      </section>
      <section aria-labelledby="hygiene-title" id="key-hygiene">
        <h2 id="hygiene-title">Key hygiene</h2>
        <p class="hint">
          {`Of ${p.role === "admin" ? "the account's" : "your"} ${hygiene.activeKeys} active ${hygiene.activeKeys === 1 ? "key" : "keys"}; the list above tags the oldest ${HYGIENE_IDS} keys of each. GET /v1/account/key-hygiene answers the same with their ids.`}
        </p>
        <dl class="hygiene">
          {HYGIENE.map((h) => (
            <>
              <dt data-hygiene={h.name}>{String(hygiene[h.name].count)}</dt>
              <dd>{h.line}</dd>
            </>
          ))}
        </dl>
      </section>
      <section aria-labelledby="create-title">
        <h2 id="create-title">Create a key</h2>
        <ProblemBox problem={state.problem} />
        {canCreate ? (
          <form class="card" method="post" action={PATH}>
            <label for="name">Name</label>
            <input id="name" name="name" required maxlength={100} value={field(form, "name")} />
            <fieldset>
              <legend>Access</legend>
              <label class="choice">
                <input type="radio" name="access" value="full" checked={field(form, "access") !== "resources"} /> Full access
                {p.role === "member" && " (within your grants)"}
              </label>
              <label class="choice">
                <input type="radio" name="access" value="resources" checked={field(form, "access") === "resources"} /> Only these resources
              </label>
              {types.map((t) => (
                <>
                  <label for={`${t}Ids`}>{`${t[0]?.toUpperCase()}${t.slice(1)} ids`}</label>
                  <input id={`${t}Ids`} name={`${t}Ids`} placeholder="ids, separated by commas" value={field(form, `${t}Ids`)} />
                </>
              ))}
            </fieldset>
            <label for="expiresAt">Expires (UTC, optional)</label>
            <input id="expiresAt" name="expiresAt" type="datetime-local" value={field(form, "expiresAt")} />
            <fieldset>
              <legend>Rate limit (optional; the account's default otherwise)</legend>
              <div class="row">
                <div>
                  <label for="limit">Requests</label>
                  <input id="limit" name="limit" type="number" min={1} value={field(form, "limit")} />
                </div>
                <div>
                  <label for="windowSeconds">Per seconds</label>
                  <input id="windowSeconds" name="windowSeconds" type="number" min={1} value={field(form, "windowSeconds")} />
                </div>
              </div>
            </fieldset>
            <button type="submit">Create key</button>
          </form>
        ) : (
          <p class="muted">Only account admins can create API keys in this account.</p>
        )}
      </section>
    </Layout>,
    status,
  );
}

/**
 * An admin's change to a key's credits, as POST /v1/api-keys/{id}/credits takes it, folded until opened. It carries an
 * Idempotency-Key of its own, so a form sent twice (a double click) changes the balance once.
 */
const AdjustForm = ({ id, name }: { id: string; name: string }) => (
  <details class="adjust">
    <summary>Adjust</summary>
    <form class="adjust-form" method="post" action={`${PATH}/${id}/credits`}>
      <input type="hidden" name="idempotencyKey" value={crypto.randomUUID()} />
      <select name="operation" aria-label={`How to adjust the credits of ${name}`}>
        <option value="add">add</option>
        <option value="subtract">subtract</option>
        <option value="set">set to</option>
      </select>
      <input name="amount" type="number" min={0} step={1} required aria-label="Amount" />
      <input name="reason" maxlength={200} placeholder="reason (optional)" aria-label="Reason" />
      <button type="submit">Apply</button>
    </form>
  </details>
);

const Scope = ({ scopes }: { scopes: string[] }) =>
  scopes.includes(FULL_ACCESS) ? (
    <span>Full access</span>
  ) : (
    <ul class="plain">
      {scopes.map((s) => (
        <li>
          <code>{s}</code>
        </li>
      ))}
    </ul>
  );

/** The confirmation step of a revocation or a rotation: what happens, and the one button that does it. */
function confirmPage(c: DashContext, key: ApiKey, action: "revoke" | "rotate", problem?: ApiError) {
  const label = `${key.prefix}_${key.start}…`;
  return render(
    c,
    <Layout
      title={action === "revoke" ? "Revoke a key" : "Rotate a key"}
      who={{ principal: c.get("principal"), email: c.get("email") }}
      current={PATH}
    >
      <ProblemBox problem={problem} />
      <form class="card narrow" method="post" action={`${PATH}/${key.id}/${action}`}>
        <p>
          {action === "revoke" ? "Revoke" : "Rotate"} <strong>{key.name}</strong> (<code>{label}</code>)?
        </p>
        {action === "revoke" ? (
          <p>Requests with this key are refused from now on. A revoked key never works again.</p>
        ) : (
          <>
            <p>A new key with the same name, scope, owner, expiry and limit replaces it; it is shown once.</p>
            <label for="gracePeriodSeconds">The old key keeps working for</label>
            <select id="gracePeriodSeconds" name="gracePeriodSeconds">
              {GRACE_CHOICES.map((g) => (
                <option value={String(g.seconds)}>{g.label}</option>
              ))}
            </select>
          </>
        )}
        <div class="buttons">
          <button type="submit" class={action === "revoke" ? "danger" : undefined}>
            {action === "revoke" ? "Revoke key" : "Rotate key"}
          </button>
          <a href={PATH}>Cancel</a>
        </div>
      </form>
    </Layout>,
    problem ?? 200,
  );
}
