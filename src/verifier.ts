import { WorkerEntrypoint } from "cloudflare:workers";
import type { z } from "@hono/zod-openapi";
import { type Verdict, VerifyRequest, verifyKey } from "./keys/verify";
import { makeDeps } from "./platform/deps";
import type { Bindings } from "./platform/env";
import { apiErrorOf, fieldErrors } from "./platform/errors";
import { log, safeError } from "./platform/log";

/**
 * The verify call for Workers of the same Cloudflare account, through a service binding (no HTTP hop, no token: the
 * binding is the authorisation). `verify({key, resource?, cost?})` answers exactly what POST /v1/keys/verify answers;
 * invalid input and an unavailable database or rate limiter (closed mode) reject with an error naming the problem.
 */
export class KeygateVerifier extends WorkerEntrypoint<Bindings> {
  async verify(input: z.input<typeof VerifyRequest>): Promise<Verdict> {
    const parsed = VerifyRequest.safeParse(input);
    if (!parsed.success) {
      throw new TypeError(
        `invalid_request: ${fieldErrors(parsed.error)
          .map((e) => `${e.field} ${e.message}`)
          .join("; ")}`,
      );
    }
    // No response to mark: a caller in open mode sees `rateLimit: null`.
    const deps = makeDeps(this.env, this.ctx);
    try {
      return await verifyKey(deps, parsed.data);
    } catch (err) {
      throw callerError(err, deps.requestId);
    }
  }
}

/**
 * What the calling Worker is told of a failure: the problem's code and detail (`rate_limiter_unavailable: …`,
 * `database_unavailable: …`), as invalid input is told; anything else is an internal error, logged here by its class
 * and message only. Never what drizzle wraps a database error in: the query and its parameters, the key's hash among them.
 */
function callerError(err: unknown, requestId: string): Error {
  const known = apiErrorOf(err);
  if (known) return new Error(`${known.code}: ${known.detail}`);
  log("error", "unexpected_error", { requestId, error: safeError(err) });
  return new Error(`internal_error: Something went wrong on our side. Quote the request id ${requestId} when you report it.`);
}
