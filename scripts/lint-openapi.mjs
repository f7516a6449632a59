// Lints the OpenAPI document as the built worker serves it (Redocly's recommended rules, no error allowed), offline:
// the worker runs on 127.0.0.1 under Miniflare, and Redocly's telemetry and update check are off.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { startKeygate } from "./keygate-server.mjs";

const keygate = await startKeygate({ port: 8794, bindings: { ALLOW_HTTP: "true" } });
try {
  const res = await fetch(`${keygate.url}/openapi.json`);
  if (res.status !== 200) throw new Error(`/openapi.json answered ${res.status}`);
  mkdirSync("dist", { recursive: true });
  writeFileSync("dist/openapi.json", await res.text());
} finally {
  await keygate.mf.dispose();
}
execFileSync("npx", ["redocly", "lint", "dist/openapi.json", "--format=summary"], {
  stdio: "inherit",
  env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true", DO_NOT_TRACK: "1" },
});
