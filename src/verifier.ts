import { WorkerEntrypoint } from "cloudflare:workers";
import type { z } from "@hono/zod-openapi";
import { getConfig } from "./config";
import { withDatabaseDeadline } from "./db/client";
import type { Bindings, CounterContext, Variables } from "./env";
import { type Verdict, VerifyRequest, verifyKey } from "./keys/verify";
import { fieldErrors } from "./openapi";

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
    const vars: Variables = { requestId: `req_${crypto.randomUUID().replaceAll("-", "")}`, config: getConfig(this.env), corsOrigin: null };
    const c: CounterContext = {
      env: withDatabaseDeadline(this.env),
      executionCtx: this.ctx,
      get: (key) => vars[key],
      // No response to mark: a caller in open mode sees `rateLimit: null`.
      header: () => {},
    };
    return verifyKey(c, parsed.data);
  }
}
