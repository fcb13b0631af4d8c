#!/usr/bin/env bash
# Side by side with Next.js's own optimizer, everything from this repository (works in a fresh clone):
#   setup_peers.sh (idempotent: npm ci + next build of benchmarks/next-app, the load generator's venv
#   and the generated corpus, all in BENCH_CACHE, default .bench-cache/) -> origin (nginx, else
#   python -m http.server, :8700) -> for each repeat, Next (`next start` :8701) and imgopt (:8704)
#   one after the other (never both under load), each loaded by loadgen.py (cold c2 q74 + cold c4
#   q76, new connection per request, p50/p95/p99 per pass; warm c16 10 s), plus
#   a quality pass (every image x {640,1080,1920} x {webp,avif,jpeg} at q75: bytes + SSIM vs a
#   high-quality reference) -> raw_vips --profile next (in-process floor) ->
#   benchmarks/RESULTS-next.md (ratio table imgopt/Next with the targets, medians of repeats).
#
#   make bench-next                                       # full run (REPEAT=3), ~15 min + setup
#   OUT=/tmp/smoke.md REPEAT=1 QUALITY_WIDTHS=640 LOADGEN_ARGS="--widths 640 --warm-seconds 3" \
#     make bench-next                                     # smoke (a few minutes once set up)
#   IMGOPT_ARGS="--some-flag" make bench-next              # imgopt with extra `serve` flags
#
# env: REPEAT (3), LOADGEN_ARGS (extra loadgen.py flags), EXCLUDE (icon.svg: both servers refuse SVG
#      by default, which would count as errors and block every ratio), WAIT_IDLE_S (60),
#      SKIP_SETUP=1, SKIP_RAW=1, SKIP_QUALITY=1, QUALITY_WIDTHS (640,1080,1920),
#      BENCH_CACHE (.bench-cache), BENCH_CORPUS ($BENCH_CACHE/corpus; make_corpus.py --index DIR makes
#      a corpus of your own images), RESULTS_DIR ($BENCH_CACHE/results-next), OUT
#      (benchmarks/RESULTS-next.md), PEERS ("next imgopt"), BENCH_APT (see setup_peers.sh), ports
#      ORIGIN_PORT/NEXT_PORT/IMGOPT_PORT (8700/8701/8704); imgopt-only knobs: IMGOPT_WORKERS,
#      IMGOPT_ARGS="--flag ..." (extra `imgopt serve` flags), IMGOPT_ENV="VAR=value ..." (see
#      peers/start-imgopt.sh).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
. "$HERE/peers/_lib.sh"
BPY=$BENCH_CACHE/venv/bin/python         # loadgen (aiohttp)
MPY=$ROOT/.venv/bin/python               # raw_vips, quality pass, report (imgopt's venv: pyvips)
RES=${RESULTS_DIR:-$BENCH_CACHE/results-next}
OUT=${OUT:-$HERE/RESULTS-next.md}
REPEAT=${REPEAT:-3}
EXCLUDE=${EXCLUDE-icon.svg}
EXCL=${EXCLUDE:+--exclude $EXCLUDE}
T0=$(date +%s)

started=()
cleanup() {
  for n in "${started[@]}"; do
    if [ -f "$PEERS_DIR/$n.pid" ]; then "$HERE/peers/stop-$n.sh" >/dev/null 2>&1; fi
  done
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

if [ "${SKIP_SETUP:-0}" != 1 ]; then
  [ -x "$MPY" ] || { echo "missing $MPY: run make install first" >&2; exit 1; }
  echo "== setup (log: $LOGS/compare-setup.log)"
  t=$(date +%s)
  "$HERE/setup_peers.sh" >"$LOGS/compare-setup.log" 2>&1 \
    || { tail -n 30 "$LOGS/compare-setup.log" >&2; echo "setup_peers.sh failed, see $LOGS/compare-setup.log" >&2; exit 1; }
  grep -E '^(note:|apt-get install)' "$LOGS/compare-setup.log" || true
  sed -n '/^setup done/,$p' "$LOGS/compare-setup.log"
  echo "setup took $(( $(date +%s) - t )) s"
fi
[ -f "$BENCH_CORPUS/manifest.json" ] || { echo "no corpus at $BENCH_CORPUS (setup_peers.sh)" >&2; exit 1; }
[ -x "$BPY" ] || { echo "missing $BPY (setup_peers.sh)" >&2; exit 1; }
[ -x "$MPY" ] || { echo "missing $MPY (make install)" >&2; exit 1; }

rm -rf "$RES"; mkdir -p "$RES"
echo "== compare_next started $(date -u +%FT%TZ) on $(nproc) cpus, REPEAT=$REPEAT, LOADGEN_ARGS='${LOADGEN_ARGS:-}', EXCLUDE='$EXCLUDE', IMGOPT_ARGS='${IMGOPT_ARGS:-}', IMGOPT_ENV='${IMGOPT_ENV:-}'"
"$MPY" "$HERE/loadgen_common.py" --wait-idle 5 | sed 's/^/before run: /' | tee "$RES/noise-before.txt"

if [ -f "$PEERS_DIR/origin.pid" ] && pid_alive "$(cat "$PEERS_DIR/origin.pid")"; then
  echo "origin already running (pid $(cat "$PEERS_DIR/origin.pid")), reusing it"
else
  PYTHON=$MPY "$HERE/peers/start-origin.sh" >/dev/null || { echo "origin failed to start" >&2; exit 1; }
  started+=(origin)
fi

run_peer() { # name repeat
  local name=$1 r=$2 start stop tmpl version out base rc
  start="$HERE/peers/start-$name.sh"; stop="$HERE/peers/stop-$name.sh"
  tmpl=$(head -n1 "$HERE/peers/$name.template"); version=$("$HERE/peers/version-$name.sh" 2>&1 | tail -n1)
  echo; echo "== $name (repeat $r/$REPEAT): $version"
  out=$("$start" 2>"$LOGS/start-$name.err"); rc=$?
  started+=("$name")
  base=$(printf '%s\n' "$out" | tail -n1)
  if [ $rc -ne 0 ] || [ -z "$base" ]; then
    echo "$name failed to start: $(tail -n 20 "$LOGS/start-$name.err" "$LOGS/$name.log" 2>/dev/null | tr '\n' ' ' | cut -c1-1500)" >&2
    "$MPY" -c 'import json,sys; json.dump({"peer": sys.argv[1], "failed": True, "error": "start failed"}, open(sys.argv[2], "w"))' \
      "$name" "$RES/$name.r$r.json"
    "$stop" >/dev/null 2>&1; return 1
  fi
  sleep 2
  "$MPY" "$HERE/loadgen_common.py" --wait-idle "${WAIT_IDLE_S:-60}"
  # shellcheck disable=SC2086
  "$BPY" "$HERE/loadgen.py" --peer "$name" --base "$base" --pidfile "$PEERS_DIR/$name.pid" --template "$tmpl" \
      --version-info "$version" --origin "$ORIGIN_URL" --out "$RES/$name.r$r.json" $EXCL ${LOADGEN_ARGS:-} \
      >"$RES/$name.r$r.md" || echo "loadgen for $name exited $?" >&2
  tail -n +1 "$RES/$name.r$r.md" | grep -E '^\| (next|imgopt)' || true
  if [ "$r" = 1 ] && [ "${SKIP_QUALITY:-0}" != 1 ]; then
    echo "quality pass ($name, q75)"
    "$MPY" "$HERE/compare_next.py" fetch --peer "$name" --base "$base" --template "$tmpl" --origin "$ORIGIN_URL" \
        --out "$RES/bodies/$name" --widths "${QUALITY_WIDTHS:-640,1080,1920}" $EXCL || echo "quality fetch for $name failed" >&2
  fi
  "$stop"
  sleep 2
}

PEERS=${PEERS:-next imgopt}
for r in $(seq 1 "$REPEAT"); do
  # alternate the order so drift in machine load does not always favour the same side
  if [ $((r % 2)) = 1 ]; then order="$PEERS"; else order=$(echo "$PEERS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for name in $order; do run_peer "$name" "$r"; done
done

if [ "${SKIP_RAW:-0}" != 1 ]; then
  echo; echo "== raw_vips --profile next (in-process pyvips floor, 2 threads)"
  "$MPY" "$HERE/loadgen_common.py" --wait-idle "${WAIT_IDLE_S:-60}"
  # shellcheck disable=SC2086
  "$MPY" "$HERE/raw_vips.py" --threads 2 --profile next --out "$RES/raw_vips_next.json" $EXCL \
      $(printf '%s\n' "${LOADGEN_ARGS:-}" | grep -oE -- '--(widths|formats) [^ ]+' | tr '\n' ' ') | tail -n 3
fi

echo; echo "== report"
# the command line as the report quotes it: the knobs that were set, then `make bench-next`
cmd=""
for v in REPEAT LOADGEN_ARGS EXCLUDE QUALITY_WIDTHS SKIP_RAW SKIP_QUALITY PEERS IMGOPT_WORKERS IMGOPT_ARGS IMGOPT_ENV; do
  case "$v=${!v-}" in "REPEAT=3"|"EXCLUDE=icon.svg"|"PEERS=next imgopt") continue ;; esac
  if [ -n "${!v+x}" ]; then
    case ${!v} in *[!A-Za-z0-9._,/=-]*|"") cmd+="$v=\"${!v}\" " ;; *) cmd+="$v=${!v} " ;; esac
  fi
done
if command -v nginx >/dev/null && [ "${ORIGIN_IMPL:-nginx}" = nginx ]; then origin_impl=nginx; else origin_impl="python -m http.server"; fi
"$MPY" "$HERE/compare_next.py" report --results "$RES" --out "$OUT" --elapsed "$(( $(date +%s) - T0 ))" \
    --loadgen-args "${LOADGEN_ARGS:-}" --repeat "$REPEAT" --exclude "$EXCLUDE" \
    --command "${cmd}make bench-next" --origin-impl "$origin_impl"
echo "wrote $OUT (results: $RES) in $(( $(date +%s) - T0 )) s"
