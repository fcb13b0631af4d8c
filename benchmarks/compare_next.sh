#!/usr/bin/env bash
# Side by side with Next.js's own optimizer (issue #5), using ../shared/bench (read-only):
#   setup.sh + corpus.sh (idempotent) -> origin (nginx :8700) -> for each repeat, Next (`next start`
#   :8701) and imgopt (:8704) one after the other (never both under load), each loaded by the
#   shared loadgen.py (cold c2 q74 + cold c4 q76, new connection per request; warm c16 10 s), plus
#   a quality pass (every image x {640,1080,1920} x {webp,avif,jpeg} at q75: bytes + SSIM vs a
#   high-quality reference) -> raw_vips --profile next (in-process floor) ->
#   benchmarks/RESULTS-next.md (ratio table imgopt/Next with the issue's targets, medians of repeats).
#
#   benchmarks/compare_next.sh                         # full run (REPEAT=3)
#   REPEAT=1 LOADGEN_ARGS="--widths 640 --warm-seconds 3" benchmarks/compare_next.sh   # smoke
#
# env: REPEAT (3), LOADGEN_ARGS (extra loadgen.py flags), EXCLUDE (icon.svg: both servers refuse SVG
#      by default, which would count as errors and block every ratio), WAIT_IDLE_S (60),
#      SKIP_SETUP=1, SKIP_RAW=1, SKIP_QUALITY=1, QUALITY_WIDTHS (640,1080,1920), RESULTS_DIR (/tmp/peers/results-imgopt-vs-next),
#      OUT (benchmarks/RESULTS-next.md), PEERS ("next imgopt"); imgopt-only knobs: IMGOPT_WORKERS,
#      IMGOPT_ENV="VAR=value ..." (see peers/start-imgopt.sh).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SHARED=${BENCH_SHARED:-$(cd "$ROOT/../shared/bench" && pwd)}
export BENCH_SHARED=$SHARED
. "$SHARED/peers/_lib.sh"
BPY=$PEERS_DIR/bench-venv/bin/python     # loadgen / raw_vips (aiohttp)
MPY=$ROOT/.venv/bin/python               # quality pass + report (imgopt's venv: pyvips)
RES=${RESULTS_DIR:-$PEERS_DIR/results-imgopt-vs-next}
OUT=${OUT:-$HERE/RESULTS-next.md}
REPEAT=${REPEAT:-3}
EXCLUDE=${EXCLUDE-icon.svg}
EXCL=${EXCLUDE:+--exclude $EXCLUDE}
T0=$(date +%s)

started=()
cleanup() {
  for n in "${started[@]}"; do
    if [ -f "$PEERS_DIR/$n.pid" ]; then
      case $n in
        imgopt) "$HERE/peers/stop-imgopt.sh" >/dev/null 2>&1 ;;
        *) "$SHARED/peers/stop-$n.sh" >/dev/null 2>&1 ;;
      esac
    fi
  done
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

if [ "${SKIP_SETUP:-0}" != 1 ]; then
  "$SHARED/setup.sh" >"$LOGS/compare-setup.log" 2>&1 || { echo "setup.sh failed, see $LOGS/compare-setup.log" >&2; exit 1; }
fi
[ -f "$PEERS_DIR/corpus/manifest.json" ] || "$SHARED/corpus.sh" || exit 1
[ -x "$BPY" ] || { echo "missing $BPY (setup.sh)" >&2; exit 1; }
[ -x "$MPY" ] || { echo "missing $MPY (make install)" >&2; exit 1; }

rm -rf "$RES"; mkdir -p "$RES"
echo "== compare_next started $(date -u +%FT%TZ) on $(nproc) cpus, REPEAT=$REPEAT, LOADGEN_ARGS='${LOADGEN_ARGS:-}', EXCLUDE='$EXCLUDE', IMGOPT_ENV='${IMGOPT_ENV:-}'"
"$BPY" "$SHARED/common.py" --wait-idle 5 | sed 's/^/before run: /' | tee "$RES/noise-before.txt"

if [ -f "$PEERS_DIR/origin.pid" ] && pid_alive "$(cat "$PEERS_DIR/origin.pid")"; then
  echo "origin already running (pid $(cat "$PEERS_DIR/origin.pid")), reusing it"
else
  "$SHARED/peers/start-origin.sh" >/dev/null || { echo "origin failed to start" >&2; exit 1; }
  started+=(origin)
fi

run_peer() { # name repeat
  local name=$1 r=$2 start stop tmpl version out base rc
  if [ "$name" = imgopt ]; then
    start="$HERE/peers/start-imgopt.sh"; stop="$HERE/peers/stop-imgopt.sh"
    tmpl=$(head -n1 "$HERE/peers/imgopt.template"); version=$("$HERE/peers/version-imgopt.sh" 2>&1 | tail -n1)
  else
    start="$SHARED/peers/start-$name.sh"; stop="$SHARED/peers/stop-$name.sh"
    tmpl=$(head -n1 "$SHARED/peers/$name.template"); version=$("$SHARED/peers/version-$name.sh" 2>&1 | tail -n1)
  fi
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
  "$BPY" "$SHARED/common.py" --wait-idle "${WAIT_IDLE_S:-60}"
  # shellcheck disable=SC2086
  "$BPY" "$SHARED/loadgen.py" --peer "$name" --base "$base" --pidfile "$PEERS_DIR/$name.pid" --template "$tmpl" \
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
  "$BPY" "$SHARED/common.py" --wait-idle "${WAIT_IDLE_S:-60}"
  # shellcheck disable=SC2086
  "$BPY" "$SHARED/raw_vips.py" --threads 2 --profile next --out "$RES/raw_vips_next.json" $EXCL \
      $(printf '%s\n' "${LOADGEN_ARGS:-}" | grep -oE -- '--(widths|formats) [^ ]+' | tr '\n' ' ') | tail -n 3
fi

echo; echo "== report"
"$MPY" "$HERE/compare_next.py" report --results "$RES" --out "$OUT" --elapsed "$(( $(date +%s) - T0 ))" \
    --loadgen-args "${LOADGEN_ARGS:-}" --repeat "$REPEAT" --exclude "$EXCLUDE"
echo "wrote $OUT (results: $RES) in $(( $(date +%s) - T0 )) s"
