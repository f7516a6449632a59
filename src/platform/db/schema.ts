import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

// Timestamps are ISO-8601 UTC strings (`Date#toISOString`): they sort as text and read as the API shows them.

/** What a provider sells: named limits an account's keys get unless the account or the key sets its own. */
export const plans = sqliteTable("plans", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  /** JSON array of `{name, limit, windowSeconds}`. */
  rateLimits: text("rate_limits").notNull(),
  /** JSON `{remaining, refill}`: the credits pool of each account on the plan; null: unlimited. */
  credits: text("credits"),
  /** JSON `{remaining, refill}`: the balance each person of an account on the plan has; null: unlimited. */
  userCredits: text("user_credits"),
  createdAt: text("created_at").notNull(),
  updatedAt: text("updated_at").notNull(),
});

export const accounts = sqliteTable(
  "accounts",
  {
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    /** An optional unique name for URLs (`/organizations/<slug>/...`); gateway routes accept it in place of the id. */
    slug: text("slug"),
    keyPrefix: text("key_prefix").notNull(),
    membersCanCreateKeys: integer("members_can_create_keys", { mode: "boolean" }).notNull().default(false),
    /** The default rate limit of the account's keys; with `rateLimits`, the one named "default" or the first. */
    rateLimit: integer("rate_limit").notNull().default(60),
    rateLimitWindowSeconds: integer("rate_limit_window_seconds").notNull().default(60),
    /** JSON `[{name, limit, windowSeconds}, ...]`: the default limits, all named; null when `rateLimit` alone is the default. */
    rateLimits: text("rate_limits"),
    /** The highest limit members may give their own keys; both null when the account's default is the ceiling. */
    maxRateLimit: integer("max_rate_limit"),
    maxRateLimitWindowSeconds: integer("max_rate_limit_window_seconds"),
    /** The plan the account is on, or null: the account's own default limit. */
    planId: text("plan_id").references(() => plans.id),
    /** JSON `{remaining, refill}`: the account's credits pool, overriding its plan's; null: the plan's (or unlimited). */
    credits: text("credits"),
    /** JSON `{remaining, refill}`: the balance each person of the account has, overriding its plan's; null: the plan's (or unlimited). */
    userCredits: text("user_credits"),
    createdAt: text("created_at").notNull(),
    /** The provider's own id of the account (its billing's), unique across the deployment. */
    externalId: text("external_id"),
    /** The provider's JSON object about the account (at most 1 KB), as stored text. */
    meta: text("meta"),
    /** The format of the keys it issues: `checksummed` (a scanner can recognise them) or the seeds' `plain`. */
    keyFormat: text("key_format", { enum: ["checksummed", "plain"] })
      .notNull()
      .default("plain"),
    /** What a reported leak of one of its keys does: `revoke` it at once, or `notify` (mark it, and tell). */
    leakResponse: text("leak_response", { enum: ["revoke", "notify"] })
      .notNull()
      .default("notify"),
    /** JSON array of CIDRs its keys are used from when they set none of their own; null: anywhere. */
    allowedIps: text("allowed_ips"),
  },
  (t) => [
    uniqueIndex("accounts_slug").on(t.slug),
    uniqueIndex("accounts_external_id").on(t.externalId),
    index("accounts_plan").on(t.planId),
  ],
);

export const users = sqliteTable(
  "users",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    email: text("email").notNull(),
    role: text("role", { enum: ["admin", "member"] }).notNull(),
    disabled: integer("disabled", { mode: "boolean" }).notNull().default(false),
    /**
     * JSON array: what the user's keys may reach, `["*"]` or grants such as `["project:warehouse"]`. A key's rights
     * are its scopes intersected with these; admins always have `["*"]`.
     */
    grants: text("grants").notNull().default('["*"]'),
    /** `pbkdf2-sha256$<iterations>$<salt>$<hash>` (auth/password.ts); null until the user accepts an invitation. */
    passwordHash: text("password_hash"),
    createdAt: text("created_at").notNull(),
  },
  (t) => [
    index("users_email").on(t.email),
    uniqueIndex("users_account_email").on(t.accountId, t.email),
    index("users_account_created").on(t.accountId, t.createdAt),
  ],
);

export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    ownerId: text("owner_id")
      .notNull()
      .references(() => users.id),
    createdBy: text("created_by").notNull(),
    name: text("name").notNull(),
    prefix: text("prefix").notNull(),
    start: text("start").notNull(),
    hash: text("hash").notNull(),
    /** JSON array of grants: `["*"]` or `["mailbox:mbx_1", ...]`. */
    scopes: text("scopes").notNull(),
    expiresAt: text("expires_at"),
    /**
     * Per-key rate limits that override the account's default: JSON `[{name, limit, windowSeconds}, ...]` in
     * `rateLimits`, with the one named "default" (or the first) in `rateLimit`; written before limits had names, a key
     * has only `rateLimit` (its limit named "default"). All null when the account's default applies.
     */
    rateLimit: integer("rate_limit"),
    rateLimitWindowSeconds: integer("rate_limit_window_seconds"),
    rateLimits: text("rate_limits"),
    /** JSON `{remaining, refill}`: the key's own credits, spent beside its account's pool; null: unlimited. */
    credits: text("credits"),
    createdAt: text("created_at").notNull(),
    lastUsedAt: text("last_used_at"),
    lastAuthMethod: text("last_auth_method", { enum: ["bearer", "header", "query", "verify"] }),
    /** May lie in the future: a rotated key stays valid until the end of its grace period. */
    revokedAt: text("revoked_at"),
    revokedBy: text("revoked_by"),
    rotatedFrom: text("rotated_from"),
    /** The provider's own id of the key, unique within its account. */
    externalId: text("external_id"),
    /** The provider's JSON object about the key (at most 1 KB), as stored text. */
    meta: text("meta"),
    /** JSON array of CIDRs the key may be used from (judged on CF-Connecting-IP); null: the account's. */
    allowedIps: text("allowed_ips"),
    /** When a leak of the key was first reported. */
    leakedAt: text("leaked_at"),
  },
  (t) => [
    uniqueIndex("api_keys_hash").on(t.hash),
    uniqueIndex("api_keys_account_external_id").on(t.accountId, t.externalId),
    // A key is replaced at most once, so two concurrent rotations cannot both succeed.
    uniqueIndex("api_keys_rotated_from").on(t.rotatedFrom).where(sql`rotated_from IS NOT NULL`),
    index("api_keys_account_created").on(t.accountId, t.createdAt),
    // A person's keys: what a member lists and whose usage they read, and the keys whose rights change with the person.
    index("api_keys_owner_created").on(t.ownerId, t.createdAt),
    // The cron's notices of keys about to expire read the few keys that expire, not every key of every account.
    index("api_keys_expires").on(t.expiresAt).where(sql`expires_at IS NOT NULL`),
  ],
);

export const auditEvents = sqliteTable(
  "audit_events",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    /** The user who acted, or `operator` for provisioning. */
    actor: text("actor").notNull(),
    action: text("action").notNull(),
    target: text("target").notNull(),
    createdAt: text("created_at").notNull(),
    requestId: text("request_id").notNull(),
    /** What else the event names: where a leaked key was seen. */
    detail: text("detail"),
  },
  (t) => [index("audit_events_account_created").on(t.accountId, t.createdAt)],
);

/** Browser widgets: public ids that mint short-lived chat tokens for allowed origins. */
export const agents = sqliteTable(
  "agents",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    name: text("name").notNull(),
    /** JSON array of exact origins, e.g. `["https://shop.example"]`; agent_origins indexes the same list. */
    allowedOrigins: text("allowed_origins").notNull(),
    tokenTtlSeconds: integer("token_ttl_seconds").notNull(),
    /**
     * The secret the customer's backend signs end-user ids with (HMAC-SHA256), so a browser can prove who its user is.
     * Kept as is because verifying an HMAC needs it; shown once, never in a view; null until one is issued.
     */
    identitySecret: text("identity_secret"),
    disabled: integer("disabled", { mode: "boolean" }).notNull().default(false),
    createdAt: text("created_at").notNull(),
  },
  (t) => [index("agents_account_created").on(t.accountId, t.createdAt)],
);

/** One row per allowed origin of an agent, so a CORS preflight (which names no agent) is one indexed read. */
export const agentOrigins = sqliteTable(
  "agent_origins",
  {
    agentId: text("agent_id")
      .notNull()
      .references(() => agents.id),
    origin: text("origin").notNull(),
  },
  (t) => [uniqueIndex("agent_origins_agent_origin").on(t.agentId, t.origin), index("agent_origins_origin").on(t.origin)],
);

/**
 * Which account a resource of the provider's API belongs to (`mailbox` `mbx_1`), so a gateway route or a verify call
 * naming it never matches for another account's key. Ids are unique per type; routes whose URL names the account
 * (`account`) need no entry.
 */
export const resourceOwners = sqliteTable(
  "resource_owners",
  {
    type: text("type").notNull(),
    resourceId: text("resource_id").notNull(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    createdAt: text("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.type, t.resourceId] }), index("resource_owners_account").on(t.accountId)],
);

/** One-time links that let a user set a password (a first one, or a new one: the reset). Only a hash is kept. */
export const invitations = sqliteTable(
  "invitations",
  {
    id: text("id").primaryKey(),
    userId: text("user_id")
      .notNull()
      .references(() => users.id),
    tokenHash: text("token_hash").notNull(),
    expiresAt: text("expires_at").notNull(),
    /** Set when used, or when a newer invitation of the same user replaces it. */
    usedAt: text("used_at"),
    createdAt: text("created_at").notNull(),
  },
  (t) => [uniqueIndex("invitations_token_hash").on(t.tokenHash), index("invitations_user").on(t.userId)],
);

/**
 * A person's login: access tokens name it (`sid`) and are refused once it has ended. `refreshHash` is the hash of the
 * one refresh token that works now, `previousRefreshHash` of the one it replaced at `refreshedAt`: presented within
 * the grace it answers the same pair again, later it ends the session. A secret matching neither changes nothing.
 */
export const sessions = sqliteTable(
  "sessions",
  {
    id: text("id").primaryKey(),
    userId: text("user_id")
      .notNull()
      .references(() => users.id),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    refreshHash: text("refresh_hash").notNull(),
    previousRefreshHash: text("previous_refresh_hash"),
    refreshedAt: text("refreshed_at"),
    userAgent: text("user_agent"),
    createdAt: text("created_at").notNull(),
    lastUsedAt: text("last_used_at").notNull(),
    /** The absolute end: 30 days after login, whatever refreshes happen. */
    expiresAt: text("expires_at").notNull(),
    endedAt: text("ended_at"),
    /** `logout`, `password_changed`, `user_disabled`, `refresh_reused`, `ended_by_user`. */
    endReason: text("end_reason"),
  },
  (t) => [index("sessions_user_created").on(t.userId, t.createdAt)],
);

/**
 * Every movement of a credits balance, flushed from the object that holds the balance (a key's, or the account pool's
 * `account:<id>` counter, or a person's `user:<id>`). Spends, and lease returns, are summed per owner and UTC minute (`count` entries in one row);
 * every other movement is its own row. Ids are made in the object, so a flush repeated after a failure writes nothing
 * twice. No foreign keys: a row the object could not write would hold back every row after it, and the ledger
 * outlives what it names.
 */
export const creditLedger = sqliteTable(
  "credit_ledger",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    /** The key whose own balance moved; null for the account pool's and a person's entries. */
    keyId: text("key_id"),
    /** The person whose balance moved (`user:<id>`); null for a key's and the account pool's entries. */
    userId: text("user_id"),
    /** When it moved (a summed row: its last entry), ISO-8601 UTC. */
    at: text("at").notNull(),
    delta: integer("delta").notNull(),
    balanceAfter: integer("balance_after").notNull(),
    kind: text("kind", { enum: ["spend", "refund", "refill", "adjust", "reserve", "settle"] }).notNull(),
    /** How many entries the row sums: 1 except for a minute's spends or lease returns. */
    count: integer("count").notNull().default(1),
    requestId: text("request_id"),
    actor: text("actor"),
    reason: text("reason"),
  },
  (t) => [index("credit_ledger_owner_at").on(t.accountId, t.keyId, t.at, t.id), index("credit_ledger_user_at").on(t.userId, t.at, t.id)],
);

export type Plan = typeof plans.$inferSelect;
export type Account = typeof accounts.$inferSelect;
export type Agent = typeof agents.$inferSelect;
export type User = typeof users.$inferSelect;
export type ApiKey = typeof apiKeys.$inferSelect;

/**
 * An account's webhook endpoints (the Standard Webhooks specification): where its events are POSTed, signed with the
 * endpoint's secret (and, with `ed25519`, Keygate's public key as well).
 */
export const webhooks = sqliteTable(
  "webhooks",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    url: text("url").notNull(),
    /** JSON array of event types, or `["*"]`. */
    events: text("events").notNull(),
    description: text("description"),
    /** `whsec_` + base64 of 32 random bytes: what signs every delivery (it has to be kept to sign). */
    secret: text("secret").notNull(),
    /** The secret before the last rotation, which signs beside the new one until `previousSecretUntil`. */
    previousSecret: text("previous_secret"),
    previousSecretUntil: text("previous_secret_until"),
    /** Whether deliveries also carry an Ed25519 signature (`v1a,`) under Keygate's published key. */
    ed25519: integer("ed25519", { mode: "boolean" }).notNull().default(false),
    /** Since when every delivery to it has failed; null while it answers. */
    failingSince: text("failing_since"),
    disabledAt: text("disabled_at"),
    disabledReason: text("disabled_reason"),
    createdAt: text("created_at").notNull(),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [index("webhooks_account").on(t.accountId)],
);

/**
 * Events, written in the same D1 batch as the change they tell of (an outbox), then handed to the queue; `queuedAt`
 * null until then. Nothing here holds a key, a hash, a password or a token.
 */
export const webhookEvents = sqliteTable(
  "webhook_events",
  {
    /** The `webhook-id` of every delivery of it. */
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    type: text("type").notNull(),
    /** JSON: the event's `data`. */
    data: text("data").notNull(),
    createdAt: text("created_at").notNull(),
    queuedAt: text("queued_at"),
  },
  (t) => [index("webhook_events_unqueued").on(t.queuedAt, t.createdAt), index("webhook_events_account").on(t.accountId, t.createdAt)],
);

/** One event for one endpoint: its attempts until one succeeds, or it has failed for good. */
export const webhookDeliveries = sqliteTable(
  "webhook_deliveries",
  {
    id: text("id").primaryKey(),
    webhookId: text("webhook_id").notNull(),
    eventId: text("event_id").notNull(),
    accountId: text("account_id").notNull(),
    status: text("status", { enum: ["pending", "succeeded", "failed"] }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: text("next_attempt_at"),
    createdAt: text("created_at").notNull(),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [
    uniqueIndex("webhook_deliveries_event").on(t.webhookId, t.eventId),
    index("webhook_deliveries_webhook").on(t.webhookId, t.createdAt),
    // The cron's sweep of overdue attempts: the pending deliveries due before a time, not every delivery ever made.
    index("webhook_deliveries_due").on(t.status, t.nextAttemptAt),
  ],
);

/** Every attempt of a delivery: when, what the endpoint answered (or why nothing), and how long it took. */
export const webhookAttempts = sqliteTable(
  "webhook_attempts",
  {
    id: text("id").primaryKey(),
    deliveryId: text("delivery_id").notNull(),
    at: text("at").notNull(),
    /** The endpoint's status code; null when it did not answer (`error` says why). */
    statusCode: integer("status_code"),
    error: text("error"),
    durationMs: integer("duration_ms").notNull(),
  },
  (t) => [index("webhook_attempts_delivery").on(t.deliveryId, t.at)],
);

export type Webhook = typeof webhooks.$inferSelect;
export type WebhookDelivery = typeof webhookDeliveries.$inferSelect;
export type WebhookAttempt = typeof webhookAttempts.$inferSelect;

/**
 * What a principal's limits and balances are built from (core/principal.ts): the account's own and its plan's, read
 * with the account joined and its plan left-joined. Every record a key's or a person's object keeps selects these.
 */
export const accountLimitColumns = {
  rateLimit: accounts.rateLimit,
  rateLimitWindowSeconds: accounts.rateLimitWindowSeconds,
  rateLimits: accounts.rateLimits,
  planLimits: plans.rateLimits,
  credits: accounts.credits,
  planCredits: plans.credits,
  userCredits: accounts.userCredits,
  planUserCredits: plans.userCredits,
  maxRateLimit: accounts.maxRateLimit,
  maxRateLimitWindowSeconds: accounts.maxRateLimitWindowSeconds,
};
