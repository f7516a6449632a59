import { and, eq, inArray } from "drizzle-orm";
import { Hono } from "hono";
import { db } from "../../platform/db/client";
import { apiKeys } from "../../platform/db/schema";
import { accountUsage, hourOf, keyUsageSeries, type UsageHour } from "../../usage/service";
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
/** Keys charted one by one: the busiest ones (one read each). */
const KEY_CHARTS = 10;

/**
 * Requests per hour, admitted and rate limited: the account's (admins) or the member's own keys' together, then the
 * busiest keys one by one. A member sees only their own keys, as on the keys page.
 */
export const usagePages = new Hono<DashEnv>().use(signedIn("full")).get("/", async (c) => {
  const p = c.get("principal");
  const hours = RANGES.find((r) => String(r.hours) === c.req.query("hours"))?.hours ?? 24;
  // Up to the end of the current hour, so the latest bar is the hour now under way.
  const to = new Date(Date.parse(hourOf(Date.now())) + 3_600_000).toISOString();
  const from = new Date(Date.parse(to) - hours * 3_600_000).toISOString();
  const usage = await accountUsage(c.env.DB, p.accountId, from, to);
  const d = db(c.env.DB);
  const owned =
    p.role === "admin"
      ? null
      : new Set(
          (
            await d
              .select({ id: apiKeys.id })
              .from(apiKeys)
              .where(and(eq(apiKeys.accountId, p.accountId), eq(apiKeys.ownerId, p.userId)))
          ).map((k) => k.id),
        );
  const busy = usage.keys
    .filter((k) => owned === null || owned.has(k.keyId))
    .sort((a, b) => b.admitted + b.rateLimited - (a.admitted + a.rateLimited));
  // A member's total is the sum of their own keys' series: the account's total is not theirs to see.
  const mine = owned === null ? [] : await Promise.all(busy.map((k) => keyUsageSeries(c.env.DB, p.accountId, k.keyId, from, to)));
  const total = owned === null ? usage.series : sum(usage.series, mine);
  const charted = busy.slice(0, KEY_CHARTS);
  const series = owned === null ? await Promise.all(charted.map((k) => keyUsageSeries(c.env.DB, p.accountId, k.keyId, from, to))) : mine;
  const names =
    charted.length === 0
      ? new Map<string, string>()
      : new Map(
          (
            await d
              .select({ id: apiKeys.id, name: apiKeys.name, prefix: apiKeys.prefix, start: apiKeys.start })
              .from(apiKeys)
              .where(
                and(
                  eq(apiKeys.accountId, p.accountId),
                  inArray(
                    apiKeys.id,
                    charted.map((k) => k.keyId),
                  ),
                ),
              )
          ).map((k) => [k.id, `${k.name} (${k.prefix}_${k.start}…)`]),
        );
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
      <UsageChart id="account" title={p.role === "admin" ? "All keys of the account" : "All your keys"} series={total} />
      <h2>By key</h2>
      {charted.length === 0 ? (
        <p class="muted">No key made requests in this period.</p>
      ) : (
        <div class="charts">
          {charted.map((k, i) => (
            <UsageChart id={k.keyId} title={names.get(k.keyId) ?? k.keyId} series={series[i] ?? []} />
          ))}
        </div>
      )}
      {busy.length > KEY_CHARTS && <p class="hint">{`The ${KEY_CHARTS} busiest of ${busy.length} keys.`}</p>}
    </Layout>,
  );
});

/** Hour by hour, the sum of several series over the same hours. */
function sum(hours: UsageHour[], series: UsageHour[][]): UsageHour[] {
  return hours.map((h, i) => ({
    hour: h.hour,
    admitted: series.reduce((n, s) => n + (s[i]?.admitted ?? 0), 0),
    rateLimited: series.reduce((n, s) => n + (s[i]?.rateLimited ?? 0), 0),
  }));
}
