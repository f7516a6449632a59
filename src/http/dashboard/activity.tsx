import { and, eq, inArray, or } from "drizzle-orm";
import { Hono } from "hono";
import { db } from "../../platform/db/client";
import { listPage, pageOf } from "../../platform/db/pagination";
import { apiKeys, auditEvents, users } from "../../platform/db/schema";
import { Layout, Pager, Table, Time } from "./layout";
import { render } from "./render";
import { type DashEnv, signedIn } from "./session";

const PATH = "/dashboard/activity";

/** The account's audit events, newest first and paged; a member sees what GET /v1/account shows them (see recentEvents). */
export const activityPages = new Hono<DashEnv>().use(signedIn("full")).get("/", async (c) => {
  const p = c.get("principal");
  const d = db(c.env.DB);
  const own =
    p.role === "admin"
      ? undefined
      : or(
          eq(auditEvents.actor, p.userId),
          inArray(auditEvents.target, d.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.ownerId, p.userId))),
        );
  const { rows, nextCursor } = await listPage(
    d,
    auditEvents,
    and(eq(auditEvents.accountId, p.accountId), own),
    pageOf({ cursor: c.req.query("cursor") }),
  );
  // Actors by email where they are users of this account (`operator` is the provisioning operator).
  const ids = [...new Set(rows.map((e) => e.actor))];
  const people =
    ids.length === 0
      ? []
      : await d
          .select({ id: users.id, email: users.email })
          .from(users)
          .where(and(eq(users.accountId, p.accountId), inArray(users.id, ids)));
  const emails = new Map(people.map((u) => [u.id, u.email]));
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
              <td>{emails.get(e.actor) ?? e.actor}</td>
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
