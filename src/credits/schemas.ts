import { z } from "@hono/zod-openapi";
import { integer, Timestamp, text } from "../core/schemas";

/** One row of the credits ledger, as the API answers it. */
export const LedgerEntryView = z
  .strictObject({
    id: z.string(),
    at: Timestamp.openapi({ description: "When the balance moved; a summed row: when its last entry did" }),
    delta: z.number().openapi({ description: "How much the balance moved: negative spends, positive gives back" }),
    balanceAfter: z.number().openapi({ description: "The balance right after it" }),
    kind: z.enum(["spend", "refund", "refill", "adjust", "reserve", "settle"]),
    count: z.number().int().openapi({
      description: "How many entries the row sums: a minute's spends (or unspent lease returns) are one row; anything else is 1",
    }),
    requestId: z.string().nullable().openapi({ description: "The request it was for; null on a summed row" }),
    actor: z.string().nullable().openapi({ description: "Who adjusted the balance: a user's id, or `operator`" }),
    reason: z.string().nullable(),
  })
  .openapi("CreditLedgerEntry");

export type LedgerEntryView = z.infer<typeof LedgerEntryView>;

/** An admin's (a key's) or the operator's (an account pool's) change to a balance. */
export const CreditsAdjustment = z
  .strictObject({
    operation: z.enum(["add", "subtract", "set"]),
    amount: integer(0, 1_000_000_000_000),
    reason: text(200).optional(),
  })
  .openapi("CreditsAdjustment", { example: { operation: "add", amount: 500, reason: "goodwill after the outage" } });

/** The upstream's (or a backend's) statement of what a request that reserved credits really cost. */
export const CreditsSettlement = z
  .strictObject({
    requestId: z
      .string()
      .min(1)
      .max(100)
      .openapi({ description: "`Keygate-Request-Id` (the assertion's `jti`), or a verify answer's `requestId`" }),
    used: integer(0, 1_000_000_000),
    accountId: z.string().min(1).max(100).openapi({ description: "`Keygate-Account-Id`: the account the request was made for" }),
    keyId: z.string().min(1).max(100).optional().openapi({ description: "`Keygate-Key-Id`, when a key made the request" }),
    userId: z
      .string()
      .min(1)
      .max(100)
      .optional()
      .openapi({ description: "`Keygate-User-Id`, when the account gives each person a balance (`userCredits`)" }),
  })
  .openapi("CreditsSettlement", { example: { requestId: "req_4f1c…", used: 37, accountId: "acc_…", keyId: "key_…" } });

export const Settled = z
  .strictObject({
    requestId: z.string(),
    charged: z.number().int().openapi({ description: "What the request cost: `used`, at most the reserve" }),
    overrun: z.number().int().openapi({ description: "How far `used` went past the reserve (not charged)" }),
  })
  .openapi("CreditsSettled");
