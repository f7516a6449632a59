import type { Principal } from "../core/principal";
import { objectAnswer } from "../platform/deadline";
import type { Deps } from "../platform/deps";
import { type Hours, type KeyTotal, ownKeyIds, poolHours, type UsageHour } from "./store";

export type { KeyTotal, UsageHour };

const UNAVAILABLE = "The usage counter did not answer; retry shortly.";

/** The hour an instant falls in, as stored: `2026-11-23T14:00:00.000Z`. */
export function hourOf(ms: number): string {
  return new Date(Math.floor(ms / 3_600_000) * 3_600_000).toISOString();
}

/** A range as asked (`?from=&to=`) in stored hours: from the hour `from` falls in, up to `to`. */
function hoursOf({ from, to }: { from: string; to: string }): Hours {
  return { from: hourOf(Date.parse(from)), to };
}

/** Every hour from `from` up to (not including) `to`, the hours without requests at zero, so a chart has no gaps. */
function filled(from: string, to: string, rows: UsageHour[]): UsageHour[] {
  const byHour = new Map(rows.map((r) => [r.hour, r]));
  const out: UsageHour[] = [];
  for (let t = Date.parse(hourOf(Date.parse(from))); t < Date.parse(to); t += 3_600_000) {
    const hour = new Date(t).toISOString();
    const found = byHour.get(hour);
    const { admitted, rateLimited, creditsSpent } = found ?? { admitted: 0, rateLimited: 0, creditsSpent: 0 };
    out.push({ hour, admitted, rateLimited, creditsSpent });
  }
  return out;
}

/**
 * The account's hours in [from, to), and each key's totals over them, as `p` may see them (a member: their own keys):
 * one call to the account's object, whose rollup its keys' objects keep (through the usage queue, within a minute or
 * so of the requests), and for an admin the pool's spends from its ledger.
 */
export async function accountUsage(
  deps: Deps,
  p: Principal,
  range: { from: string; to: string },
): Promise<{ series: UsageHour[]; keys: KeyTotal[] }> {
  const hours = hoursOf(range);
  // A member's keys are those they own now; the pool is the account's, not a member's: an admin's series counts what it
  // spent beside the keys' own credits.
  const only = p.role === "admin" ? null : await ownKeyIds(deps.db, p);
  const account = deps.env.ACCOUNTS.getByName(`account:${p.accountId}`);
  const [usage, pool] = await Promise.all([
    objectAnswer(deps, account.usage(hours.from, hours.to, only), UNAVAILABLE),
    p.role === "admin" ? poolHours(deps.db, p.accountId, hours) : [],
  ]);
  const filledSeries = filled(range.from, range.to, usage.series);
  const spent = new Map(pool.map((h) => [h.hour, h.creditsSpent]));
  return { series: filledSeries.map((h) => ({ ...h, creditsSpent: h.creditsSpent + (spent.get(h.hour) ?? 0) })), keys: usage.keys };
}

/**
 * The hours in [from, to) of each of these keys, which the caller has checked `p` may see: each from its key's object,
 * which counted them (exact, and as of now).
 */
export async function keysUsage(deps: Deps, keyIds: string[], range: { from: string; to: string }): Promise<Map<string, UsageHour[]>> {
  const { from, to } = hoursOf(range);
  const series = await Promise.all(
    keyIds.map((id) => objectAnswer(deps, deps.env.KEYS.getByName(`key:${id}`).usageHours(from, to) as Promise<UsageHour[]>, UNAVAILABLE)),
  );
  return new Map(keyIds.map((id, i) => [id, filled(range.from, range.to, series[i] ?? [])]));
}
