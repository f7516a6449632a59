import type { FC } from "hono/jsx";
import type { Refill } from "../../core/credits";
import type { LedgerEntryView } from "../../credits/schemas";
import { Table, Time } from "./layout";

/** A balance as the API shows it (`credits` of a key or an account): null is unlimited. */
export type Credits = { remaining: number | null; refill: Refill | null; nextRefillAt: string | null } | null;

/** A number as people read it: `1,000`. */
export const count = (n: number) => n.toLocaleString("en");

/** A refill in words: "1,000 every month on day 1, set" (the balance becomes 1,000) or "…, added" (1,000 more). */
export function refillWords(refill: Refill): string {
  const when = refill.interval === "month" ? `every month on day ${refill.dayOfMonth ?? 1}` : `every ${refill.interval}`;
  return `${count(refill.amount)} ${when}, ${refill.mode === "set" ? "set" : "added"}`;
}

/**
 * What is left of a balance as of now, its refill and when the next one comes; `none`: what an unlimited balance is
 * called where it is shown ("unlimited" for the pool, "no limit of its own" for a key).
 */
export const Balance: FC<{ credits: Credits; none: string }> = ({ credits, none }) =>
  credits === null || credits.remaining === null ? (
    <span class="muted">{none}</span>
  ) : (
    <span class="balance">
      <strong data-credits-remaining={String(credits.remaining)}>{`${count(credits.remaining)} left`}</strong>
      {credits.refill && (
        <span class="hint">
          {" "}
          {`refill: ${refillWords(credits.refill)}`}
          {credits.nextRefillAt && (
            <>
              {", next "}
              <Time at={credits.nextRefillAt} />
            </>
          )}
        </span>
      )}
    </span>
  );

/** A page of a credits ledger, newest first, as GET …/credits/ledger answers it; `actors`: the emails of the users named. */
export const LedgerTable: FC<{ rows: LedgerEntryView[]; actors: ReadonlyMap<string, string> }> = ({ rows, actors }) =>
  rows.length === 0 ? (
    <p class="muted">No entries yet. Movements reach the ledger within a minute or so.</p>
  ) : (
    <Table columns={["At", "Kind", "Delta", "Balance after", "Count", "Actor", "Reason"]}>
      {rows.map((e) => (
        <tr data-entry={e.id}>
          <td>
            <Time at={e.at} />
          </td>
          <td>
            <code>{e.kind}</code>
          </td>
          <td class="number">{e.delta > 0 ? `+${count(e.delta)}` : count(e.delta)}</td>
          <td class="number">{count(e.balanceAfter)}</td>
          <td class="number">{count(e.count)}</td>
          <td>{e.actor === null ? "" : (actors.get(e.actor) ?? e.actor)}</td>
          <td>{e.reason ?? ""}</td>
        </tr>
      ))}
    </Table>
  );
