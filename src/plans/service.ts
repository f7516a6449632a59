import type { z } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import { creditsColumn } from "../core/schemas";
import { reloadAccounts, reloadKeys, reloadPeople } from "../keys/reload";
import { liveKeyIds } from "../keys/store";
import { peopleWithSessions } from "../people/sessions";
import { accounts, plans } from "../platform/db/schema";
import type { Deps } from "../platform/deps";
import { ApiError } from "../platform/errors";
import type { PlanInput } from "./schemas";
import { findPlan } from "./store";

/**
 * Creates the plan `id`, or replaces what it holds; answers it, and whether it was created. The keys of the accounts on
 * it get the new limits and credits right after the answer (neither is a right: a key that misses the change catches up
 * within the objects' record lifetime).
 */
export async function putPlan(deps: Deps, id: string, input: z.infer<typeof PlanInput>) {
  const d = deps.db;
  const now = deps.now();
  const at = now.toISOString();
  const rateLimits = JSON.stringify(input.rateLimits);
  // A PUT replaces the whole plan: credits it does not send are unlimited.
  const credits = creditsColumn(input.credits);
  const userCredits = creditsColumn(input.userCredits);
  const [created] = await d
    .insert(plans)
    .values({ id, name: input.name, rateLimits, credits, userCredits, createdAt: at, updatedAt: at })
    .onConflictDoNothing()
    .returning({ id: plans.id });
  if (!created) {
    await d.update(plans).set({ name: input.name, rateLimits, credits, userCredits, updatedAt: at }).where(eq(plans.id, id));
    const onPlan = await d.select({ id: accounts.id }).from(accounts).where(eq(accounts.planId, id));
    await reloadAccounts(
      deps,
      onPlan.map((a) => a.id),
    );
    deps.waitUntil(
      liveKeyIds(d, { planId: id }, now)
        .then((ids) => reloadKeys(deps, ids))
        .catch(() => {}),
    );
    deps.waitUntil(
      peopleWithSessions(deps, { planId: id }, now)
        .then((ids) => reloadPeople(deps, ids))
        .catch(() => {}),
    );
  }
  deps.log("info", "plan_saved", { plan: id, created: created !== undefined });
  const saved = await findPlan(d, id);
  if (!saved) throw new ApiError("not_found", "No such plan.");
  return { ...saved, created: created !== undefined };
}
