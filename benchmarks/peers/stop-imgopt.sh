#!/usr/bin/env bash
HERE="$(cd "$(dirname "$0")" && pwd)"
. "${BENCH_SHARED:-$HERE/../../../shared/bench}/peers/_lib.sh"; stop_peer imgopt
