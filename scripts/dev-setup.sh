#!/bin/sh
# Prepares a fresh checkout for `wrangler dev`: local secrets from the example, an assertion signing key of its own,
# local D1 migrated.
set -e
[ -f .dev.vars ] || { cp .dev.vars.example .dev.vars; echo "Created .dev.vars from .dev.vars.example"; }
if ! grep -q '^ASSERTION_SIGNING_KEYS=' .dev.vars; then
  node -e '
    const { privateKey } = require("node:crypto").generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = { kid: "dev-" + Date.now().toString(36), ...privateKey.export({ format: "jwk" }) };
    console.log("ASSERTION_SIGNING_KEYS=" + JSON.stringify([jwk]));
  ' >> .dev.vars
  echo "Added a new ASSERTION_SIGNING_KEYS to .dev.vars"
fi
sh scripts/wrangler.sh d1 migrations apply DB --local
