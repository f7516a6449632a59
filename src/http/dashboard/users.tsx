import { Hono } from "hono";
import { FULL_ACCESS } from "../../core/grants";
import type { Invitation } from "../../people/invitations";
import { pageOf } from "../../platform/db/pagination";
import type { User } from "../../platform/db/schema";
import type { ApiError } from "../../platform/errors";
import { fieldErrors, invalidRequest } from "../../platform/errors";
import { NewUser, UserChange, userView } from "../../users/schemas";
import { createUser, getUser, listUsers, reinvite, updateUser } from "../../users/service";
import { Enabled, field, formOf, Layout, Notice, Pager, ProblemBox, problemOf, Secret, Table, Time } from "./layout";
import { type Answer, render } from "./render";
import { type DashContext, type DashEnv, signedIn } from "./session";

const PATH = "/dashboard/users";
const NOTICES: Record<string, string> = {
  saved: "Saved. The user's keys act with the change from now on.",
  disabled: "The user is disabled: their keys and sessions stop working.",
  enabled: "The user is enabled again.",
};

/** Users of the account, for admins: invite (the link shown once), role and grants, disable, a new invitation. */
export const userPages = new Hono<DashEnv>()
  .use(signedIn("admin"))
  .get("/", (c) => usersPage(c, { notice: NOTICES[c.req.query("done") ?? ""] ?? null }))
  .post("/", async (c) => {
    const form = await formOf(c);
    try {
      const parsed = NewUser.safeParse({ email: field(form, "email"), role: field(form, "role") });
      if (!parsed.success) throw invalidRequest(fieldErrors(parsed.error));
      const { user, invitation } = await createUser(c.get("deps"), c.get("principal"), parsed.data, new URL(c.req.url));
      return usersPage(c, { invited: { email: user.email, invitation } }, 201);
    } catch (err) {
      const problem = problemOf(err);
      return usersPage(c, { problem, form }, problem);
    }
  })
  .get("/:id", async (c) => userPage(c, await getUser(c.get("deps"), c.get("principal"), c.req.param("id")), {}))
  .post("/:id", async (c) => {
    const user = await getUser(c.get("deps"), c.get("principal"), c.req.param("id"));
    const form = await formOf(c);
    const grants = field(form, "grants")
      .split(/[\s,]+/)
      .filter(Boolean);
    const role = field(form, "role");
    const change = { role, ...(role === "member" ? { grants: grants.length > 0 ? grants : [FULL_ACCESS] } : {}) };
    return changeUser(c, user, change, "saved");
  })
  .post("/:id/disable", async (c) => {
    const user = await getUser(c.get("deps"), c.get("principal"), c.req.param("id"));
    return changeUser(c, user, { disabled: true }, "disabled");
  })
  .post("/:id/enable", async (c) => {
    const user = await getUser(c.get("deps"), c.get("principal"), c.req.param("id"));
    return changeUser(c, user, { disabled: false }, "enabled");
  })
  .post("/:id/invitation", async (c) => {
    const user = await getUser(c.get("deps"), c.get("principal"), c.req.param("id"));
    const invitation = await reinvite(c.get("deps"), c.get("principal"), user.id, new URL(c.req.url));
    return userPage(c, user, { invitation }, 201);
  });

/** A change through the users service (its guards: the last admin, the last lasting key), or the page with its problem. */
async function changeUser(c: DashContext, user: User, change: Record<string, unknown>, done: string) {
  try {
    const parsed = UserChange.safeParse(change);
    if (!parsed.success) throw invalidRequest(fieldErrors(parsed.error));
    await updateUser(c.get("deps"), c.get("principal"), user.id, parsed.data);
  } catch (err) {
    const problem = problemOf(err);
    return userPage(c, user, { problem }, problem);
  }
  return c.redirect(`${PATH}?done=${done}`, 303);
}

const InvitationLink = ({ email, invitation }: { email: string; invitation: Invitation }) => (
  <Secret id="invitation-link" title={`Invitation for ${email}`} value={invitation.url}>
    <p>
      Send this link to {email}: it sets their password once, until <Time at={invitation.expiresAt} />. Any earlier link of theirs no longer
      works.
    </p>
  </Secret>
);

type UsersState = {
  invited?: { email: string; invitation: Invitation };
  problem?: ApiError | null;
  notice?: string | null;
  form?: Record<string, unknown>;
};

async function usersPage(c: DashContext, state: UsersState, status: Answer = 200) {
  const p = c.get("principal");
  const { rows, nextCursor } = await listUsers(c.get("deps"), p, pageOf({ cursor: c.req.query("cursor") }));
  const form = state.form ?? {};
  return render(
    c,
    <Layout title="Users" who={{ principal: p, email: c.get("email") }} current={PATH}>
      <Notice text={state.notice} />
      {state.invited && <InvitationLink {...state.invited} />}
      <Table columns={["Email", "Role", "Status", "Grants", "Created", ""]}>
        {rows.map((u) => {
          const view = userView(u);
          return (
            <tr>
              <td>{u.email}</td>
              <td>{u.role}</td>
              <td>
                <Enabled disabled={u.disabled} />
              </td>
              <td>{view.grants.includes(FULL_ACCESS) ? "Everything" : view.grants.join(", ")}</td>
              <td>
                <Time at={u.createdAt} />
              </td>
              <td class="actions">
                <a href={`${PATH}/${u.id}`} aria-label={`Manage ${u.email}`}>
                  Manage
                </a>
              </td>
            </tr>
          );
        })}
      </Table>
      <Pager path={PATH} next={nextCursor} />
      <section aria-labelledby="invite-title">
        <h2 id="invite-title">Invite a user</h2>
        <ProblemBox problem={state.problem} />
        <form class="card narrow" method="post" action={PATH}>
          <label for="email">Email</label>
          <input id="email" name="email" type="email" required value={field(form, "email")} />
          <label for="role">Role</label>
          <select id="role" name="role">
            <option value="member" selected={field(form, "role") !== "admin"}>
              Member: their own keys
            </option>
            <option value="admin" selected={field(form, "role") === "admin"}>
              Admin: every key, users and agents
            </option>
          </select>
          <button type="submit">Invite</button>
        </form>
      </section>
    </Layout>,
    status,
  );
}

type UserState = { problem?: ApiError | null; invitation?: Invitation };

function userPage(c: DashContext, user: User, state: UserState, status: Answer = 200) {
  const p = c.get("principal");
  const view = userView(user);
  return render(
    c,
    <Layout title={user.email} who={{ principal: p, email: c.get("email") }} current={PATH}>
      <ProblemBox problem={state.problem} />
      {state.invitation && <InvitationLink email={user.email} invitation={state.invitation} />}
      <p>
        <a href={PATH}>← All users</a>
      </p>
      <form class="card" method="post" action={`${PATH}/${user.id}`}>
        <label for="role">Role</label>
        <select id="role" name="role">
          <option value="member" selected={user.role === "member"}>
            Member
          </option>
          <option value="admin" selected={user.role === "admin"}>
            Admin
          </option>
        </select>
        <label for="grants">Grants (members)</label>
        <input
          id="grants"
          name="grants"
          value={view.grants.join(", ")}
          aria-describedby="grants-hint"
          placeholder="* or project:warehouse, mailbox:mbx_1"
        />
        <p id="grants-hint" class="hint">
          What a member's keys may reach: <code>*</code> for everything, or grants such as <code>project:warehouse</code>. Admins hold every
          grant.
        </p>
        <button type="submit">Save</button>
      </form>
      <h2>Access</h2>
      <div class="buttons">
        {user.disabled ? (
          <form method="post" action={`${PATH}/${user.id}/enable`}>
            <button type="submit">Enable user</button>
          </form>
        ) : (
          <form
            method="post"
            action={`${PATH}/${user.id}/disable`}
            data-confirm={`Disable ${user.email}? Their keys and sessions stop working at once.`}
          >
            <button type="submit" class="danger">
              Disable user
            </button>
          </form>
        )}
        <form method="post" action={`${PATH}/${user.id}/invitation`}>
          <button type="submit" class="secondary">
            New invitation link (password reset)
          </button>
        </form>
      </div>
    </Layout>,
    status,
  );
}
