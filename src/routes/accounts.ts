import { and, asc, eq } from "drizzle-orm";
import { type Context, Hono } from "hono";
import { invalidToken } from "../auth/credentials";
import { Fields, readJson, readRateLimit } from "../body";
import { misconfigured } from "../config";
import { auditInsert } from "../db/audit";
import { batch, db } from "../db/client";
import { type Account, accounts, apiKeys, users } from "../db/schema";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { DEFAULT_PREFIX, newId, PREFIX } from "../keys/format";
import { keyView, mintKey } from "../keys/store";
import { spendPerAddress } from "../ratelimit/limiter";
import { DEFAULT_POLICY } from "../ratelimit/window";
import { userView } from "../users/schemas";
import { accountView } from "./account";
import { allow } from "./method-not-allowed";

/** Provisioning: the operator creates an account with its first admin and that admin's first full-access key. */
export const accountsRoutes = new Hono<AppEnv>()
  .post("/", async (c) => {
    await operator(c);
    const f = new Fields(await readJson(c));
    const name = f.string("name", { required: true, max: 200 });
    const keyPrefix = f.string("keyPrefix", {
      pattern: PREFIX,
      hint: "must be 2-12 characters: a lowercase letter, then lowercase letters or digits",
    });
    const membersCanCreateKeys = f.boolean("membersCanCreateKeys") ?? false;
    const rateLimit = readRateLimit(f) ?? DEFAULT_POLICY;
    const maxRateLimit = readRateLimit(f, "maxRateLimit", { nullable: true }) ?? null;
    const admin = f.object("admin", true);
    const email = admin?.string("email", {
      required: true,
      max: 254,
      pattern: /^[^\s@]+@[^\s@]+\.[^\s@]+$/,
      hint: "must be an email address",
    });
    f.done();

    const now = new Date();
    const account: Account = {
      id: newId("acc"),
      name: name as string,
      keyPrefix: keyPrefix ?? DEFAULT_PREFIX,
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
      email: (email as string).toLowerCase(),
      role: "admin" as const,
      disabled: false,
      createdAt: account.createdAt,
    };
    const { raw, row } = await mintKey(
      {
        accountId: account.id,
        ownerId: user.id,
        createdBy: user.id,
        name: "default",
        prefix: account.keyPrefix,
        scopes: ["*"],
        expiresAt: null,
        rateLimit: null,
      },
      now,
    );
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
    return c.json({ account: accountView(account), admin: userView(user), key: { ...keyView(row, now), key: raw } }, 201);
  })
  /**
   * The way back for an account that lost every admin key: the operator mints a full-access key for one of its enabled
   * admins (`userId`, by default the longest-standing one), audited as the operator's act.
   */
  .post("/:id/recovery-key", async (c) => {
    await operator(c);
    const f = new Fields(await readJson(c));
    const userId = f.string("userId", { max: 64 });
    f.done();

    const d = db(c.env.DB);
    const [account] = await d
      .select()
      .from(accounts)
      .where(eq(accounts.id, c.req.param("id")))
      .limit(1);
    if (!account) throw new ApiError("not_found", "No account with this id.");
    const [admin] = await d
      .select()
      .from(users)
      .where(
        and(eq(users.accountId, account.id), eq(users.role, "admin"), eq(users.disabled, false), userId ? eq(users.id, userId) : undefined),
      )
      .orderBy(asc(users.createdAt), asc(users.id))
      .limit(1);
    if (!admin) {
      throw new ApiError("invalid_request", "Invalid fields: userId.", {
        errors: [{ field: "userId", message: userId ? "is not an enabled admin of this account" : "the account has no enabled admin" }],
      });
    }
    const now = new Date();
    const { raw, row } = await mintKey(
      {
        accountId: account.id,
        ownerId: admin.id,
        createdBy: "operator",
        name: "recovery",
        prefix: account.keyPrefix,
        scopes: ["*"],
        expiresAt: null,
        rateLimit: null,
      },
      now,
    );
    const audit = { accountId: account.id, actor: "operator", requestId: c.get("requestId") };
    await batch(c.env.DB, [
      d.insert(apiKeys).values(row),
      auditInsert(d, { ...audit, action: "account.recovered", target: admin.id }, now),
      auditInsert(d, { ...audit, action: "key.created", target: row.id }, now),
    ]);
    c.header("Cache-Control", "no-store");
    return c.json({ ...keyView(row, now), key: raw }, 201);
  })
  .all("/", allow("POST"))
  .all("/:id/recovery-key", allow("POST"));

/** Operator calls spend their address's budget (so a guessed token gets few tries), then need the operator token. */
async function operator(c: Context<AppEnv>): Promise<void> {
  await spendPerAddress(c, "provision", c.get("config").ipPolicy);
  await requireOperator(c.req.header("Authorization"), c.get("config").operatorToken);
}

async function requireOperator(authorization: string | undefined, token: string | undefined): Promise<void> {
  if (token === undefined) misconfigured("OPERATOR_TOKEN", "is not set; provisioning is disabled");
  if (authorization === undefined) throw new ApiError("missing_credentials", "Send the operator token as `Authorization: Bearer <token>`.");
  const sent = /^Bearer +(\S+) *$/i.exec(authorization)?.[1] ?? "";
  if (!(await constantTimeEqual(sent, token))) {
    throw new ApiError("invalid_operator_token", "The operator token is not valid.", { headers: invalidToken });
  }
}

/** Compares digests, so neither the content nor the length of the secret leaks through timing. */
async function constantTimeEqual(a: string, b: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [da, dbb] = await Promise.all([crypto.subtle.digest("SHA-256", enc.encode(a)), crypto.subtle.digest("SHA-256", enc.encode(b))]);
  return crypto.subtle.timingSafeEqual(da, dbb);
}
