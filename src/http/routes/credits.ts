import { createRoute } from "@hono/zod-openapi";
import { IdParam, PageQuery, page } from "../../core/schemas";
import { LedgerEntryView } from "../../credits/schemas";
import { accountPoolLedger, keyLedger, poolLedger } from "../../credits/service";
import { authenticate } from "../../guards/authenticate";
import { pageOf } from "../../platform/db/pagination";
import { json, KEY_PROBLEMS, KEY_SECURITY, OPERATOR_SECURITY, problems, routes } from "../openapi";
import { OPERATOR_PROBLEMS, operator } from "./accounts";

const LEDGER_PAGE = page(LedgerEntryView).openapi("CreditLedgerPage");
const CAUGHT_UP =
  "Entries reach the ledger within a minute or so of the movement; a minute's spends are one row (`count` of them). Once it has caught up, the balance opened at plus every `delta` is the balance now.";

/** A key's own credits ledger, beside the key (mounted under /v1/api-keys). */
export const keyCreditsRoutes = routes().openapi(
  createRoute({
    method: "get",
    path: "/{id}/credits/ledger",
    summary: "A key's credits ledger, newest first (members: their own keys)",
    description: CAUGHT_UP,
    security: KEY_SECURITY,
    middleware: authenticate("full"),
    request: { params: IdParam, query: PageQuery },
    responses: { 200: json(LEDGER_PAGE, "A page of the key's ledger"), ...problems(...KEY_PROBLEMS, "invalid_request", "not_found") },
  }),
  async (c) => {
    const ledger = await keyLedger(c.get("deps"), c.get("principal"), c.req.valid("param").id, pageOf(c.req.valid("query")));
    return c.json(ledger, 200);
  },
);

/** The caller's account pool's ledger, for admins (mounted under /v1/account). */
export const accountCreditsRoutes = routes().openapi(
  createRoute({
    method: "get",
    path: "/credits/ledger",
    summary: "The account pool's credits ledger, newest first (admins)",
    description: CAUGHT_UP,
    security: KEY_SECURITY,
    middleware: authenticate("admin"),
    request: { query: PageQuery },
    responses: { 200: json(LEDGER_PAGE, "A page of the account pool's ledger"), ...problems(...KEY_PROBLEMS, "invalid_request") },
  }),
  async (c) => c.json(await poolLedger(c.get("deps"), c.get("principal"), pageOf(c.req.valid("query"))), 200),
);

/** Any account pool's ledger, for the operator, who sells it (mounted under /v1/accounts). */
export const operatorCreditsRoutes = routes().openapi(
  createRoute({
    method: "get",
    path: "/{id}/credits/ledger",
    summary: "An account pool's credits ledger, newest first",
    description: CAUGHT_UP,
    security: OPERATOR_SECURITY,
    middleware: operator,
    request: { params: IdParam, query: PageQuery },
    responses: {
      200: json(LEDGER_PAGE, "A page of the account pool's ledger"),
      ...problems(...OPERATOR_PROBLEMS, "invalid_request", "not_found"),
    },
  }),
  async (c) => c.json(await accountPoolLedger(c.get("deps"), c.req.valid("param").id, pageOf(c.req.valid("query"))), 200),
);
