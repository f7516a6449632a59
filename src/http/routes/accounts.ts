import { createRoute } from "@hono/zod-openapi";
import { createMiddleware } from "hono/factory";
import { AccountView, accountView, NewAccount, OperatorAccountChange, Provisioned, RecoveryRequest } from "../../accounts/schemas";
import { changeAccount, provisionAccount, recoverAccount } from "../../accounts/service";
import { IdParam } from "../../core/schemas";
import { poolBalance } from "../../credits/service";
import type { AppEnv } from "../../guards/context";
import { invalidToken } from "../../guards/credentials";
import { bearerMatches } from "../../guards/secret";
import { spendOnAddress } from "../../guards/spending";
import { KeyWithSecret, keyView } from "../../keys/schemas";
import { misconfigured } from "../../platform/config";
import { ApiError, type ErrorCode } from "../../platform/errors";
import { userView } from "../../users/schemas";
import { BODY_PROBLEMS, json, jsonBody, OPERATOR_SECURITY, problems, routes, withBody } from "../openapi";

export const OPERATOR_PROBLEMS: ErrorCode[] = [
  "missing_credentials",
  "invalid_operator_token",
  "rate_limited",
  "rate_limiter_unavailable",
  "configuration_error",
  "database_unavailable",
];

/** Operator calls spend their address's budget (so a guessed token gets few tries), then need the operator token. */
export const operator = createMiddleware<AppEnv>(async (c, next) => {
  await spendOnAddress(c, "provision", c.get("config").ipPolicy);
  await requireOperator(c.req.header("Authorization"), c.get("config").operatorToken);
  await next();
});

/** Provisioning: the operator creates an account with its first admin and that admin's first full-access key. */
export const accountsRoutes = routes()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      summary: "Provision an account, its first admin and that admin's first full-access key",
      security: OPERATOR_SECURITY,
      middleware: withBody(operator),
      request: { body: jsonBody(NewAccount) },
      responses: {
        201: json(Provisioned, "The account; `key.key` is shown this once"),
        ...problems(...OPERATOR_PROBLEMS, ...BODY_PROBLEMS, "slug_taken", "external_id_taken"),
      },
    }),
    async (c) => {
      const { account, user, raw, row, now, invitation } = await provisionAccount(c.get("deps"), c.req.valid("json"), new URL(c.req.url));
      c.header("Cache-Control", "no-store");
      return c.json(
        { account: accountView(account, now), admin: { ...userView(user), invitation }, key: { ...keyView(row, now), key: raw } },
        201,
      );
    },
  )
  .openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      summary: "Change an account's plan, credits pool, externalId or meta",
      description:
        "In force in the account's keys before the answer (verify and the upstream see it on the next request); 503 `change_pending` when it could not be, and a repeat completes it.",
      security: OPERATOR_SECURITY,
      middleware: withBody(operator),
      request: { params: IdParam, body: jsonBody(OperatorAccountChange) },
      responses: {
        200: json(AccountView, "The account as stored"),
        ...problems(...OPERATOR_PROBLEMS, ...BODY_PROBLEMS, "not_found", "external_id_taken", "change_pending"),
      },
    }),
    async (c) => {
      const deps = c.get("deps");
      const account = await changeAccount(deps, c.req.valid("param").id, c.req.valid("json"));
      const pool = await poolBalance(deps, account);
      return c.json(accountView(account, deps.now(), pool), 200);
    },
  )
  /**
   * The way back for an account that lost every admin key: the operator mints a full-access key for one of its enabled
   * admins (`userId`, by default the longest-standing one), audited as the operator's act.
   */
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/recovery-key",
      summary: "Mint a full-access key for an enabled admin of an account that lost every admin key",
      security: OPERATOR_SECURITY,
      middleware: withBody(operator),
      request: { params: IdParam, body: jsonBody(RecoveryRequest) },
      responses: {
        201: json(KeyWithSecret, "The recovery key, shown this once"),
        ...problems(...OPERATOR_PROBLEMS, ...BODY_PROBLEMS, "not_found"),
      },
    }),
    async (c) => {
      const { raw, row, now } = await recoverAccount(c.get("deps"), c.req.valid("param").id, c.req.valid("json").userId);
      c.header("Cache-Control", "no-store");
      return c.json({ ...keyView(row, now), key: raw }, 201);
    },
  );

async function requireOperator(authorization: string | undefined, token: string | undefined): Promise<void> {
  if (token === undefined) misconfigured("OPERATOR_TOKEN", "is not set; provisioning is disabled");
  if (!(await bearerMatches(authorization, token))) {
    if (authorization === undefined)
      throw new ApiError("missing_credentials", "Send the operator token as `Authorization: Bearer <token>`.");
    throw new ApiError("invalid_operator_token", "The operator token is not valid.", { headers: invalidToken });
  }
}
