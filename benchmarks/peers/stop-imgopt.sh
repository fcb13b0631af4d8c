#!/usr/bin/env bash
. "$(dirname "$0")/_lib.sh"; stop_peer imgopt
