import { createRoute, z } from "@hono/zod-openapi";
import { publicKeys } from "../../gateway/assertion";
import { ed25519PublicJwk, type SigningJwk } from "../../webhooks/signature";
import { json, problems, routes } from "../openapi";

/** How long upstreams may cache the key set: a new signing key should be published this long before it signs. */
const JWKS_MAX_AGE_SECONDS = 300;

const Jwks = z
  .strictObject({
    keys: z.array(
      z.union([
        z.strictObject({
          kid: z.string(),
          kty: z.literal("EC"),
          crv: z.literal("P-256"),
          x: z.string(),
          y: z.string(),
          alg: z.literal("ES256"),
          use: z.literal("sig"),
        }),
        z
          .strictObject({
            kid: z.string(),
            kty: z.literal("OKP"),
            crv: z.literal("Ed25519"),
            x: z.string(),
            alg: z.literal("EdDSA"),
            use: z.literal("sig"),
          })
          .openapi({ description: "The key that signs webhook deliveries' `v1a` signatures (README, Events)" }),
      ]),
    ),
  })
  .openapi("Jwks");

export const wellKnownRoutes = routes().openapi(
  createRoute({
    method: "get",
    path: "/jwks.json",
    summary: "The public keys that verify the gateway's Keygate-Assertion and webhook deliveries' Ed25519 signatures (JWKS)",
    responses: { 200: json(Jwks, "Every configured assertion key and the webhook key, public halves only"), ...problems() },
  }),
  async (c) => {
    c.header("Cache-Control", `public, max-age=${JWKS_MAX_AGE_SECONDS}`);
    const config = c.get("config");
    const { keys } = await publicKeys(config.assertionKeys);
    const webhookKey = config.webhookSigningKey;
    return c.json({ keys: [...keys, ...(webhookKey ? [ed25519PublicJwk(webhookKey as SigningJwk)] : [])] }, 200);
  },
);
