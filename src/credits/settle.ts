import type { Principal } from "../core/principal";
import type { Spent } from "../counters/protocol";
import type { Deps } from "../platform/deps";
import { safeError } from "../platform/log";

/**
 * Settles a request's reservations at what its upstream says it `used`, in every object that reserved for it (the
 * key's, its account's, its person's): what was reserved beyond it comes back; more than `reserve` is charged only up to it, and
 * logged. A reservation already settled, given back or past its time changes nothing. Failures are logged: the
 * reservation then settles at its reserve when its time is up.
 */
export async function settleReservation(
  deps: Deps,
  principal: Principal | undefined,
  spent: readonly Spent[],
  used: number,
  reserve: number,
): Promise<void> {
  const { requestId } = deps;
  if (used > reserve) deps.log("warn", "credits_overrun", { requestId, used, reserve });
  await Promise.all(
    spent
      .filter((s) => s.allowed && s.credits !== null)
      .map(async ({ name }) => {
        const [kind, id] = name.split(":") as [string, string];
        try {
          if (kind === "key") await deps.env.KEYS.getByName(name).settleCredits(id, requestId, used);
          else if (kind === "account") await deps.env.ACCOUNTS.getByName(name).settleCredits({ accountId: id }, requestId, used);
          else if (kind === "user" && principal) {
            const person = { userId: id, credits: principal.credits.user };
            await deps.env.ACCOUNTS.getByName(name).settleCredits({ accountId: principal.accountId, person }, requestId, used);
          }
        } catch (err) {
          deps.log("error", "credits_settle_failed", { requestId, counter: kind, error: safeError(err) });
        }
      }),
  );
}
