import { z } from "@hono/zod-openapi";
import { Instant, Timestamp } from "../core/schemas";

const MAX_RANGE_MS = 31 * 86_400_000;

/** `?from=&to=`: by default the last 24 hours; at most 31 days; `from` before `to`. */
export const UsageQuery = z
  .object({
    from: Instant.optional().openapi({ param: { name: "from", in: "query" }, description: "Default: 24 hours before `to`" }),
    to: Instant.optional().openapi({ param: { name: "to", in: "query" }, description: "Default: now" }),
  })
  .transform(({ from, to }, ctx) => {
    const end = to ?? new Date().toISOString();
    const start = from ?? new Date(Date.parse(end) - 86_400_000).toISOString();
    if (start >= end) ctx.addIssue({ code: "custom", path: ["from"], message: "must be before to" });
    else if (Date.parse(end) - Date.parse(start) > MAX_RANGE_MS)
      ctx.addIssue({ code: "custom", path: ["from"], message: "must be at most 31 days before to" });
    return { from: start, to: end };
  });

const Hour = z.strictObject({
  hour: Timestamp.openapi({ description: "The hour's start" }),
  admitted: z.number().int(),
  rateLimited: z.number().int(),
  creditsSpent: z.number().openapi({ description: "Credits the admitted requests spent (less what came back)" }),
});

export const KeyUsage = z.strictObject({ keyId: z.string(), from: Timestamp, to: Timestamp, series: z.array(Hour) }).openapi("KeyUsage");

export const AccountUsage = z
  .strictObject({
    from: Timestamp,
    to: Timestamp,
    series: z.array(Hour),
    keys: z
      .array(z.strictObject({ keyId: z.string(), admitted: z.number().int(), rateLimited: z.number().int(), creditsSpent: z.number() }))
      .openapi({
        description: "Each key's totals over the range (members: their own keys)",
      }),
  })
  .openapi("AccountUsage");
