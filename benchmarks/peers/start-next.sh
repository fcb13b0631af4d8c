#!/usr/bin/env bash
# Next.js built-in image optimizer (next start) on 127.0.0.1:$NEXT_PORT.
# Endpoint: /_next/image?url=<enc>&w=<w>&q=<q>; output format negotiated from the Accept header.
# Clears the optimizer disk cache (.next/cache/images) before starting so runs start cold.
# The app ($BENCH_CACHE/next) is installed and built by benchmarks/setup_peers.sh.
set -euo pipefail
. "$(dirname "$0")/_lib.sh"
refuse_if_running next
APP=$BENCH_CACHE/next
[ -f "$APP/.next/BUILD_ID" ] || { echo "$APP not built; run benchmarks/setup_peers.sh" >&2; exit 1; }
rm -rf "$APP/.next/cache/images"
cd "$APP"
export NODE_ENV=production NEXT_TELEMETRY_DISABLED=1 ORIGIN_PORT
start_bg next node "$APP/node_modules/next/dist/bin/next" start -p "$NEXT_PORT" -H 127.0.0.1
wait_http next "http://127.0.0.1:$NEXT_PORT/" 60
echo "http://127.0.0.1:$NEXT_PORT"
