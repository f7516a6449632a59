#!/bin/sh
# Prepares a fresh checkout for `wrangler dev`: local secrets from the example, local D1 migrated.
set -e
[ -f .dev.vars ] || { cp .dev.vars.example .dev.vars; echo "Created .dev.vars from .dev.vars.example"; }
sh scripts/wrangler.sh d1 migrations apply DB --local
