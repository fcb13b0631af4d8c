#!/usr/bin/env bash
# Installs what benchmarks/compare_next.sh needs, inside the bench cache (BENCH_CACHE, default
# .bench-cache/ at the repository root). Re-runnable: each step is skipped when already done and its
# inputs did not change (FORCE=1 redoes them all).
#   $BENCH_CACHE/next    benchmarks/next-app: `npm ci` (next 16.5.0, react/react-dom 19.3.1 and
#                        Next's own sharp, exact versions from package-lock.json), `next build`
#   $BENCH_CACHE/venv    the load generator's venv (benchmarks/requirements-loadgen.txt)
#   $BENCH_CACHE/corpus  the images (benchmarks/make_corpus.py: generated in code, ~10 s)
# Needs: Node.js >= 20.9 with npm, python3 with venv, the project's .venv (`make install`), and the
# npm and PyPI registries the first time.
# Optional system tools, used when present: nginx (origin; else python -m http.server), wrk (warm
# phase; else an aiohttp loop), curl. BENCH_APT=auto (default) installs the missing ones with
# apt-get when running as root on a Debian-like system; BENCH_APT=1 always tries, BENCH_APT=0 never.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/peers/_lib.sh"
ROOT=$BENCH_ROOT
FORCE=${FORCE:-0}
MPY=$ROOT/.venv/bin/python
[ -x "$MPY" ] || { echo "missing $MPY: run make install first" >&2; exit 1; }

# --- optional system tools
need_apt=""
command -v nginx >/dev/null || need_apt="$need_apt nginx-light"
command -v wrk >/dev/null || need_apt="$need_apt wrk"
command -v curl >/dev/null || need_apt="$need_apt curl"
apt_mode=${BENCH_APT:-auto}
if [ -n "$need_apt" ] && [ "$apt_mode" != 0 ]; then
  if [ "$apt_mode" = 1 ] || { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }; then
    echo "apt-get install$need_apt"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    { apt-get update -q && apt-get install -y --no-install-recommends $need_apt; } \
      || echo "apt-get failed; going on with the fallbacks" >&2
  fi
fi
command -v nginx >/dev/null || echo "note: no nginx, the origin will be python -m http.server"
command -v wrk >/dev/null || echo "note: no wrk, the warm phase will use the aiohttp client"

# --- Next.js app: npm ci (exact versions of package-lock.json), next build
command -v node >/dev/null && command -v npm >/dev/null || { echo "Node.js >= 20.9 with npm is needed" >&2; exit 1; }
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=9)?0:1)' \
  || { echo "Node.js >= 20.9 is needed (found $(node --version))" >&2; exit 1; }
APP=$BENCH_CACHE/next
SRC=$HERE/next-app
mkdir -p "$APP"
if [ "$FORCE" = 1 ] || [ ! -f "$APP/node_modules/next/package.json" ] || ! cmp -s "$SRC/package-lock.json" "$APP/package-lock.json"; then
  cp "$SRC/package.json" "$SRC/package-lock.json" "$APP/"
  (cd "$APP" && npm ci --no-audit --no-fund)
  rm -f "$APP/.bench-build"
fi
stamp=$(cd "$SRC" && cat package-lock.json next.config.js app/* | "$MPY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ "$FORCE" = 1 ] || [ ! -f "$APP/.next/BUILD_ID" ] || [ "$(cat "$APP/.bench-build" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$APP/app" "$APP/.next"
  cp -r "$SRC/app" "$SRC/next.config.js" "$APP/"
  (cd "$APP" && NEXT_TELEMETRY_DISABLED=1 node node_modules/next/dist/bin/next build)
  echo "$stamp" >"$APP/.bench-build"
fi

# --- the load generator's venv
V=$BENCH_CACHE/venv
if [ "$FORCE" = 1 ] || [ ! -x "$V/bin/python" ] || ! cmp -s "$HERE/requirements-loadgen.txt" "$V/requirements-loadgen.txt"; then
  rm -rf "$V"
  python3 -m venv "$V"
  "$V/bin/pip" install -q --upgrade pip
  "$V/bin/pip" install -q -r "$HERE/requirements-loadgen.txt"
  cp "$HERE/requirements-loadgen.txt" "$V/"
fi

# --- the corpus
"$MPY" "$HERE/make_corpus.py" "$BENCH_CORPUS" | tail -n 1

echo "setup done ($BENCH_CACHE):"
printf '  %s\n' "$("$HERE/peers/version-next.sh" 2>&1 | tail -n 1)" "$("$HERE/peers/version-imgopt.sh" 2>&1 | tail -n 1)"
