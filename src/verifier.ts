import { WorkerEntrypoint } from "cloudflare:workers";
import type { z } from "@hono/zod-openapi";
import { getConfig } from "./config";
import { withDatabaseDeadline } from "./db/client";
import type { Bindings } from "./env";
import { type Verdict, VerifyRequest, verifyKey } from "./keys/verify";
import { fieldErrors } from "./openapi";
import { counterContext } from "./ratelimit/limiter";

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
    const requestId = `req_${crypto.randomUUID().replaceAll("-", "")}`;
    const c = counterContext(withDatabaseDeadline(this.env), this.ctx, getConfig(this.env), requestId);
    return verifyKey(c, parsed.data);
  }
}
