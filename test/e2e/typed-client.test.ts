import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import createClient from "openapi-fetch";
import openapiTS, { type OpenAPI3 } from "openapi-typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKeygate } from "../../scripts/keygate-server.mjs";

const OPERATOR_TOKEN = "e2e-operator-token-0123456789abcdef0123";
// Inside node_modules, so the generated client resolves openapi-fetch as a project would, and nothing lands in git.
const DIR = "node_modules/.cache/keygate-typed-client";

let keygate: Awaited<ReturnType<typeof startKeygate>>;

beforeAll(async () => {
  keygate = await startKeygate({ port: 0, bindings: { ALLOW_HTTP: "true", OPERATOR_TOKEN } });
});

afterAll(async () => {
  await keygate?.mf.dispose();
});

/** Type-checks `source` against the types generated from the served document; the compiler's report, empty when it passes. */
function typeCheck(name: string, source: string): string {
  writeFileSync(`${DIR}/${name}`, source);
  const flags = ["--ignoreConfig", "--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--lib", "es2022,dom"];
  try {
    execFileSync("npx", ["tsc", ...flags, name], { cwd: DIR, encoding: "utf8", stdio: "pipe" });
    return "";
  } catch (err) {
    return String((err as { stdout?: string }).stdout);
  }
}

const client = (body: string) => `import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const client = createClient<paths>({ baseUrl: "https://keygate.example" });

export async function create(key: string) {
  const { data, error } = await client.POST("/v1/api-keys", { body: { name: "x" }, headers: { "X-API-Key": key } });
  if (error) throw new Error(error.detail);
  ${body}
}
`;

describe("a typed client generated from the served document", () => {
  it("creates a key with only its name, no cast, and must allow for a key without a limit of its own", async () => {
    const doc = await (await fetch(`${keygate.url}/openapi.json`)).json();
    mkdirSync(DIR, { recursive: true });
    writeFileSync(`${DIR}/schema.d.ts`, await openapiTS(doc as OpenAPI3));
    expect(typeCheck("client.ts", client("return { limit: data.rateLimit?.limit, secret: data.key };"))).toBe("");
    // `rateLimit` is null when the account's default applies: reading it unguarded does not compile.
    expect(typeCheck("unguarded.ts", client("return data.rateLimit.limit;"))).toContain("'data.rateLimit' is possibly 'null'");

    // The same call at run time, against this Keygate.
    const provisioned = await fetch(`${keygate.url}/v1/accounts`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${OPERATOR_TOKEN}` },
      body: JSON.stringify({ name: "Typed", admin: { email: "typed@example.com" } }),
    });
    const { key } = (await provisioned.json()) as { key: { key: string } };
    const api = createClient({ baseUrl: keygate.url });
    const { data, response } = await api.POST("/v1/api-keys", { body: { name: "x" }, headers: { "X-API-Key": key.key } });
    expect(response.status).toBe(201);
    expect(data).toMatchObject({ name: "x", rateLimit: null });
  });
});
