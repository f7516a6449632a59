import { Hono } from "hono";
import type { FC } from "hono/jsx";
import { accountView } from "../../accounts/schemas";
import { getAccount } from "../../accounts/service";
import { poolBalance, poolLedger, userBalance } from "../../credits/service";
import { keysByIds } from "../../keys/service";
import { pageOf } from "../../platform/db/pagination";
import { accountUsage, hourOf, keysUsage } from "../../usage/service";
import { emailsOf } from "../../users/service";
import { UsageChart } from "./chart";
import { Balance, type Credits, count, LedgerTable } from "./credits";
import { Layout, Pager, Table } from "./layout";
import { render } from "./render";
import { type DashContext, type DashEnv, needs, signedIn } from "./session";

const PATH = "/dashboard/usage";
const LEDGER = `${PATH}/ledger`;
const RANGES = [
  { hours: 24, label: "Last 24 hours" },
  { hours: 72, label: "Last 3 days" },
  { hours: 168, label: "Last 7 days" },
];
/** Keys charted one by one: the busiest ones (one read for all of them). */
const KEY_CHARTS = 10;

/**
 * The account's plan, limits and credits pool as GET /v1/account shows them; then requests per hour, admitted and rate
 * limited, and the credits they spent: the account's (admins) or the member's own keys' together, then the busiest keys
 * one by one. A member sees only their own keys, as on the keys page. Admins page through the pool's ledger.
 */
export const usagePages = new Hono<DashEnv>()
  .use(signedIn("full"))
  .get("/", async (c) => {
    const [deps, p] = [c.get("deps"), c.get("principal")];
    const hours = RANGES.find((r) => String(r.hours) === c.req.query("hours"))?.hours ?? 24;
    // Up to the end of the current hour, so the latest bar is the hour now under way.
    const to = new Date(Date.parse(hourOf(deps.now().getTime())) + 3_600_000).toISOString();
    const range = { from: new Date(Date.parse(to) - hours * 3_600_000).toISOString(), to };
    // GET /v1/account/usage's answer: a member's total is their own keys' (the account's is not theirs to see).
    const [usage, account, mine] = await Promise.all([accountUsage(deps, p, range), accountNow(c), userBalance(deps, p, p.userId)]);
    const busy = [...usage.keys].sort((a, b) => b.admitted + b.rateLimited - (a.admitted + a.rateLimited));
    const top = busy.slice(0, KEY_CHARTS);
    const charted = top.map((k) => k.keyId);
    const [series, keys] = await Promise.all([keysUsage(deps, charted, range), keysByIds(deps, p, charted)]);
    const names = new Map(keys.map((k) => [k.id, `${k.name} (${k.prefix}_${k.start}…)`]));
    return render(
      c,
      <Layout title="Usage" who={{ principal: p, email: c.get("email") }} current={PATH}>
        <PlanSection account={account} mine={mine} admin={p.role === "admin"} />
        <h2>Requests</h2>
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
          <>
            <Table columns={["Key", "Admitted", "Rate limited", "Credits spent"]}>
              {top.map((k) => (
                <tr data-key-usage={k.keyId}>
                  <td>{names.get(k.keyId) ?? k.keyId}</td>
                  <td class="number">{count(k.admitted)}</td>
                  <td class="number">{count(k.rateLimited)}</td>
                  <td class="number">{count(k.creditsSpent)}</td>
                </tr>
              ))}
            </Table>
            <div class="charts">
              {charted.map((id) => (
                <UsageChart id={id} title={names.get(id) ?? id} series={series.get(id) ?? []} />
              ))}
            </div>
          </>
        )}
        {busy.length > KEY_CHARTS && <p class="hint">{`The ${KEY_CHARTS} busiest of ${busy.length} keys.`}</p>}
      </Layout>,
    );
  })
  // GET /v1/account/credits/ledger: admins only.
  .get("/ledger", needs("admin"), async (c) => {
    const [deps, p] = [c.get("deps"), c.get("principal")];
    const [ledger, account] = await Promise.all([poolLedger(deps, p, pageOf({ cursor: c.req.query("cursor") })), accountNow(c)]);
    const actors = await emailsOf(
      deps,
      p,
      ledger.data.flatMap((e) => (e.actor === null ? [] : [e.actor])),
    );
    return render(
      c,
      <Layout title="Credits ledger" who={{ principal: p, email: c.get("email") }} current={PATH}>
        <p>
          The account's credits pool: <Balance credits={account.credits} none="unlimited" />
        </p>
        <p class="hint">Newest first, in UTC. A minute's spends are one row (Count of them); entries arrive within a minute or so.</p>
        <LedgerTable rows={ledger.data} actors={actors} />
        <Pager path={LEDGER} next={ledger.nextCursor} />
        <p>
          <a href={PATH}>Back to usage</a>
        </p>
      </Layout>,
    );
  });

/** The account as GET /v1/account shows it: its pool as of now, from its object. */
async function accountNow(c: DashContext) {
  const deps = c.get("deps");
  const account = await getAccount(deps, c.get("principal"));
  const pool = await poolBalance(deps, account);
  return accountView(account, deps.now(), pool);
}

const UNITS = [
  { seconds: 86_400, one: "day" },
  { seconds: 3600, one: "hour" },
  { seconds: 60, one: "minute" },
  { seconds: 1, one: "second" },
];

/** A window in words: 60 → "minute", 86,400 → "day", 120 → "2 minutes", 90 → "90 seconds". */
export function windowWords(seconds: number): string {
  const unit = UNITS.find((u) => seconds % u.seconds === 0) as (typeof UNITS)[number];
  const n = seconds / unit.seconds;
  return n === 1 ? unit.one : `${count(n)} ${unit.one}s`;
}

/**
 * The account's plan, the limits its keys spend (those shared by all keys or per person marked), its credits pool, and
 * the signed-in person's own balance when the account gives each person one.
 */
const PlanSection: FC<{ account: ReturnType<typeof accountView>; mine: Credits; admin: boolean }> = ({ account, mine, admin }) => (
  <section aria-labelledby="plan-title">
    <h2 id="plan-title">Plan and limits</h2>
    <p>
      Plan:{" "}
      {account.plan === null ? (
        <span class="muted">none (the account's own limits)</span>
      ) : (
        <code data-plan={account.plan}>{account.plan}</code>
      )}
    </p>
    <Table columns={["Limit", "Requests", "Per", "Counted"]}>
      {account.rateLimits.map((l) => (
        <tr data-limit={l.name}>
          <td>
            <code>{l.name}</code>
          </td>
          <td class="number">{count(l.limit)}</td>
          <td>{windowWords(l.windowSeconds)}</td>
          <td>
            {l.shared === "account" ? (
              <span class="badge">shared by all keys</span>
            ) : l.shared === "user" ? (
              <span class="badge">per person, all their keys</span>
            ) : (
              "per key"
            )}
          </td>
        </tr>
      ))}
    </Table>
    <p class="hint">A limit counted per key applies to each key that has no limits of its own.</p>
    <p>
      Credits pool (spent by all keys together): <Balance credits={account.credits} none="unlimited" />
      {admin && (
        <>
          {" "}
          <a href={LEDGER}>Ledger</a>
        </>
      )}
    </p>
    {account.userCredits !== null && (
      <p data-my-credits>
        Your credits (all your keys together): <Balance credits={mine} none="unlimited" />
      </p>
    )}
  </section>
);
