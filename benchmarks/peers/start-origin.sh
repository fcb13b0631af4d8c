#!/usr/bin/env bash
# Static origin serving the corpus ($BENCH_CORPUS) on 127.0.0.1:$ORIGIN_PORT (nginx if installed,
# else python -m http.server; ORIGIN_IMPL=python forces the latter). Prints the base URL as the
# last stdout line; pid -> $PEERS_DIR/origin.pid
set -euo pipefail
. "$(dirname "$0")/_lib.sh"
refuse_if_running origin
CORPUS=$BENCH_CORPUS
[ -f "$CORPUS/manifest.json" ] || { echo "no corpus at $CORPUS; run benchmarks/make_corpus.py first" >&2; exit 1; }
if command -v nginx >/dev/null && [ "${ORIGIN_IMPL:-nginx}" = nginx ]; then
  d=$PEERS_DIR/origin; mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<CONF
worker_processes 1;
pid $d/nginx.pid;
error_log $LOGS/origin-error.log warn;
daemon off;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  types { image/webp webp; image/avif avif; image/svg+xml svg; }
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path $d/tmp; proxy_temp_path $d/tmp; fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    root $CORPUS;
    location / { add_header Cache-Control "public, max-age=3600"; }
  }
}
CONF
  start_bg origin nginx -c "$d/nginx.conf" -e "$LOGS/origin-error.log"
else
  start_bg origin "${PYTHON:-python3}" -m http.server "$ORIGIN_PORT" --bind 127.0.0.1 --directory "$CORPUS"
fi
wait_http origin "$ORIGIN_URL/manifest.json" 20
echo "$ORIGIN_URL"
