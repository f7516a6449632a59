import { z } from "@hono/zod-openapi";
import { storedCredits } from "../core/credits";
import {
  CreditsSetting,
  creditsField,
  matching,
  NamedLimit,
  orNull,
  RateLimits,
  storedLimits,
  Timestamp,
  text,
  userCreditsField,
} from "../core/schemas";
import type { Plan } from "../platform/db/schema";

const PLAN_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const PlanId = matching(PLAN_ID, "must be 1-63 characters: lowercase letters, digits, '_' and '-', starting with a letter or digit");

export const PlanIdParam = z.object({ id: PlanId.openapi({ param: { name: "id", in: "path" }, example: "pro" }) });

export const PlanInput = z
  .strictObject({
    name: text(200),
    rateLimits: RateLimits,
    credits: creditsField.openapi({
      description: "The credits pool of each account on the plan that sets none of its own; `null` or absent: unlimited",
    }),
    userCredits: userCreditsField,
  })
  .openapi("PlanInput", {
    example: {
      name: "Free",
      rateLimits: [
        { name: "minute", limit: 10, windowSeconds: 60 },
        { name: "day", limit: 100, windowSeconds: 86_400, shared: "account" },
      ],
      credits: { remaining: 100, refill: { amount: 100, interval: "day", mode: "set" } },
    },
  });

export const PlanView = z
  .strictObject({
    id: z.string().openapi({ example: "free" }),
    name: z.string(),
    rateLimits: z.array(NamedLimit),
    credits: orNull(CreditsSetting).openapi({ description: "What each account's pool opens with and its refill; null: unlimited" }),
    userCredits: orNull(CreditsSetting).openapi({ description: "What each person's balance opens with and its refill; null: unlimited" }),
    /** How many accounts are on the plan. */
    accounts: z.number().int(),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .openapi("Plan");

export const PlanList = z.strictObject({ data: z.array(PlanView) }).openapi("PlanList");

export function planView(p: Plan, accounts: number): z.infer<typeof PlanView> {
  return {
    id: p.id,
    name: p.name,
    rateLimits: storedLimits(p.rateLimits),
    credits: storedCredits(p.credits),
    userCredits: storedCredits(p.userCredits),
    accounts,
    createdAt: p.createdAt,
    updatedAt: p.updatedAt,
  };
}
