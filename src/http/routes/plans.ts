import { createRoute } from "@hono/zod-openapi";
import { PlanIdParam, PlanInput, PlanList, PlanView, planView } from "../../plans/schemas";
import { putPlan } from "../../plans/service";
import { findPlan, listPlans } from "../../plans/store";
import { ApiError } from "../../platform/errors";
import { BODY_PROBLEMS, json, jsonBody, OPERATOR_SECURITY, problems, routes, withBody } from "../openapi";
import { OPERATOR_PROBLEMS, operator } from "./accounts";

/** Plans: what a provider sells, defined by the operator and put on accounts (`PATCH /v1/accounts/{id}`). */
export const plansRoutes = routes()
  .openapi(
    createRoute({
      method: "put",
      path: "/{id}",
      summary: "Create a plan, or replace its name, limits and credits",
      security: OPERATOR_SECURITY,
      middleware: withBody(operator),
      request: { params: PlanIdParam, body: jsonBody(PlanInput) },
      responses: {
        200: json(PlanView, "The plan, replaced; the keys of its accounts have its limits right after"),
        201: json(PlanView, "The plan, created"),
        ...problems(...OPERATOR_PROBLEMS, ...BODY_PROBLEMS),
      },
    }),
    async (c) => {
      const { plan, accounts, created } = await putPlan(c.get("deps"), c.req.valid("param").id, c.req.valid("json"));
      return c.json(planView(plan, accounts), created ? 201 : 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/",
      summary: "Every plan, by id, with how many accounts are on it",
      security: OPERATOR_SECURITY,
      middleware: [operator],
      responses: { 200: json(PlanList, "The plans"), ...problems(...OPERATOR_PROBLEMS) },
    }),
    async (c) => c.json({ data: (await listPlans(c.get("deps").db)).map((p) => planView(p.plan, p.accounts)) }, 200),
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      summary: "One plan",
      security: OPERATOR_SECURITY,
      middleware: [operator],
      request: { params: PlanIdParam },
      responses: { 200: json(PlanView, "The plan"), ...problems(...OPERATOR_PROBLEMS, "not_found") },
    }),
    async (c) => {
      const found = await findPlan(c.get("deps").db, c.req.valid("param").id);
      if (!found) throw new ApiError("not_found", "No such plan.");
      return c.json(planView(found.plan, found.accounts), 200);
    },
  );
