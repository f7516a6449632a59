import { Hono } from "hono";
import { pageOf } from "../../platform/db/pagination";
import type { Webhook } from "../../platform/db/schema";
import type { ApiError } from "../../platform/errors";
import { fieldErrors, invalidRequest } from "../../platform/errors";
import { deliveryView, EVENT_TYPES, NewWebhook, WebhookChange, webhookView } from "../../webhooks/schemas";
import {
  createWebhook,
  deleteWebhook,
  getWebhook,
  listDeliveries,
  listWebhooks,
  retryDelivery,
  rotateSecret,
  testWebhook,
  updateWebhook,
} from "../../webhooks/service";
import { Enabled, field, formOf, Layout, Notice, Pager, ProblemBox, problemOf, Secret, Table, Time } from "./layout";
import { type Answer, render } from "./render";
import { type DashContext, type DashEnv, signedIn } from "./session";

const PATH = "/dashboard/webhooks";
const NOTICES: Record<string, string> = {
  disabled: "The endpoint is disabled: nothing more is sent to it until it is enabled.",
  enabled: "The endpoint is enabled again.",
  deleted: "The endpoint is deleted: nothing more is sent to it.",
  tested: "A webhook.test event is on its way to the endpoint; its delivery shows below within seconds.",
  retried: "The delivery is sent again now; its new attempt shows below within seconds.",
};
/** Unlike a key's, a webhook's secret is kept as it is: Keygate signs every delivery with it. */
const KEPT = "Keygate keeps it to sign deliveries and never shows it again.";
const REASONS: Record<string, string> = {
  by_admin: "disabled by an admin",
  gone: "the endpoint answered 410 Gone",
  failing: "every delivery failed for 24 hours",
};

/**
 * Webhook endpoints, for admins: the list, add one (its secret shown once), and per endpoint its deliveries with every
 * attempt, a delivery sent again, a test event, a new secret (shown once), disable and enable, delete after a
 * confirmation. Each action is the webhooks service's, as the API's routes call it.
 */
export const webhookPages = new Hono<DashEnv>()
  .use(signedIn("admin"))
  .get("/", (c) => webhooksPage(c, { notice: NOTICES[c.req.query("done") ?? ""] ?? null }))
  .post("/", async (c) => {
    const form = await formOf(c, { all: true });
    try {
      const description = field(form, "description");
      const parsed = NewWebhook.safeParse({
        url: field(form, "url"),
        events: eventsOf(form),
        ...(description === "" ? {} : { description }),
        ed25519: field(form, "ed25519") === "on",
      });
      if (!parsed.success) throw invalidRequest(fieldErrors(parsed.error));
      const webhook = await createWebhook(c.get("deps"), c.get("principal"), parsed.data, new URL(c.req.url).origin);
      return webhooksPage(c, { created: webhook }, 201);
    } catch (err) {
      const problem = problemOf(err);
      return webhooksPage(c, { problem, form }, problem);
    }
  })
  .get("/:id", async (c) =>
    webhookPage(c, await getWebhook(c.get("deps"), c.get("principal"), c.req.param("id")), {
      notice: NOTICES[c.req.query("done") ?? ""] ?? null,
    }),
  )
  .post("/:id/test", async (c) => {
    const webhook = await getWebhook(c.get("deps"), c.get("principal"), c.req.param("id"));
    await testWebhook(c.get("deps"), c.get("principal"), webhook.id);
    return c.redirect(`${PATH}/${webhook.id}?done=tested`, 303);
  })
  .post("/:id/secret", async (c) => {
    const webhook = await getWebhook(c.get("deps"), c.get("principal"), c.req.param("id"));
    try {
      const rotated = await rotateSecret(c.get("deps"), c.get("principal"), webhook.id);
      return webhookPage(c, rotated, { secret: rotated.secret }, 201);
    } catch (err) {
      const problem = problemOf(err);
      return webhookPage(c, webhook, { problem }, problem);
    }
  })
  .post("/:id/disable", (c) => changeWebhook(c, { disabled: true }, "disabled"))
  .post("/:id/enable", (c) => changeWebhook(c, { disabled: false }, "enabled"))
  .get("/:id/delete", async (c) => deletePage(c, await getWebhook(c.get("deps"), c.get("principal"), c.req.param("id"))))
  .post("/:id/delete", async (c) => {
    const webhook = await getWebhook(c.get("deps"), c.get("principal"), c.req.param("id"));
    await deleteWebhook(c.get("deps"), c.get("principal"), webhook.id);
    return c.redirect(`${PATH}?done=deleted`, 303);
  })
  .post("/:id/deliveries/:deliveryId/retry", async (c) => {
    const webhook = await getWebhook(c.get("deps"), c.get("principal"), c.req.param("id"));
    await retryDelivery(c.get("deps"), c.get("principal"), webhook.id, c.req.param("deliveryId"));
    return c.redirect(`${PATH}/${webhook.id}?done=retried`, 303);
  });

/** The checked event types: every `events` checkbox; "all" (`*`) stands for every type. */
function eventsOf(form: Record<string, unknown>): string[] {
  const value = form.events;
  const list = Array.isArray(value) ? value : value === undefined ? [] : [value];
  return list.filter((v): v is string => typeof v === "string");
}

async function changeWebhook(c: DashContext, change: { disabled: boolean }, done: string) {
  const [deps, p] = [c.get("deps"), c.get("principal")];
  const webhook = await getWebhook(deps, p, c.req.param("id") ?? "");
  try {
    const parsed = WebhookChange.safeParse(change);
    if (!parsed.success) throw invalidRequest(fieldErrors(parsed.error));
    await updateWebhook(deps, p, webhook.id, parsed.data, new URL(c.req.url).origin);
  } catch (err) {
    const problem = problemOf(err);
    return webhookPage(c, webhook, { problem }, problem);
  }
  return c.redirect(`${PATH}/${webhook.id}?done=${done}`, 303);
}

/** An endpoint's status as people read it: enabled, failing since when, or disabled and why. */
const Status = ({ webhook }: { webhook: Webhook }) => (
  <>
    <Enabled disabled={webhook.disabledAt !== null} />
    {webhook.disabledAt !== null && (
      <span class="hint">
        {" "}
        {REASONS[webhook.disabledReason ?? ""] ?? webhook.disabledReason}, since <Time at={webhook.disabledAt} />
      </span>
    )}
    {webhook.disabledAt === null && webhook.failingSince !== null && (
      <span class="hint">
        {" "}
        failing since <Time at={webhook.failingSince} />
      </span>
    )}
  </>
);

const Events = ({ events }: { events: string[] }) =>
  events.includes("*") ? (
    <span>All events</span>
  ) : (
    <ul class="plain">
      {events.map((e) => (
        <li>
          <code>{e}</code>
        </li>
      ))}
    </ul>
  );

type ListState = {
  created?: Webhook;
  problem?: ApiError | null;
  notice?: string | null;
  form?: Record<string, unknown>;
};

async function webhooksPage(c: DashContext, state: ListState, status: Answer = 200) {
  const p = c.get("principal");
  const { rows, nextCursor } = await listWebhooks(c.get("deps"), p, pageOf({ cursor: c.req.query("cursor") }));
  const form = state.form ?? {};
  const checked = new Set(eventsOf(form));
  return render(
    c,
    <Layout title="Webhooks" who={{ principal: p, email: c.get("email") }} current={PATH}>
      <Notice text={state.notice} />
      {state.created && (
        <Secret id="webhook-secret" title={`Signing secret of ${state.created.url}`} value={state.created.secret} kept={KEPT}>
          <p>
            Your receiver verifies each delivery's <code>webhook-signature</code> with it. The endpoint's id is{" "}
            <code>{state.created.id}</code>.
          </p>
        </Secret>
      )}
      {rows.length === 0 ? (
        <p class="muted">No endpoints yet. An endpoint receives signed events when keys, balances or people change.</p>
      ) : (
        <Table columns={["URL", "Events", "Status", "Created", ""]}>
          {rows.map((w) => (
            <tr>
              <td>
                <code>{w.url}</code>
                {w.description && <div class="hint">{w.description}</div>}
              </td>
              <td>
                <Events events={webhookView(w).events} />
              </td>
              <td>
                <Status webhook={w} />
              </td>
              <td>
                <Time at={w.createdAt} />
              </td>
              <td class="actions">
                <a href={`${PATH}/${w.id}`} aria-label={`Manage ${w.url}`}>
                  Manage
                </a>
              </td>
            </tr>
          ))}
        </Table>
      )}
      <Pager path={PATH} next={nextCursor} />
      <section aria-labelledby="create-title">
        <h2 id="create-title">Add an endpoint</h2>
        <ProblemBox problem={state.problem} />
        <form class="card" method="post" action={PATH}>
          <label for="url">URL</label>
          <input
            id="url"
            name="url"
            type="url"
            required
            maxlength={2048}
            placeholder="https://hooks.example.com/keygate"
            value={field(form, "url")}
          />
          <fieldset>
            <legend>Events</legend>
            <label class="choice">
              <input type="checkbox" name="events" value="*" checked={checked.has("*")} /> All events, also those added later
            </label>
            {EVENT_TYPES.map((type) => (
              <label class="choice">
                <input type="checkbox" name="events" value={type} checked={checked.has(type)} /> <code>{type}</code>
              </label>
            ))}
          </fieldset>
          <label for="description">Description (optional)</label>
          <input id="description" name="description" maxlength={200} value={field(form, "description")} />
          <label class="choice">
            <input type="checkbox" name="ed25519" checked={field(form, "ed25519") === "on"} /> Also sign with Keygate's Ed25519 key (
            <code>v1a,</code>), published in <code>/.well-known/jwks.json</code>
          </label>
          <button type="submit">Add endpoint</button>
        </form>
      </section>
    </Layout>,
    status,
  );
}

type EndpointState = { secret?: string; problem?: ApiError; notice?: string | null };

async function webhookPage(c: DashContext, webhook: Webhook, state: EndpointState, status: Answer = 200) {
  const [deps, p] = [c.get("deps"), c.get("principal")];
  const deliveries = await listDeliveries(deps, p, webhook.id, pageOf({ cursor: c.req.query("cursor") }));
  const view = webhookView(webhook);
  const here = `${PATH}/${webhook.id}`;
  return render(
    c,
    <Layout title="Webhook endpoint" who={{ principal: p, email: c.get("email") }} current={PATH}>
      <Notice text={state.notice} />
      <ProblemBox problem={state.problem} />
      {state.secret && (
        <Secret id="webhook-secret" title="The endpoint's new signing secret" value={state.secret} kept={KEPT}>
          <p>For 24 hours the old secret signs beside it, so your receiver can switch without missing a delivery.</p>
        </Secret>
      )}
      <p>
        <a href={PATH}>← All endpoints</a> · <code>{webhook.id}</code>
      </p>
      <dl class="card">
        <dt>URL</dt>
        <dd>
          <code>{webhook.url}</code>
        </dd>
        {webhook.description && (
          <>
            <dt>Description</dt>
            <dd>{webhook.description}</dd>
          </>
        )}
        <dt>Events</dt>
        <dd>
          <Events events={view.events} />
        </dd>
        <dt>Status</dt>
        <dd>
          <Status webhook={webhook} />
        </dd>
        <dt>Created</dt>
        <dd>
          <Time at={webhook.createdAt} />
        </dd>
      </dl>
      <div class="buttons">
        <form method="post" action={`${here}/test`}>
          <button type="submit">Send a test event</button>
        </form>
        <form method="post" action={`${here}/secret`} data-confirm="Make a new signing secret? The old one keeps signing for 24 hours.">
          <button type="submit">Rotate secret</button>
        </form>
        {webhook.disabledAt === null ? (
          <form method="post" action={`${here}/disable`} data-confirm="Disable this endpoint? Nothing is sent to it until it is enabled.">
            <button type="submit" class="danger">
              Disable
            </button>
          </form>
        ) : (
          <form method="post" action={`${here}/enable`}>
            <button type="submit">Enable</button>
          </form>
        )}
        <a class="danger" href={`${here}/delete`}>
          Delete
        </a>
      </div>
      <section aria-labelledby="deliveries-title">
        <h2 id="deliveries-title">Deliveries</h2>
        {deliveries.data.length === 0 ? (
          <p class="muted">Nothing delivered yet.</p>
        ) : (
          <Table columns={["Event", "Status", "Attempts", "Next attempt", "Created", ""]}>
            {deliveries.data.map((row) => {
              const d = deliveryView(row, deliveries.attempts(row.id));
              return (
                <tr data-delivery={d.id}>
                  <td>
                    <code>{d.eventType}</code>
                    <div class="hint">
                      <code>{d.eventId}</code>
                    </div>
                  </td>
                  <td>
                    <span class={`status ${d.status}`}>{d.status}</span>
                  </td>
                  <td>
                    {d.attempts.length === 0 ? (
                      <span class="muted">None yet</span>
                    ) : (
                      <ol class="plain">
                        {d.attempts.map((a) => (
                          <li>
                            <Time at={a.at} />: {a.statusCode === null ? (a.error ?? "no answer") : `HTTP ${a.statusCode}`}
                            {a.statusCode !== null && a.error && ` (${a.error})`}
                            {`, ${a.durationMs} ms`}
                          </li>
                        ))}
                      </ol>
                    )}
                  </td>
                  <td>
                    <Time at={d.nextAttemptAt} empty="—" />
                  </td>
                  <td>
                    <Time at={d.createdAt} />
                  </td>
                  <td class="actions">
                    <form method="post" action={`${here}/deliveries/${d.id}/retry`}>
                      <button type="submit" class="link" aria-label={`Send ${d.eventType} again`}>
                        Retry
                      </button>
                    </form>
                  </td>
                </tr>
              );
            })}
          </Table>
        )}
        <Pager path={here} next={deliveries.nextCursor} />
      </section>
    </Layout>,
    status,
  );
}

/** The confirmation step of a deletion: what happens, and the one button that does it. */
function deletePage(c: DashContext, webhook: Webhook) {
  return render(
    c,
    <Layout title="Delete an endpoint" who={{ principal: c.get("principal"), email: c.get("email") }} current={PATH}>
      <form class="card narrow" method="post" action={`${PATH}/${webhook.id}/delete`}>
        <p>
          Delete the endpoint <code>{webhook.url}</code>?
        </p>
        <p>Nothing more is sent to it, its pending deliveries are dropped, and its deliveries are no longer shown.</p>
        <div class="buttons">
          <button type="submit" class="danger">
            Delete endpoint
          </button>
          <a href={`${PATH}/${webhook.id}`}>Cancel</a>
        </div>
      </form>
    </Layout>,
  );
}
