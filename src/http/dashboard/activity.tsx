import { Hono } from "hono";
import { activity } from "../../accounts/service";
import { pageOf } from "../../platform/db/pagination";
import { Layout, Pager, Table, Time } from "./layout";
import { render } from "./render";
import { type DashEnv, signedIn } from "./session";

const PATH = "/dashboard/activity";

/** The account's audit events, newest first and paged; a member sees what GET /v1/account shows them. */
export const activityPages = new Hono<DashEnv>().use(signedIn("full")).get("/", async (c) => {
  const p = c.get("principal");
  const { rows, nextCursor } = await activity(c.get("deps"), p, pageOf({ cursor: c.req.query("cursor") }));
  return render(
    c,
    <Layout title="Activity" who={{ principal: p, email: c.get("email") }} current={PATH}>
      {p.role === "member" && <p class="muted">Your own actions and what happened to your keys.</p>}
      {rows.length === 0 ? (
        <p class="muted">Nothing has happened yet.</p>
      ) : (
        <Table columns={["When", "Who", "What", "On", "Request"]}>
          {rows.map((e) => (
            <tr>
              <td>
                <Time at={e.createdAt} />
              </td>
              <td>{e.actorEmail ?? e.actor}</td>
              <td>
                <code>{e.action}</code>
              </td>
              <td>
                <code>{e.target}</code>
              </td>
              <td>
                <code>{e.requestId}</code>
              </td>
            </tr>
          ))}
        </Table>
      )}
      <Pager path={PATH} next={nextCursor} />
    </Layout>,
  );
});
