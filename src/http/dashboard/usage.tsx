import { Hono } from "hono";
import { keysByIds } from "../../keys/service";
import { accountUsage, hourOf, keysUsage } from "../../usage/service";
import { UsageChart } from "./chart";
import { Layout } from "./layout";
import { render } from "./render";
import { type DashEnv, signedIn } from "./session";

const PATH = "/dashboard/usage";
const RANGES = [
  { hours: 24, label: "Last 24 hours" },
  { hours: 72, label: "Last 3 days" },
  { hours: 168, label: "Last 7 days" },
];
/** Keys charted one by one: the busiest ones (one read for all of them). */
const KEY_CHARTS = 10;

/**
 * Requests per hour, admitted and rate limited: the account's (admins) or the member's own keys' together, then the
 * busiest keys one by one. A member sees only their own keys, as on the keys page.
 */
export const usagePages = new Hono<DashEnv>().use(signedIn("full")).get("/", async (c) => {
  const [deps, p] = [c.get("deps"), c.get("principal")];
  const hours = RANGES.find((r) => String(r.hours) === c.req.query("hours"))?.hours ?? 24;
  // Up to the end of the current hour, so the latest bar is the hour now under way.
  const to = new Date(Date.parse(hourOf(deps.now().getTime())) + 3_600_000).toISOString();
  const range = { from: new Date(Date.parse(to) - hours * 3_600_000).toISOString(), to };
  // GET /v1/account/usage's answer: a member's total is their own keys' (the account's is not theirs to see).
  const usage = await accountUsage(deps, p, range);
  const busy = [...usage.keys].sort((a, b) => b.admitted + b.rateLimited - (a.admitted + a.rateLimited));
  const charted = busy.slice(0, KEY_CHARTS).map((k) => k.keyId);
  const [series, keys] = await Promise.all([keysUsage(deps, p, charted, range), keysByIds(deps, p, charted)]);
  const names = new Map(keys.map((k) => [k.id, `${k.name} (${k.prefix}_${k.start}…)`]));
  return render(
    c,
    <Layout title="Usage" who={{ principal: p, email: c.get("email") }} current={PATH}>
      <form class="filters" method="get" action={PATH}>
        <div>
          <label for="hours">Period</label>{" "}
          <select id="hours" name="hours">
            {RANGES.map((r) => (
              <option value={String(r.hours)} selected={r.hours === hours}>
                {r.label}
              </option>
            ))}
          </select>
        </div>
        <button type="submit" class="secondary">
          Show
        </button>
      </form>
      <p class="hint">Hours in UTC. Counts reach this page within about a minute.</p>
      <UsageChart id="account" title={p.role === "admin" ? "All keys of the account" : "All your keys"} series={usage.series} />
      <h2>By key</h2>
      {charted.length === 0 ? (
        <p class="muted">No key made requests in this period.</p>
      ) : (
        <div class="charts">
          {charted.map((id) => (
            <UsageChart id={id} title={names.get(id) ?? id} series={series.get(id) ?? []} />
          ))}
        </div>
      )}
      {busy.length > KEY_CHARTS && <p class="hint">{`The ${KEY_CHARTS} busiest of ${busy.length} keys.`}</p>}
    </Layout>,
  );
});
