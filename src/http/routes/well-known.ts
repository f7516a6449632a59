import { createRoute, z } from "@hono/zod-openapi";
import { publicKeys } from "../../gateway/assertion";
import { json, problems, routes } from "../openapi";

/** How long upstreams may cache the key set: a new signing key should be published this long before it signs. */
const JWKS_MAX_AGE_SECONDS = 300;

const Jwks = z
  .strictObject({
    keys: z.array(
      z.strictObject({
        kid: z.string(),
        kty: z.literal("EC"),
        crv: z.literal("P-256"),
        x: z.string(),
        y: z.string(),
        alg: z.literal("ES256"),
        use: z.literal("sig"),
      }),
    ),
  })
  .openapi("Jwks");

export const wellKnownRoutes = routes().openapi(
  createRoute({
    method: "get",
    path: "/jwks.json",
    summary: "The public keys that verify the gateway's Keygate-Assertion (JWKS)",
    responses: { 200: json(Jwks, "Every configured assertion key, public half only"), ...problems() },
  }),
  async (c) => {
    c.header("Cache-Control", `public, max-age=${JWKS_MAX_AGE_SECONDS}`);
    return c.json(await publicKeys(c.get("config").assertionKeys), 200);
  },
);
