import { z } from "@hono/zod-openapi";
import { Timestamp } from "../core/schemas";

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
