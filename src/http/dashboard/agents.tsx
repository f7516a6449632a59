import { Hono } from "hono";
import { AgentChange, agentView, NewAgent } from "../../agents/schemas";
import { createAgent, getAgent, listAgents, updateAgent } from "../../agents/service";
import { DEFAULT_TOKEN_TTL_SECONDS } from "../../agents/store";
import { pageOf } from "../../platform/db/pagination";
import type { Agent } from "../../platform/db/schema";
import type { ApiError } from "../../platform/errors";
import { fieldErrors, invalidRequest } from "../../platform/errors";
import { Enabled, field, formOf, Layout, Notice, Pager, ProblemBox, problemOf, Secret, Table, Time } from "./layout";
import { type Answer, render } from "./render";
import { type DashContext, type DashEnv, signedIn } from "./session";

const PATH = "/dashboard/agents";
const NOTICES: Record<string, string> = {
  saved: "Saved.",
  disabled: "The agent is disabled: its tokens are refused from their next request on.",
  enabled: "The agent is enabled again.",
};

/** Browser widgets (agents), for admins: register, allowed origins, token lifetime, disable. */
export const agentPages = new Hono<DashEnv>()
  .use(signedIn("admin"))
  .get("/", (c) => agentsPage(c, { notice: NOTICES[c.req.query("done") ?? ""] ?? null }))
  .post("/", async (c) => {
    const form = await formOf(c);
    try {
      const parsed = NewAgent.safeParse({
        name: field(form, "name"),
        allowedOrigins: lines(field(form, "allowedOrigins")),
        tokenTtlSeconds: Number(field(form, "tokenTtlSeconds") || DEFAULT_TOKEN_TTL_SECONDS),
      });
      if (!parsed.success) throw invalidRequest(fieldErrors(parsed.error));
      const agent = await createAgent(c.get("deps"), c.get("principal"), parsed.data);
      return agentsPage(c, { created: agent }, 201);
    } catch (err) {
      const problem = problemOf(err);
      return agentsPage(c, { problem, form }, problem);
    }
  })
  .get("/:id", async (c) => agentPage(c, await getAgent(c.get("deps"), c.get("principal"), c.req.param("id"))))
  .post("/:id", async (c) => {
    const agent = await getAgent(c.get("deps"), c.get("principal"), c.req.param("id"));
    const form = await formOf(c);
    return changeAgent(
      c,
      agent,
      {
        name: field(form, "name"),
        allowedOrigins: lines(field(form, "allowedOrigins")),
        tokenTtlSeconds: Number(field(form, "tokenTtlSeconds")),
      },
      "saved",
    );
  })
  .post("/:id/disable", async (c) => {
    const agent = await getAgent(c.get("deps"), c.get("principal"), c.req.param("id"));
    return changeAgent(c, agent, { disabled: true }, "disabled");
  })
  .post("/:id/enable", async (c) => {
    const agent = await getAgent(c.get("deps"), c.get("principal"), c.req.param("id"));
    return changeAgent(c, agent, { disabled: false }, "enabled");
  });

/** One origin per line (commas and spaces separate too). */
function lines(text: string): string[] {
  return text.split(/[\s,]+/).filter(Boolean);
}

async function changeAgent(c: DashContext, agent: Agent, change: Record<string, unknown>, done: string) {
  try {
    const parsed = AgentChange.safeParse(change);
    if (!parsed.success) throw invalidRequest(fieldErrors(parsed.error));
    await updateAgent(c.get("deps"), c.get("principal"), agent.id, parsed.data);
  } catch (err) {
    const problem = problemOf(err);
    return agentPage(c, agent, problem, problem);
  }
  return c.redirect(`${PATH}?done=${done}`, 303);
}

type AgentsState = { created?: Agent; problem?: ApiError | null; notice?: string | null; form?: Record<string, unknown> };

async function agentsPage(c: DashContext, state: AgentsState, status: Answer = 200) {
  const p = c.get("principal");
  const { rows, nextCursor } = await listAgents(c.get("deps"), p, pageOf({ cursor: c.req.query("cursor") }));
  const form = state.form ?? {};
  return render(
    c,
    <Layout title="Agents" who={{ principal: p, email: c.get("email") }} current={PATH}>
      <Notice text={state.notice} />
      {state.created?.identitySecret && (
        <Secret id="identity-secret" title={`Identity secret of "${state.created.name}"`} value={state.created.identitySecret}>
          <p>
            Your backend signs end-user ids with it. The agent's public id is <code>{state.created.id}</code>.
          </p>
        </Secret>
      )}
      {rows.length === 0 ? (
        <p class="muted">No agents yet. An agent lets a chat widget on your site get short-lived tokens.</p>
      ) : (
        <Table columns={["Name", "Id", "Allowed origins", "Token lifetime", "Status", "Created", ""]}>
          {rows.map((a) => {
            const view = agentView(a);
            return (
              <tr>
                <td>{a.name}</td>
                <td>
                  <code>{a.id}</code>
                </td>
                <td>
                  <ul class="plain">
                    {view.allowedOrigins.map((o) => (
                      <li>
                        <code>{o}</code>
                      </li>
                    ))}
                  </ul>
                </td>
                <td>{`${a.tokenTtlSeconds} s`}</td>
                <td>
                  <Enabled disabled={a.disabled} />
                </td>
                <td>
                  <Time at={a.createdAt} />
                </td>
                <td class="actions">
                  <a href={`${PATH}/${a.id}`} aria-label={`Manage ${a.name}`}>
                    Manage
                  </a>
                </td>
              </tr>
            );
          })}
        </Table>
      )}
      <Pager path={PATH} next={nextCursor} />
      <section aria-labelledby="create-title">
        <h2 id="create-title">Register an agent</h2>
        <ProblemBox problem={state.problem} />
        <AgentForm action={PATH} name={field(form, "name")} origins={field(form, "allowedOrigins")} ttl={field(form, "tokenTtlSeconds")} />
      </section>
    </Layout>,
    status,
  );
}

const AgentForm = ({ action, name, origins, ttl }: { action: string; name: string; origins: string; ttl: string }) => (
  <form class="card" method="post" action={action}>
    <label for="name">Name</label>
    <input id="name" name="name" required maxlength={100} value={name} />
    <label for="allowedOrigins">Allowed origins, one per line</label>
    <textarea id="allowedOrigins" name="allowedOrigins" rows={3} required aria-describedby="origins-hint">
      {origins}
    </textarea>
    <p id="origins-hint" class="hint">
      Exactly as browsers send them, e.g. <code>https://shop.example</code>.
    </p>
    <label for="tokenTtlSeconds">Token lifetime (seconds)</label>
    <input id="tokenTtlSeconds" name="tokenTtlSeconds" type="number" min={60} value={ttl || String(DEFAULT_TOKEN_TTL_SECONDS)} />
    <button type="submit">Save</button>
  </form>
);

function agentPage(c: DashContext, agent: Agent, problem?: ApiError, status: Answer = 200) {
  const view = agentView(agent);
  return render(
    c,
    <Layout title={agent.name} who={{ principal: c.get("principal"), email: c.get("email") }} current={PATH}>
      <ProblemBox problem={problem} />
      <p>
        <a href={PATH}>← All agents</a> · <code>{agent.id}</code>
      </p>
      <AgentForm
        action={`${PATH}/${agent.id}`}
        name={agent.name}
        origins={view.allowedOrigins.join("\n")}
        ttl={String(agent.tokenTtlSeconds)}
      />
      <h2>Access</h2>
      {agent.disabled ? (
        <form method="post" action={`${PATH}/${agent.id}/enable`}>
          <button type="submit">Enable agent</button>
        </form>
      ) : (
        <form method="post" action={`${PATH}/${agent.id}/disable`} data-confirm={`Disable ${agent.name}? Its tokens stop working.`}>
          <button type="submit" class="danger">
            Disable agent
          </button>
        </form>
      )}
    </Layout>,
    status,
  );
}
