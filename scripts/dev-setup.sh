#!/bin/sh
# Prepares a fresh checkout for `wrangler dev`: local secrets from the example and an assertion signing key of its own
# (scripts/dev-vars.mjs), local D1 migrated.
set -e
node scripts/dev-vars.mjs
sh scripts/wrangler.sh d1 migrations apply DB --local
