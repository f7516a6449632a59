import { createRoute, type z } from "@hono/zod-openapi";
import { CreditsBalance, IdParam, PageQuery, page } from "../../core/schemas";
import { CreditsAdjustment, CreditsSettlement, LedgerEntryView, Settled } from "../../credits/schemas";
import {
  accountPoolLedger,
  adjustKeyCredits,
  adjustPoolCredits,
  adjustUserCredits,
  keyLedger,
  poolLedger,
  settleCredits,
  userBalance,
  userLedger,
} from "../../credits/service";
import { authenticate, idempotencyKeyOf } from "../../guards/authenticate";
import { backend } from "../../guards/backend";
import { pageOf } from "../../platform/db/pagination";
import {
  BODY_PROBLEMS,
  json,
  jsonBody,
  KEY_PROBLEMS,
  KEY_SECURITY,
  OPERATOR_SECURITY,
  problems,
  routes,
  VERIFY_SECURITY,
  withBody,
} from "../openapi";
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

const ADJUST_PROBLEMS = ["credits_insufficient", "credits_unlimited", "idempotency_key_reused", "rate_limiter_unavailable"] as const;
const ADJUST_DESCRIPTION =
  "`add`, `subtract` (never below zero: 409 `credits_insufficient`) or `set`; a balance that is unlimited is 409 `credits_unlimited` (configure its credits first). With `Idempotency-Key`, the same change sent again within 24 hours applies once and answers the same; another change under that key is 422. Audited, and a ledger entry with its actor and reason.";

/** The caller's account pool's ledger, and an admin's cap on the pool (mounted under /v1/account). */
export const accountCreditsRoutes = routes()
  .openapi(
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
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/credits",
      summary: "Subtract from the account's credits pool (admins)",
      description: `Only \`subtract\`: an admin caps what the account's keys may still spend; adding to or setting the pool is the operator's (403 \`operator_only\`), as the pool is what the plan sells. ${ADJUST_DESCRIPTION}`,
      security: KEY_SECURITY,
      middleware: withBody(authenticate("admin")),
      request: { body: jsonBody(CreditsAdjustment) },
      responses: {
        200: json(CreditsBalance, "The pool after the change"),
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "operator_only", ...ADJUST_PROBLEMS),
      },
    }),
    async (c) => {
      const p = c.get("principal");
      const balance = await adjustPoolCredits(c.get("deps"), p.accountId, c.req.valid("json"), idempotencyKeyOf(c), p);
      return c.json(balance as z.infer<typeof CreditsBalance>, 200);
    },
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

/** An admin's change to a key's own credits (mounted under /v1/api-keys). */
export const keyCreditsAdjustRoutes = routes().openapi(
  createRoute({
    method: "post",
    path: "/{id}/credits",
    summary: "Adjust a key's own credits (admins)",
    description: ADJUST_DESCRIPTION,
    security: KEY_SECURITY,
    middleware: withBody(authenticate("admin")),
    request: { params: IdParam, body: jsonBody(CreditsAdjustment) },
    responses: {
      200: json(CreditsBalance, "The key's balance after the change"),
      ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "not_found", ...ADJUST_PROBLEMS),
    },
  }),
  async (c) => {
    const deps = c.get("deps");
    const balance = await adjustKeyCredits(deps, c.get("principal"), c.req.valid("param").id, c.req.valid("json"), idempotencyKeyOf(c));
    return c.json(balance as z.infer<typeof CreditsBalance>, 200);
  },
);

/** The operator's change to an account's pool (mounted under /v1/accounts). */
export const poolCreditsAdjustRoutes = routes().openapi(
  createRoute({
    method: "post",
    path: "/{id}/credits",
    summary: "Adjust an account's credits pool",
    description: ADJUST_DESCRIPTION,
    security: OPERATOR_SECURITY,
    middleware: withBody(operator),
    request: { params: IdParam, body: jsonBody(CreditsAdjustment) },
    responses: {
      200: json(CreditsBalance, "The pool after the change"),
      ...problems(...OPERATOR_PROBLEMS, ...BODY_PROBLEMS, "not_found", ...ADJUST_PROBLEMS),
    },
  }),
  async (c) => {
    const balance = await adjustPoolCredits(c.get("deps"), c.req.valid("param").id, c.req.valid("json"), idempotencyKeyOf(c));
    return c.json(balance as z.infer<typeof CreditsBalance>, 200);
  },
);

/** What a request that reserved credits really cost, from the upstream or a backend (mounted at /v1/credits). */
export const settleRoutes = routes().openapi(
  createRoute({
    method: "post",
    path: "/settle",
    summary: "Settle a request's reserved credits at what it used",
    description:
      "Authorised by `VERIFY_TOKEN`. For a gateway route with `credits: {reserve, settle: true}` whose cost is known only later (a stream), or a verify call with `reserve`: what was reserved beyond `used` comes back; `used` above the reserve is charged only up to it. Once per reservation: a second settle, one after CREDITS_SETTLE_TIMEOUT_S (the reservation then settled at its reserve), or one naming another account is 404 and changes nothing.",
    security: VERIFY_SECURITY,
    middleware: withBody(backend),
    request: { body: jsonBody(CreditsSettlement) },
    responses: {
      200: json(Settled, "Settled"),
      ...problems(
        ...BODY_PROBLEMS,
        "missing_credentials",
        "invalid_verify_token",
        "not_found",
        "rate_limiter_unavailable",
        "configuration_error",
      ),
    },
  }),
  async (c) => c.json(await settleCredits(c.get("deps"), c.req.valid("json")), 200),
);

/** A person's balance, its ledger, and an admin's change to it (mounted under /v1/users). */
export const userCreditsRoutes = routes()
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/credits",
      summary: "A person's credits as of now (members: their own)",
      description:
        "The balance all the person's keys and sessions spend together, beside each key's own and the account's pool, when the account (or its plan) sets `userCredits`; `null`: unlimited.",
      security: KEY_SECURITY,
      middleware: authenticate("full"),
      request: { params: IdParam },
      responses: {
        200: json(CreditsBalance.nullable(), "The person's balance"),
        ...problems(...KEY_PROBLEMS, "not_found", "rate_limiter_unavailable"),
      },
    }),
    async (c) => {
      const balance = await userBalance(c.get("deps"), c.get("principal"), c.req.valid("param").id);
      return c.json(balance as z.infer<typeof CreditsBalance> | null, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/{id}/credits",
      summary: "Adjust a person's credits (admins)",
      description: ADJUST_DESCRIPTION,
      security: KEY_SECURITY,
      middleware: withBody(authenticate("admin")),
      request: { params: IdParam, body: jsonBody(CreditsAdjustment) },
      responses: {
        200: json(CreditsBalance, "The person's balance after the change"),
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "not_found", ...ADJUST_PROBLEMS),
      },
    }),
    async (c) => {
      const deps = c.get("deps");
      const balance = await adjustUserCredits(deps, c.get("principal"), c.req.valid("param").id, c.req.valid("json"), idempotencyKeyOf(c));
      return c.json(balance as z.infer<typeof CreditsBalance>, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get",
      path: "/{id}/credits/ledger",
      summary: "A person's credits ledger, newest first (members: their own)",
      description: CAUGHT_UP,
      security: KEY_SECURITY,
      middleware: authenticate("full"),
      request: { params: IdParam, query: PageQuery },
      responses: { 200: json(LEDGER_PAGE, "A page of the person's ledger"), ...problems(...KEY_PROBLEMS, "invalid_request", "not_found") },
    }),
    async (c) => {
      const ledger = await userLedger(c.get("deps"), c.get("principal"), c.req.valid("param").id, pageOf(c.req.valid("query")));
      return c.json(ledger, 200);
    },
  );
