import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseEnv } from "node:util";
import { importJWK, jwtVerify, SignJWT } from "jose";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";

// `npm run dev` runs scripts/dev-setup.sh first: .dev.vars from the example when it is missing, an assertion signing
// key of its own, then the local D1 migrations. Here it runs in a directory of the test's own, on copies of what it
// reads, with a stand-in for scripts/wrangler.sh that only notes how it was called: no wrangler, no network, and the
// repository's own .dev.vars is never touched.

const ROOT = resolve(import.meta.dirname, "../..");
const SETUP = "scripts/dev-setup.sh";
const OWN_DEV_VARS = join(ROOT, ".dev.vars");
const ownBefore = existsSync(OWN_DEV_VARS) ? readFileSync(OWN_DEV_VARS, "utf8") : null;

let dir = "";

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "keygate-dev-setup-"));
  // The setup script, the scripts it runs with node, and the example it copies.
  const scripts = readFileSync(join(ROOT, SETUP), "utf8").match(/scripts\/[\w.-]+\.mjs/g) ?? [];
  for (const file of [SETUP, ...scripts, ".dev.vars.example"]) {
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    copyFileSync(join(ROOT, file), join(dir, file));
  }
  writeFileSync(join(dir, "scripts/wrangler.sh"), 'printf "%s\\n" "$*" >> wrangler-calls.txt\n');
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

afterAll(() => {
  expect(existsSync(OWN_DEV_VARS) ? readFileSync(OWN_DEV_VARS, "utf8") : null).toBe(ownBefore);
});

/** Runs the setup as `npm run dev` does, with this test's Node first on the PATH. */
function setup(): string {
  return execFileSync("sh", [SETUP], {
    cwd: dir,
    encoding: "utf8",
    env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}` },
  });
}

const devVars = () => readFileSync(join(dir, ".dev.vars"), "utf8");
const keyLines = (text: string) => text.split("\n").filter((line) => /^\s*(export\s+)?ASSERTION_SIGNING_KEYS\s*=/.test(line));

/** The one key the file holds, as wrangler's dotenv parsing reads it, checked as the gateway will use it. */
async function assertionKey(text: string): Promise<Record<string, string>> {
  expect(keyLines(text)).toHaveLength(1);
  const value = parseEnv(text).ASSERTION_SIGNING_KEYS;
  const keys = JSON.parse(value ?? "null") as Record<string, string>[];
  expect(Array.isArray(keys)).toBe(true);
  expect(keys).toHaveLength(1);
  const jwk = keys[0] as Record<string, string>;
  const component = /^[A-Za-z0-9_-]{43}$/;
  expect(jwk).toMatchObject({ kty: "EC", crv: "P-256", kid: expect.stringMatching(/\S/) });
  for (const part of ["x", "y", "d"]) expect(jwk[part]).toMatch(component);
  // It signs ES256, and what it signs verifies with its public half (what /.well-known/jwks.json publishes).
  const privateKey = await importJWK(jwk, "ES256");
  const token = await new SignJWT({ sub: "usr_1" }).setProtectedHeader({ alg: "ES256", kid: jwk.kid }).sign(privateKey);
  const publicKey = await importJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, "ES256");
  const { payload, protectedHeader } = await jwtVerify(token, publicKey, { algorithms: ["ES256"] });
  expect(payload.sub).toBe("usr_1");
  expect(protectedHeader.kid).toBe(jwk.kid);
  return jwk;
}

describe("scripts/dev-setup.sh", () => {
  it("creates .dev.vars from the example with one assertion signing key, then migrates the local D1", async () => {
    const example = readFileSync(join(dir, ".dev.vars.example"), "utf8");
    setup();
    const text = devVars();
    expect(text.startsWith(example)).toBe(true);
    expect(parseEnv(text)).toMatchObject(parseEnv(example));
    await assertionKey(text);
    expect(readFileSync(join(dir, "wrangler-calls.txt"), "utf8")).toBe("d1 migrations apply DB --local\n");
  });

  it("adds no second key when run again, and leaves the file as it was", async () => {
    setup();
    const first = devVars();
    const jwk = await assertionKey(first);
    setup();
    expect(devVars()).toBe(first);
    expect((await assertionKey(devVars())).kid).toBe(jwk.kid);
  });

  it("keeps every line of an existing .dev.vars as it was, one without a final newline included", async () => {
    const own = "# mine\nOPERATOR_TOKEN=my-own-operator-token-0123456789abcdef\nALLOW_HTTP=true\nVERIFY_TOKEN=my-own-verify-token";
    writeFileSync(join(dir, ".dev.vars"), own);
    setup();
    const text = devVars();
    expect(text.startsWith(`${own}\n`)).toBe(true);
    expect(parseEnv(text)).toMatchObject({
      OPERATOR_TOKEN: "my-own-operator-token-0123456789abcdef",
      ALLOW_HTTP: "true",
      VERIFY_TOKEN: "my-own-verify-token",
    });
    // An existing file is the developer's: nothing of the example is added to it.
    expect(parseEnv(text).JWT_SIGNING_KEYS).toBeUndefined();
    await assertionKey(text);
  });

  it("leaves a key the developer wrote alone, in any spelling dotenv reads", async () => {
    for (const [line, webhookLine] of [
      ["ASSERTION_SIGNING_KEYS=[]", "WEBHOOK_SIGNING_KEY=null"],
      ["export ASSERTION_SIGNING_KEYS = '[]'", "export WEBHOOK_SIGNING_KEY = 'null'"],
      ["  ASSERTION_SIGNING_KEYS='[]'", "  WEBHOOK_SIGNING_KEY='null'"],
    ]) {
      const own = `OPERATOR_TOKEN=my-own-operator-token-0123456789abcdef\n${line}\n${webhookLine}\n`;
      writeFileSync(join(dir, ".dev.vars"), own);
      setup();
      expect(devVars()).toBe(own);
    }
  });
});
