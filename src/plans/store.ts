import { asc, count, eq } from "drizzle-orm";
import type { Db } from "../platform/db/client";
import { accounts, type Plan, plans } from "../platform/db/schema";

/** Every plan with how many accounts are on it, by id. */
export async function listPlans(d: Db): Promise<{ plan: Plan; accounts: number }[]> {
  const rows = await d
    .select({ plan: plans, accounts: count(accounts.id) })
    .from(plans)
    .leftJoin(accounts, eq(accounts.planId, plans.id))
    .groupBy(plans.id)
    .orderBy(asc(plans.id));
  return rows;
}

export async function findPlan(d: Db, id: string): Promise<{ plan: Plan; accounts: number } | undefined> {
  const [row] = await d
    .select({ plan: plans, accounts: count(accounts.id) })
    .from(plans)
    .leftJoin(accounts, eq(accounts.planId, plans.id))
    .where(eq(plans.id, id))
    .groupBy(plans.id);
  return row;
}

/** The credits (JSON) of the plan `id`, its accounts' pool and each person's; null when it sets none, or when there is no such plan. */
export async function planCredits(d: Db, id: string | null): Promise<{ planCredits: string | null; planUserCredits: string | null }> {
  const [row] =
    id === null
      ? []
      : await d.select({ planCredits: plans.credits, planUserCredits: plans.userCredits }).from(plans).where(eq(plans.id, id)).limit(1);
  return row ?? { planCredits: null, planUserCredits: null };
}
