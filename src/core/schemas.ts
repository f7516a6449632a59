import { z } from "@hono/zod-openapi";
import { formatBlock, MAX_ALLOWED_IPS, parseAddress, parseBlock } from "./cidr";
import { type CreditsConfig, MAX_CREDITS, nextBoundary } from "./credits";
import { DEFAULT_LIMIT, LIMIT_NAME, type Limit, MAX_LIMIT, MAX_LIMITS, MAX_WINDOW_SECONDS, named, type Policy } from "./window";

const EXPECTED: Record<string, string> = {
  string: "a string",
  number: "a number",
  boolean: "true or false",
  object: "an object",
  array: "an array",
};

// One wording for every field of every request. Workers refuse code generation from strings, so zod runs jitless.
z.config({
  jitless: true,
  customError: (issue) => {
    switch (issue.code) {
      case "invalid_type":
        return issue.input === undefined ? "is required" : `must be ${EXPECTED[issue.expected] ?? issue.expected}`;
      case "invalid_value":
        return `must be one of: ${issue.values.join(", ")}`;
      case "too_small":
        return issue.origin === "string" || issue.origin === "array" ? "must not be empty" : undefined;
      case "too_big":
        if (issue.origin === "string") return `must be at most ${issue.maximum} characters`;
        return issue.origin === "array" ? `must have at most ${issue.maximum} items` : undefined;
      default:
        return undefined;
    }
  },
});

/**
 * `base` with more fields, as one closed object. (zod's `.extend` of a named schema is documented as an `allOf` of the
 * base and a closed branch, which a JSON Schema validator reads as forbidding the base's own fields.)
 */
export const extend = <B extends z.ZodObject, S extends z.ZodRawShape>(base: B, shape: S) =>
  z.strictObject({ ...(base.shape as B["shape"]), ...shape });

/**
 * `schema` or `null`, documented as exactly that (`anyOf` of the two); `.nullable()` of a named schema is documented
 * as an `allOf` with the named schema, which `null` never matches.
 */
export const orNull = <T extends z.ZodType>(schema: T) => z.union([schema, z.null()]);

/** Trimmed, non-empty text of at most `max` characters. */
export const text = (max: number) => z.string().trim().min(1).max(max);

/**
 * A string matching `pattern` (anchored with `^` and `$`) once trimmed, with `hint` saying what is expected; the
 * document's pattern allows the surrounding spaces the trim takes away.
 */
export const matching = (pattern: RegExp, hint: string) =>
  z
    .string()
    .trim()
    .regex(pattern, hint)
    .openapi({ pattern: `^\\s*(?:${pattern.source.slice(1, -1)})\\s*$` });

/** An integer from `min` to `max`, with one message for every way to miss. */
export const integer = (min: number, max: number) => {
  const error = `must be an integer from ${min} to ${max}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
};

/**
 * An `Idempotency-Key` (the IETF draft's header: a structured-field string, its quotes optional here): 1-255 visible
 * ASCII characters.
 */
export const IdempotencyKey = z
  .string()
  .regex(/^[\x21-\x7e]{1,255}$/, "must be 1-255 visible ASCII characters")
  .openapi({ example: "8e03978e-40d5-43e8-bc93-6894a57f9324" });

/** A `{limit, windowSeconds}` policy: at most `limit` requests in any window of `windowSeconds`. */
export const RateLimit = z
  .strictObject({ limit: integer(1, MAX_LIMIT), windowSeconds: integer(1, MAX_WINDOW_SECONDS) })
  .openapi("RateLimit", { example: { limit: 60, windowSeconds: 60 } });

/**
 * One named limit of several: `{name, limit, windowSeconds}`, and `shared: "account"` when the whole account spends it
 * (`"user"`: each person, all their keys together).
 */
export const NamedLimit = z
  .strictObject({
    name: z.string().regex(LIMIT_NAME, "must be 1-32 characters: a lowercase letter, then lowercase letters, digits, _ or -"),
    limit: integer(1, MAX_LIMIT),
    windowSeconds: integer(1, MAX_WINDOW_SECONDS),
    shared: z.enum(["account", "user"]).optional().openapi({
      description:
        "`account`: one budget every key of the account spends together, so more keys do not make more requests; `user`: one budget per person, all their keys and sessions together; only an account or a plan sets it",
    }),
  })
  .openapi("NamedLimit", { example: { name: "minute", limit: 10, windowSeconds: 60 } });

/** 1 to MAX_LIMITS named limits, each name once. */
const limitList = <T extends z.ZodType<{ name: string }>>(item: T) =>
  z
    .array(item)
    .min(1)
    .max(MAX_LIMITS)
    .superRefine((limits, ctx) => {
      const seen = new Set<string>();
      for (const [i, { name }] of limits.entries()) {
        if (seen.has(name)) ctx.addIssue({ code: "custom", path: [i, "name"], message: "names a limit already in the list" });
        seen.add(name);
      }
    });

/** An account's or a plan's limits: a request is admitted only when every one admits it. */
export const RateLimits = limitList(NamedLimit).openapi("RateLimits", {
  example: [
    { name: "minute", limit: 10, windowSeconds: 60 },
    { name: "day", limit: 1000, windowSeconds: 86_400, shared: "account" },
  ],
});

/** One of a key's own limits: a named limit that is the key's alone, never `shared`. */
export const KeyLimit = z
  .strictObject({
    ...NamedLimit.shape,
    // Refused with its reason (an unknown field would only say it is unknown), and documented as never there.
    shared: z
      .custom<never>(() => false, { error: "a key's own limits cannot be shared: shared limits belong to the account or its plan" })
      .optional()
      .openapi({ type: "string", not: {}, description: "Never on a key: shared limits belong to the account or its plan" }),
  })
  .openapi("KeyLimit", { example: { name: "minute", limit: 10, windowSeconds: 60 } });

/** A key's own limits: as an account's, but none shared (what the whole account spends together is not a key's to set). */
export const KeyRateLimits = limitList(KeyLimit).openapi("KeyRateLimits", {
  example: [
    { name: "minute", limit: 10, windowSeconds: 60 },
    { name: "day", limit: 100, windowSeconds: 86_400 },
  ],
});

/** A body's own limits: `rateLimits`, or `rateLimit` as the limit named "default"; undefined when it sends neither. */
export function sentLimits(body: { rateLimit?: Policy | null; rateLimits?: Limit[] }): Limit[] | undefined {
  if (body.rateLimits) return body.rateLimits;
  return body.rateLimit ? [named(body.rateLimit)] : undefined;
}

/** Refuses a body that sends both `rateLimit` and its long form `rateLimits`. */
export function oneLimitForm(body: { rateLimit?: unknown; rateLimits?: unknown }, ctx: z.RefinementCtx): void {
  if (body.rateLimit !== undefined && body.rateLimits !== undefined)
    ctx.addIssue({ code: "custom", path: ["rateLimits"], message: "send rateLimit or rateLimits, not both" });
}

/** Limits as stored (JSON text), checked as they are read back. */
export function storedLimits(json: string): Limit[] {
  return RateLimits.parse(JSON.parse(json));
}

/** What `rateLimit` shows of several limits: the one named "default", else the first. */
export function shorthand(limits: readonly Limit[]): Policy {
  const { limit, windowSeconds } = limits.find((l) => l.name === DEFAULT_LIMIT) ?? (limits[0] as Limit);
  return { limit, windowSeconds };
}

const ISO_INSTANT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|([+-])(\d{2}):(\d{2}))$/;
/** The last instant whose `toISOString()` has four year digits. */
const LATEST_INSTANT = Date.parse("9999-12-31T23:59:59.999Z");

/**
 * An ISO-8601 date-time with a timezone, answered in UTC; `future`: only instants after now. Only real calendar dates
 * and times (no 30 February, no hour 24, offsets up to ±23:59) up to the end of year 9999 UTC, so that every stored
 * instant has the fixed-width form of `toISOString()` and instants compare correctly as text in SQL.
 */
const instant = (future: boolean) =>
  z
    .string()
    .transform((value, ctx) => {
      const m = ISO_INSTANT.exec(value);
      if (!m) {
        ctx.addIssue({ code: "custom", message: "must be an ISO-8601 date-time with a timezone, e.g. 2027-01-01T00:00:00Z" });
        return z.NEVER;
      }
      type Parts = [number, number, number, number, number, number, number, number];
      const [y, mo, d, h, mi, sec, oh, om] = [1, 2, 3, 4, 5, 6, 10, 11].map((i) => Number(m[i] ?? 0)) as Parts;
      const calendar = new Date(Date.UTC(y, mo - 1, d));
      const real = calendar.getUTCFullYear() === y && calendar.getUTCMonth() === mo - 1 && calendar.getUTCDate() === d;
      const at = Date.parse(value);
      const problem =
        !real || h > 23 || mi > 59 || sec > 59 || oh > 23 || om > 59
          ? "is not a real date and time"
          : Number.isNaN(at) || at > LATEST_INSTANT
            ? "must be no later than 9999-12-31T23:59:59Z"
            : future && at <= Date.now()
              ? "must be in the future"
              : null;
      if (problem) {
        ctx.addIssue({ code: "custom", message: problem });
        return z.NEVER;
      }
      return new Date(at).toISOString();
    })
    .openapi({ type: "string", format: "date-time", example: "2027-01-01T00:00:00Z" });

/** An instant up to the end of year 9999 UTC (see `instant`). */
export const Instant = instant(false);

/** An instant after now and up to the end of year 9999 UTC (see `instant`). */
export const FutureInstant = instant(true);

/** An ISO-8601 UTC timestamp as the API writes them. */
export const Timestamp = z.string().openapi({ format: "date-time", example: "2026-11-23T08:00:00.000Z" });

/** `?limit=&cursor=` of every list (other parameters pass: the deprecated `userApiToken` travels in the query). */
/** A page holds DEFAULT_PAGE items unless `limit` asks for up to MAX_PAGE. */
export const DEFAULT_PAGE = 20;
export const MAX_PAGE = 100;

export const PageQuery = z.object({
  limit: z.coerce
    .number()
    .pipe(integer(1, MAX_PAGE))
    .optional()
    .openapi({ param: { name: "limit", in: "query" }, type: "integer", minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE }),
  cursor: z
    .string()
    .optional()
    .openapi({ param: { name: "cursor", in: "query" }, description: "`nextCursor` of the previous page" }),
});

/** A page of a list, newest first. */
export const page = <T extends z.ZodType>(item: T) => z.strictObject({ data: z.array(item), nextCursor: z.string().nullable() });

/** An id in a path; anything not of this account is 404, never 400, so a probe learns nothing. */
export const IdParam = z.object({ id: z.string().openapi({ param: { name: "id", in: "path" }, example: "key_5f0c9a1e2b7d43a8c6e1f0b2" }) });

/** A variable holding JSON: parsed, then checked by `schema`; unset or empty is `empty`. */
export const jsonText = <T extends z.ZodType>(schema: T, empty: string) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      try {
        return JSON.parse(v || empty) as unknown;
      } catch {
        ctx.addIssue({ code: "custom", message: "is not JSON" });
        return z.NEVER;
      }
    })
    .pipe(schema);

/** Signing keys: a list whose `kid`s are unique (the first signs, all verify). */
export const keyList = <T extends z.ZodType<{ kid: string }>>(key: T) =>
  z.array(key).refine((keys) => new Set(keys.map((k) => k.kid)).size === keys.length, "kids must be unique");

/** The provider's own id of an account or key: 1-128 printable ASCII characters, no spaces, so it travels as a header. */
export const ExternalId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\x21-\x7e]*$/, "must be printable ASCII characters without spaces")
  .openapi("ExternalId", { pattern: "^[\\x21-\\x7e]{1,128}$", example: "cus_9Nq1bX" });

/** The most `meta` may take, serialized as JSON, in UTF-8 bytes. */
export const MAX_META_BYTES = 1024;

/**
 * The provider's JSON object about an account or key, at most MAX_META_BYTES as JSON. Checked as sent, never rebuilt,
 * so what is stored is what was sent (a rebuilt object can lose a `__proto__` field).
 */
export const Meta = z
  .custom<Record<string, unknown>>((v) => typeof v === "object" && v !== null && !Array.isArray(v), { error: "must be a JSON object" })
  .refine((v) => new TextEncoder().encode(JSON.stringify(v)).length <= MAX_META_BYTES, `must be at most ${MAX_META_BYTES} bytes as JSON`)
  .openapi("Meta", {
    type: "object",
    additionalProperties: true,
    description: `Any JSON object of at most ${MAX_META_BYTES} bytes (UTF-8) as JSON`,
    example: { plan: "pro" },
  });

/** `externalId` and `meta` as a create or change takes them: absent leaves them, `null` clears them. */
export const externalFields = {
  externalId: orNull(ExternalId).optional().openapi({ description: "`null` clears it" }),
  meta: orNull(Meta).optional().openapi({ description: "`null` clears it" }),
};

/** `externalId` and `meta` as every view shows them: null when unset. */
export const externalView = { externalId: orNull(ExternalId), meta: orNull(Meta) };

/** A stored `meta`, as answers show it. */
export function parseMeta(meta: string | null): Record<string, unknown> | null {
  return meta === null ? null : (JSON.parse(meta) as Record<string, unknown>);
}

/** `meta` as D1 keeps it: JSON text, or null. */
export function storedMeta(meta: Record<string, unknown> | null | undefined): string | null {
  return meta == null ? null : JSON.stringify(meta);
}

/** The columns a change of `externalId` and `meta` sets: only the fields it names. */
export function externalChange(change: { externalId?: string | null; meta?: Record<string, unknown> | null }) {
  return {
    ...(change.externalId === undefined ? {} : { externalId: change.externalId }),
    ...(change.meta === undefined ? {} : { meta: storedMeta(change.meta) }),
  };
}

/** A refill of credits, in UTC: `amount` at every `interval` boundary; `dayOfMonth` (1-28) only for a monthly one. */
export const Refill = z
  .strictObject({
    amount: integer(1, MAX_CREDITS),
    interval: z.enum(["hour", "day", "month"]),
    mode: z.enum(["set", "add"]).openapi({ description: "`set`: the balance becomes `amount`; `add`: `amount` is added to it" }),
    dayOfMonth: integer(1, 28)
      .optional()
      .openapi({ description: "The day a monthly refill comes on, at 00:00 UTC (default 1); only with `interval: month`" }),
  })
  .superRefine((refill, ctx) => {
    if (refill.dayOfMonth !== undefined && refill.interval !== "month")
      ctx.addIssue({ code: "custom", path: ["dayOfMonth"], message: "is only for interval month" });
  })
  .openapi("Refill", { example: { amount: 1000, interval: "month", mode: "set", dayOfMonth: 1 } });

/** Credits as a key, an account or a plan is given them: the opening balance and its refill. */
export const Credits = z
  .strictObject({
    remaining: orNull(integer(0, MAX_CREDITS)).openapi({ description: "The balance it opens with; `null`: unlimited" }),
    refill: orNull(Refill).optional().openapi({ description: "Absent or `null`: never refilled" }),
  })
  .superRefine((credits, ctx) => {
    // An unlimited balance has nothing to refill; a refill alone would leave open what the balance starts at.
    if (credits.remaining === null && credits.refill)
      ctx.addIssue({
        code: "custom",
        path: ["refill"],
        message: "needs a number in remaining: an unlimited balance has nothing to refill",
      });
  })
  .openapi("Credits", { example: { remaining: 1000, refill: { amount: 1000, interval: "month", mode: "set" } } });

/** `credits` as a create or change takes it: absent leaves it (or sets none), `null` makes it unlimited. */
export const creditsField = orNull(Credits).optional().openapi({ description: "`null` or absent: unlimited" });

/** `userCredits` of an account or a plan: the balance each person opens with, which all their keys and sessions spend. */
export const userCreditsField = orNull(Credits).optional().openapi({
  description:
    "The balance each person of the account has, spent by all their keys and sessions together (beside the key's own and the pool); `null` or absent: unlimited",
});

/** Credits as sent, as the rules read them. */
export function creditsConfig(credits: z.infer<typeof Credits> | CreditsConfig): CreditsConfig {
  return { remaining: credits.remaining, refill: credits.refill ?? null };
}

/** Credits as D1 keeps them: JSON `CreditsConfig`, or null (unlimited). */
export function creditsColumn(credits: z.infer<typeof Credits> | CreditsConfig | null | undefined): string | null {
  return credits == null ? null : JSON.stringify(creditsConfig(credits));
}

/** Credits as set: what a balance opens with and its refill (a plan's, which no balance of its own spends). */
export const CreditsSetting = z
  .strictObject({
    remaining: z.number().int().nullable().openapi({ description: "The balance each holder opens with; `null`: unlimited" }),
    refill: orNull(Refill),
  })
  .openapi("CreditsSetting", { example: { remaining: 1000, refill: { amount: 1000, interval: "month", mode: "set" } } });

/** A balance of credits as of now: what is left, its refill and when the next one comes. */
export const CreditsBalance = z
  .strictObject({
    remaining: z.number().int().nullable().openapi({ description: "What is left as of now; `null`: unlimited" }),
    refill: orNull(Refill),
    nextRefillAt: Timestamp.nullable().openapi({ description: "The next refill boundary after now, in UTC; null without a refill" }),
  })
  .openapi("CreditsBalance", {
    example: { remaining: 1000, refill: { amount: 1000, interval: "month", mode: "set" }, nextRefillAt: "2027-01-01T00:00:00.000Z" },
  });

/**
 * A key's or an account's credits as configured to open, as of `now` (null: unlimited): what a key just created shows.
 * Every other read shows the live balance its object answers (credits/service.ts).
 */
export function creditsView(config: CreditsConfig | null, now: Date): z.infer<typeof CreditsBalance> | null {
  if (config === null) return null;
  const { remaining, refill } = config;
  return { remaining, refill, nextRefillAt: refill ? new Date(nextBoundary(now.getTime(), refill)).toISOString() : null };
}

/** A client's address: IPv4 or IPv6, without a prefix or zone. */
export const ClientIp = z
  .string()
  .max(64)
  .refine((ip) => parseAddress(ip.trim()) !== null, "must be an IPv4 or IPv6 address")
  .openapi({ example: "203.0.113.7" });

/**
 * The addresses a key (or an account's keys) may be used from: 1 to MAX_ALLOWED_IPS IPv4 or IPv6 CIDR blocks, a bare
 * address meaning that one host. Parsed into each block's canonical text (`203.0.113.7/32`, `2001:db8::/32`), in the
 * order sent, so later checks name a block by the index it was sent at; a block with host bits set is refused
 * (core/cidr.ts `parseBlock`).
 */
export const AllowedIps = z
  .array(z.string().max(64))
  .min(1, "must not be empty; send null to allow every address")
  .max(MAX_ALLOWED_IPS)
  .transform((list, ctx) => {
    const stored: string[] = [];
    for (const [i, text] of list.entries()) {
      const block = parseBlock(text);
      if ("error" in block) ctx.addIssue({ code: "custom", path: [i], message: block.error });
      else stored.push(formatBlock(block));
    }
    return stored;
  })
  .openapi("AllowedIps", {
    type: "array",
    items: { type: "string", maxLength: 64 },
    minItems: 1,
    maxItems: MAX_ALLOWED_IPS,
    description: `Up to ${MAX_ALLOWED_IPS} IPv4 or IPv6 CIDR blocks (a bare address is one host: /32 or /128), judged on \`CF-Connecting-IP\` only. Stored and shown as each block's network and prefix; a block with bits set past its prefix is refused.`,
    example: ["203.0.113.0/24", "2001:db8::/32"],
  });

/** `allowedIps` as a create or change takes it: absent leaves it (or sets none), `null` clears it. */
export const allowedIpsField = orNull(AllowedIps).optional();

/** Allowed addresses as D1 keeps them: JSON of the canonical blocks, each once; null: none set. */
export function allowedIpsColumn(list: readonly string[] | null): string | null {
  return list === null ? null : JSON.stringify([...new Set(list)]);
}

/** Stored allowed addresses (JSON), as views show them; null: none set. */
export function parseAllowedIps(json: string | null): string[] | null {
  return json === null ? null : (JSON.parse(json) as string[]);
}
