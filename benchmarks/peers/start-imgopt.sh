#!/usr/bin/env bash
# imgopt (this repo) on 127.0.0.1:$IMGOPT_PORT (default 8704), for benchmarks/loadgen.py.
# Same contract as the other peers/start-*.sh: prints the base URL as the last stdout line,
# pid -> $PEERS_DIR/imgopt.pid, cache dir wiped first so the run starts cold.
# Config: formats avif+webp, qualities 74/75/76, dangerouslyAllowLocalIP, remotePatterns for the
# origin (127.0.0.1:$ORIGIN_PORT), deviceSizes with 640/1080/1920 (benchmarks/peers/images.json.in).
# Knobs (env): IMGOPT_WORKERS, IMGOPT_PYTHON, IMGOPT_ARGS="--flag value ..." (extra flags for
# `imgopt serve`, word-split, appended last), and IMGOPT_ENV="VAR=value ..." for variables meant for
# imgopt only (e.g. "VIPS_CONCURRENCY=1 MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=262144" or
# "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"), so the Next.js peer never inherits them.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
. "$HERE/_lib.sh"
IMGOPT_PORT=${IMGOPT_PORT:-8704}
refuse_if_running imgopt
PY=${IMGOPT_PYTHON:-$ROOT/.venv/bin/python}
D=$PEERS_DIR/imgopt
rm -rf "$D/cache"
mkdir -p "$D"
sed "s/@ORIGIN_PORT@/$ORIGIN_PORT/" "$HERE/images.json.in" >"$D/images.json"
args=(serve --config "$D/images.json" --host 127.0.0.1 --port "$IMGOPT_PORT" --cache-dir "$D/cache" --log-level warning)
[ -n "${IMGOPT_WORKERS:-}" ] && args+=(--workers "$IMGOPT_WORKERS")
# shellcheck disable=SC2206
[ -n "${IMGOPT_ARGS:-}" ] && args+=($IMGOPT_ARGS)
cd "$ROOT"
export PYTHONUNBUFFERED=1
# shellcheck disable=SC2086
start_bg imgopt env ${IMGOPT_ENV:-} "$PY" -m imgopt "${args[@]}"   # env execs python: same pid
wait_http imgopt "http://127.0.0.1:$IMGOPT_PORT/healthz" 60
echo "http://127.0.0.1:$IMGOPT_PORT"
