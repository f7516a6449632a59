import { createRoute, z } from "@hono/zod-openapi";
import { hashKey } from "../../core/ids";
import { verifyGithubSignature } from "../../guards/github";
import { spendOnAddress } from "../../guards/spending";
import { handleLeaks, knownHashes } from "../../keys/leaks";
import { ApiError, fieldErrors, invalidRequest } from "../../platform/errors";
import { json, jsonBody, problems, routes, withBody } from "../openapi";

/** The most matches one GitHub alert may carry, as the partner program documents. */
export const MAX_ALERT_MATCHES = 1000;

const LeakReportBody = z
  .strictObject({
    key: z.string().min(1).max(1024).openapi({ description: "The key as it was found" }),
    url: z
      .url({ protocol: /^https?$/ })
      .max(2048)
      .optional()
      .openapi({ description: "Where it was found" }),
  })
  .openapi("LeakReport");

const Alert = z
  .array(
    z.looseObject({
      token: z.string().min(1).max(1024),
      type: z.string().max(200),
      url: z.string().max(2048).optional(),
      source: z.string().max(200).optional(),
    }),
  )
  .max(MAX_ALERT_MATCHES);

const Feedback = z
  .array(
    z.strictObject({
      token_hash: z.string().openapi({ description: "SHA-256 of the token, hex: never the token itself" }),
      token_type: z.string(),
      label: z.enum(["true_positive", "false_positive"]),
    }),
  )
  .openapi("SecretScanningFeedback");

/** Leaked keys, reported by anyone or by GitHub's secret scanning (README, Leaks). */
export const leaksRoutes = routes()
  .openapi(
    createRoute({
      method: "post",
      path: "/",
      summary: "Report a leaked key",
      description:
        "No credential: anyone who found a key may report it. The answer is the same whatever the key (202), so it tells nothing about it; a real key is dealt with as its account chose (`leakResponse`). Limited per client address (LEAK_REPORT_RATE_LIMIT).",
      middleware: withBody(async (c, next) => {
        await spendOnAddress(c, "leak-report", c.get("config").leakReportPolicy);
        await next();
      }),
      request: { body: jsonBody(LeakReportBody) },
      responses: {
        202: json(z.strictObject({ received: z.literal(true) }).openapi("LeakReceived"), "Received"),
        ...problems("invalid_request", "malformed_json", "unsupported_media_type", "payload_too_large", "rate_limited"),
      },
    }),
    async (c) => {
      const { key, url } = c.req.valid("json");
      const deps = c.get("deps");
      // Acted on after the answer, which is the same for every key.
      deps.waitUntil(hashKey(key).then((hash) => handleLeaks(deps, [{ hash, source: "report", url }])));
      return c.json({ received: true as const }, 202);
    },
  )
  .openapi(
    createRoute({
      method: "post",
      path: "/github",
      summary: "GitHub secret scanning alerts",
      description:
        "GitHub's secret scanning partner program POSTs a JSON list of `{token, type, url, source}` (up to 1,000), signed with `Github-Public-Key-Identifier` / `Github-Public-Key-Signature` (ECDSA P-256 over the raw body) under the keys in SECRET_SCANNING_KEYS. The answer labels each token by its SHA-256, never the token, and names no account; real keys are dealt with as their accounts chose.",
      responses: {
        200: json(Feedback, "A label for every token"),
        ...problems("invalid_signature", "invalid_request", "malformed_json", "payload_too_large", "not_found", "configuration_error"),
      },
    }),
    async (c) => {
      const config = c.get("config");
      // Off until the operator registers with GitHub and sets its keys: nothing is here to call.
      if (config.secretScanningKeys.length === 0) throw new ApiError("not_found", "Secret scanning alerts are not taken here.");
      const body = await c.req.text();
      await verifyGithubSignature(
        config.secretScanningKeys,
        c.req.header("Github-Public-Key-Identifier"),
        c.req.header("Github-Public-Key-Signature"),
        body,
      );
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        throw new ApiError("malformed_json", "The request body is not valid JSON.");
      }
      const alert = Alert.safeParse(parsed);
      if (!alert.success) throw invalidRequest(fieldErrors(alert.error));
      const deps = c.get("deps");
      // As GitHub names tokens and D1 stores keys: SHA-256, hex.
      const hashes = await Promise.all(alert.data.map((m) => hashKey(m.token)));
      const known = await knownHashes(deps, hashes);
      // Acted on after the answer: GitHub wants it within seconds, whatever a thousand revocations take.
      deps.waitUntil(
        handleLeaks(
          deps,
          alert.data.flatMap((match, i) => {
            const hash = hashes[i] as string;
            return known.has(hash) ? [{ hash, source: "github" as const, url: match.url }] : [];
          }),
        ),
      );
      return c.json(
        alert.data.map((m, i) => ({
          token_hash: hashes[i] as string,
          token_type: m.type,
          label: known.has(hashes[i] as string) ? ("true_positive" as const) : ("false_positive" as const),
        })),
        200,
      );
    },
  );
