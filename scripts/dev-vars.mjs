// Local secrets for `wrangler dev`, run by scripts/dev-setup.sh in the checkout: .dev.vars from .dev.vars.example when
// it is missing, an assertion signing key of its own (ES256, for the gateway) and a webhook signing key (Ed25519) when
// the file sets none. Every other line of the file stays as it was.
import { generateKeyPairSync } from "node:crypto";
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";

const VARS = ".dev.vars";
const EXAMPLE = ".dev.vars.example";
/** A line setting the variable, in any spelling dotenv (which wrangler reads .dev.vars with) takes. */
const sets = (name) => new RegExp(`^\\s*(?:export\\s+)?${name}\\s*=`, "m");

/** ASSERTION_SIGNING_KEYS as Keygate takes it: a JSON list, here of one private P-256 JWK with a kid. */
function newAssertionKeys() {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return JSON.stringify([{ kid: `dev-${Date.now().toString(36)}`, ...privateKey.export({ format: "jwk" }) }]);
}

if (!existsSync(VARS)) {
  copyFileSync(EXAMPLE, VARS);
  console.log(`Created ${VARS} from ${EXAMPLE}`);
}
/** WEBHOOK_SIGNING_KEY as Keygate takes it: one private Ed25519 JWK with a kid. */
function newWebhookKey() {
  const { privateKey } = generateKeyPairSync("ed25519");
  return JSON.stringify({ kid: `dev-${Date.now().toString(36)}`, ...privateKey.export({ format: "jwk" }) });
}

for (const [name, make] of [
  ["ASSERTION_SIGNING_KEYS", newAssertionKeys],
  ["WEBHOOK_SIGNING_KEY", newWebhookKey],
]) {
  const text = readFileSync(VARS, "utf8");
  if (sets(name).test(text)) continue;
  // A last line without its newline keeps it: the key goes on a line of its own.
  const separator = text === "" || text.endsWith("\n") ? "" : "\n";
  writeFileSync(VARS, `${text}${separator}${name}=${make()}\n`);
  console.log(`Added a new ${name} to ${VARS}`);
}
