import { generateKeyPairSync } from "node:crypto";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { startUpstream } from "./test/upstream.mjs";

export default defineConfig(async () => ({
  test: {
    projects: [
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              // vitest itself needs Node's APIs inside workerd; the deployed Worker does not (wrangler.toml).
              compatibilityFlags: ["nodejs_compat"],
              // Set explicitly so a developer's .dev.vars (ALLOW_HTTP=true) cannot change what the tests see.
              // A second Worker of the same account, calling Keygate's verify entrypoint through a service binding.
              serviceBindings: { CALLER: "caller" },
              workers: [
                {
                  name: "caller",
                  modules: true,
                  compatibilityDate: "2026-10-01",
                  script: `export default {
                    async fetch(request, env) {
                      try {
                        return Response.json(await env.KEYGATE.verify(await request.json()));
                      } catch (err) {
                        return Response.json({ error: String(err) }, { status: 500 });
                      }
                    },
                  };`,
                  // The Worker under test runs as the pool's runner Worker, under this name.
                  serviceBindings: { KEYGATE: { name: "vitest-plugin-runner-workers", entrypoint: "KeygateVerifier" } },
                },
              ],
              bindings: {
                TEST_MIGRATIONS: await readD1Migrations("migrations"),
                // The gateway's upstream in tests: a real HTTP server in this process (test/upstream.mjs).
                TEST_UPSTREAM_URL: await startUpstream(),
                OPERATOR_TOKEN: "test-operator-token-0123456789abcdef",
                ALLOW_HTTP: "false",
                ASSERTION_SIGNING_KEYS: JSON.stringify([
                  { kid: "test-assertion", ...generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" }) },
                ]),
                VERIFY_TOKEN: "test-verify-token-0123456789abcdef0123",
                WEBHOOK_SIGNING_KEY: JSON.stringify({
                  kid: "test-webhooks",
                  ...generateKeyPairSync("ed25519").privateKey.export({ format: "jwk" }),
                }),
                JWT_SIGNING_KEYS: JSON.stringify([
                  { kid: "test-2", secret: "test-signing-secret-two-0123456789abcdef" },
                  { kid: "test-1", secret: "test-signing-secret-one-0123456789abcdef" },
                ]),
              },
            },
          }),
        ],
        test: {
          name: "workers",
          // A test bounds what it promises itself; this only ends a test that hangs. Five engineers' suites on one
          // 2-core machine took several tests past vitest's default 5 s.
          testTimeout: 20_000,
          setupFiles: ["./test/apply-migrations.ts"],
          include: ["test/**/*.test.ts"],
          exclude: ["test/e2e/**"],
        },
      },
      {
        // A real Chromium against the built worker served by Miniflare; runs in Node.
        test: { name: "e2e", include: ["test/e2e/**/*.test.ts"], environment: "node", testTimeout: 60_000, hookTimeout: 120_000 },
      },
    ],
  },
}));
