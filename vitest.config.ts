import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

export default defineConfig(async () => ({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        // Set explicitly so a developer's .dev.vars (ALLOW_HTTP=true) cannot change what the tests see.
        bindings: {
          TEST_MIGRATIONS: await readD1Migrations("migrations"),
          OPERATOR_TOKEN: "test-operator-token-0123456789abcdef",
          ALLOW_HTTP: "false",
          JWT_SIGNING_KEYS: JSON.stringify([
            { kid: "test-2", secret: "test-signing-secret-two-0123456789abcdef" },
            { kid: "test-1", secret: "test-signing-secret-one-0123456789abcdef" },
          ]),
        },
      },
    }),
  ],
  test: {
    setupFiles: ["./test/apply-migrations.ts"],
    include: ["test/**/*.test.ts"],
  },
}));
