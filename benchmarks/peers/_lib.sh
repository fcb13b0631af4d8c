# Helpers for the side-by-side benchmark's scripts (compare_next.sh, setup_peers.sh, start-*/stop-*).
# Source it; do not execute. Every process is started by us, its pid goes to $PEERS_DIR/<name>.pid,
# and stop only ever signals that pid plus the descendants it had at stop time (all started by it).
#
# Everything the benchmark installs or writes lives in one cache folder, BENCH_CACHE (default
# .bench-cache/ at the repository root, gitignored): the Next.js app (npm ci + next build), the
# load generator's venv, the image corpus, pid files, logs and raw results.
BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_CACHE=${BENCH_CACHE:-$BENCH_ROOT/.bench-cache}
mkdir -p "$BENCH_CACHE"
BENCH_CACHE="$(cd "$BENCH_CACHE" && pwd)"
BENCH_CORPUS=${BENCH_CORPUS:-$BENCH_CACHE/corpus}
PEERS_DIR=${PEERS_DIR:-$BENCH_CACHE/run}
LOGS=$PEERS_DIR/logs
mkdir -p "$LOGS"
export BENCH_CACHE BENCH_CORPUS PEERS_DIR

ORIGIN_PORT=${ORIGIN_PORT:-8700}
NEXT_PORT=${NEXT_PORT:-8701}
ORIGIN_URL=${ORIGIN_URL:-http://127.0.0.1:$ORIGIN_PORT}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

refuse_if_running() { # name
  local pf="$PEERS_DIR/$1.pid"
  if [ -f "$pf" ] && pid_alive "$(cat "$pf")"; then
    echo "$1 already running (pid $(cat "$pf")); run stop-$1.sh first" >&2
    exit 1
  fi
}

# start_bg name cmd args...  -> runs cmd in background (no shell wrapper), writes pid file
start_bg() {
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PEERS_DIR/$name.pid"
}

# http_answers url: true when url gives any HTTP answer within 2 s (curl if installed, else bash's
# /dev/tcp)
http_answers() {
  if command -v curl >/dev/null; then curl -s -o /dev/null --max-time 2 "$1"; return; fi
  timeout 2 bash -c 'hp=${1#http://}; hp=${hp%%/*}; exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}" || exit 1
    printf "GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n" "${1#http://$hp/}" "$hp" >&3; head -c 5 <&3 | grep -q HTTP' _ "$1" 2>/dev/null
}

# wait_http name url [timeout_s]: bounded wait until url answers (any HTTP status)
wait_http() {
  local name=$1 url=$2 t=${3:-60} i=0 pid
  pid=$(cat "$PEERS_DIR/$name.pid")
  while [ $i -lt $((t * 4)) ]; do
    if ! pid_alive "$pid"; then
      echo "$name (pid $pid) exited during startup; last log lines:" >&2
      tail -n 30 "$LOGS/$name.log" >&2
      return 1
    fi
    if http_answers "$url"; then return 0; fi
    sleep 0.25; i=$((i + 1))
  done
  echo "$name did not answer $url within ${t}s" >&2
  return 1
}

descendants() { # pid -> all descendant pids (recursive), from /proc
  local p=$1 c
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
    echo "$c"; descendants "$c"
  done
}

# stop_peer name: TERM the recorded pid (and its descendants), wait <=10 s, then KILL those pids
stop_peer() {
  local name=$1 pf="$PEERS_DIR/$1.pid" pid kids i
  if [ ! -f "$pf" ]; then echo "$name: no pid file" >&2; return 0; fi
  pid=$(cat "$pf")
  if ! pid_alive "$pid"; then echo "$name: pid $pid not running"; rm -f "$pf"; return 0; fi
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do pid_alive "$pid" || break; sleep 0.25; done
  for k in $pid $kids; do
    if pid_alive "$k"; then kill -TERM "$k" 2>/dev/null || true; fi
  done
  sleep 0.5
  for k in $pid $kids; do
    if pid_alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi
  done
  rm -f "$pf"
  echo "$name stopped (pid $pid${kids:+, children $(echo $kids)})"
}
