import { createMiddleware } from "hono/factory";
import { db } from "../db/client";
import type { AppEnv } from "../env";
import { ApiError } from "../errors";
import { parseKey } from "../keys/format";
import { touchKey, verifyKey } from "../keys/store";
import { deprecationHeaders, extractCredential, invalidToken } from "./credentials";

const REFUSED = {
  invalid_key: "The API key is not valid.",
  key_revoked: "The API key has been revoked.",
  key_expired: "The API key has expired.",
  key_owner_disabled: "The user who owns this API key is disabled.",
} as const;

/**
 * Authenticates the request with an API key and puts the principal on the context. Every protected route uses it.
 */
export const authenticate = createMiddleware<AppEnv>(async (c, next) => {
  const config = c.get("config");
  const now = new Date();
  const found = extractCredential(c.req.raw, new URL(c.req.url), config, now);
  if (!found) {
    throw new ApiError("missing_credentials", "Send your API key in the `X-API-Key` header or as `Authorization: Bearer <key>`.");
  }
  if (!parseKey(found.credential)) {
    throw new ApiError(
      "malformed_credentials",
      "The credential is not an API key: keys look like `<prefix>_` followed by 64 hex characters.",
      {
        headers: invalidToken,
      },
    );
  }
  const d = db(c.env.DB);
  const result = await verifyKey(d, found.credential, now);
  if (!result.ok) throw new ApiError(result.code, REFUSED[result.code], { headers: invalidToken });
  c.set("principal", result.principal);

  const touch = touchKey(d, result.key, found.method, now);
  if (touch) {
    c.executionCtx.waitUntil(
      touch.run().then(
        () => undefined,
        (err: unknown) => console.error(`lastUsedAt update failed for ${result.key.id}: ${String(err)}`),
      ),
    );
  }

  await next();
  if (found.method === "query") {
    for (const [name, value] of Object.entries(deprecationHeaders(config))) c.res.headers.set(name, value);
  }
});
