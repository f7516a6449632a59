import { createRoute } from "@hono/zod-openapi";
import { and, asc, eq } from "drizzle-orm";
import { createMiddleware } from "hono/factory";
import { accountView, NewAccount, Provisioned, RecoveryRequest } from "../accounts/schemas";
import { invalidToken } from "../auth/credentials";
import { misconfigured } from "../config";
import { auditInsert } from "../db/audit";
import { batch, db } from "../db/client";
import { type Account, accounts, apiKeys, users } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError, type ErrorCode } from "../errors";
import { newId } from "../keys/format";
import { KeyWithSecret, keyView } from "../keys/schemas";
import { mintKey } from "../keys/store";
import { BODY_PROBLEMS, invalidRequest, json, jsonBody, jsonObject, problems, routes } from "../openapi";
import { spendPerAddress } from "../ratelimit/limiter";
import { IdParam } from "../schemas";
import { userView } from "../users/schemas";
import { allow } from "./method-not-allowed";

const OPERATOR_SECURITY = [{ Bearer: [] }];
const OPERATOR_PROBLEMS: ErrorCode[] = [
  "missing_credentials",
  "invalid_operator_token",
  "rate_limited",
  "rate_limiter_unavailable",
  "configuration_error",
  "database_unavailable",
];

/** Operator calls spend their address's budget (so a guessed token gets few tries), then need the operator token. */
const operator = createMiddleware<AppEnv>(async (c, next) => {
  await spendPerAddress(c, "provision", c.get("config").ipPolicy);
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
      middleware: [operator, jsonObject],
      request: { body: jsonBody(NewAccount) },
      responses: {
        201: json(Provisioned, "The account; `key.key` is shown this once"),
        ...problems(...OPERATOR_PROBLEMS, ...BODY_PROBLEMS),
      },
    }),
    async (c) => {
      const { name, keyPrefix, membersCanCreateKeys, rateLimit, maxRateLimit, admin } = c.req.valid("json");
      const now = new Date();
      const account: Account = {
        id: newId("acc"),
        name,
        keyPrefix,
        membersCanCreateKeys,
        rateLimit: rateLimit.limit,
        rateLimitWindowSeconds: rateLimit.windowSeconds,
        maxRateLimit: maxRateLimit?.limit ?? null,
        maxRateLimitWindowSeconds: maxRateLimit?.windowSeconds ?? null,
        createdAt: now.toISOString(),
      };
      const user = {
        id: newId("usr"),
        accountId: account.id,
        email: admin.email,
        role: "admin" as const,
        disabled: false,
        createdAt: account.createdAt,
      };
      const { raw, row } = await mintAdminKey(account, user.id, user.id, "default", now);
      const audit = { accountId: account.id, actor: "operator", requestId: c.get("requestId") };
      const d = db(c.env.DB);
      await batch(c.env.DB, [
        d.insert(accounts).values(account),
        d.insert(users).values(user),
        d.insert(apiKeys).values(row),
        auditInsert(d, { ...audit, action: "account.created", target: account.id }, now),
        auditInsert(d, { ...audit, action: "user.created", target: user.id }, now),
        auditInsert(d, { ...audit, action: "key.created", target: row.id }, now),
      ]);
      c.header("Cache-Control", "no-store");
      return c.json({ account: accountView(account), admin: userView(user), key: { ...keyView(row, now), key: raw } }, 201);
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
      middleware: [operator, jsonObject],
      request: { params: IdParam, body: jsonBody(RecoveryRequest) },
      responses: {
        201: json(KeyWithSecret, "The recovery key, shown this once"),
        ...problems(...OPERATOR_PROBLEMS, ...BODY_PROBLEMS, "not_found"),
      },
    }),
    async (c) => {
      const { userId } = c.req.valid("json");
      const d = db(c.env.DB);
      const [account] = await d
        .select()
        .from(accounts)
        .where(eq(accounts.id, c.req.valid("param").id))
        .limit(1);
      if (!account) throw new ApiError("not_found", "No account with this id.");
      const [admin] = await d
        .select()
        .from(users)
        .where(
          and(
            eq(users.accountId, account.id),
            eq(users.role, "admin"),
            eq(users.disabled, false),
            userId ? eq(users.id, userId) : undefined,
          ),
        )
        .orderBy(asc(users.createdAt), asc(users.id))
        .limit(1);
      if (!admin)
        throw invalidRequest([
          { field: "userId", message: userId ? "is not an enabled admin of this account" : "the account has no enabled admin" },
        ]);
      const now = new Date();
      const { raw, row } = await mintAdminKey(account, admin.id, "operator", "recovery", now);
      const audit = { accountId: account.id, actor: "operator", requestId: c.get("requestId") };
      await batch(c.env.DB, [
        d.insert(apiKeys).values(row),
        auditInsert(d, { ...audit, action: "account.recovered", target: admin.id }, now),
        auditInsert(d, { ...audit, action: "key.created", target: row.id }, now),
      ]);
      c.header("Cache-Control", "no-store");
      return c.json({ ...keyView(row, now), key: raw }, 201);
    },
  )
  .all("/", allow("POST"))
  .all("/:id/recovery-key", allow("POST"));

async function requireOperator(authorization: string | undefined, token: string | undefined): Promise<void> {
  if (token === undefined) misconfigured("OPERATOR_TOKEN", "is not set; provisioning is disabled");
  if (authorization === undefined) throw new ApiError("missing_credentials", "Send the operator token as `Authorization: Bearer <token>`.");
  const sent = /^Bearer +(\S+) *$/i.exec(authorization)?.[1] ?? "";
  if (!(await constantTimeEqual(sent, token))) {
    throw new ApiError("invalid_operator_token", "The operator token is not valid.", { headers: invalidToken });
  }
}

/** A full-access key without expiry or limit of its own, for an admin of the account: the way into an account. */
function mintAdminKey(account: Account, ownerId: string, createdBy: string, name: string, now: Date) {
  const input = {
    accountId: account.id,
    ownerId,
    createdBy,
    name,
    prefix: account.keyPrefix,
    scopes: ["*"],
    expiresAt: null,
    rateLimit: null,
  };
  return mintKey(input, now);
}

/** Compares digests, so neither the content nor the length of the secret leaks through timing. */
async function constantTimeEqual(a: string, b: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [da, dbb] = await Promise.all([crypto.subtle.digest("SHA-256", enc.encode(a)), crypto.subtle.digest("SHA-256", enc.encode(b))]);
  return crypto.subtle.timingSafeEqual(da, dbb);
}
