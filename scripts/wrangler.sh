#!/bin/sh
# Runs wrangler with telemetry, error reports, the banner and request.cf lookups switched off,
# so local development, tests and dry runs make no outbound connection.
export WRANGLER_SEND_METRICS=false
export WRANGLER_SEND_ERROR_REPORTS=false
export DO_NOT_TRACK=1
export CLOUDFLARE_CF_FETCH_ENABLED=false
export WRANGLER_HIDE_BANNER=true
exec wrangler "$@"
