#!/bin/sh
# Runs the libFuzzer target for the gRPC server's decoding path for a bounded
# time:  tests/fuzz/run.sh BUILD SECONDS.  The corpus grows in BUILD/fuzz/corpus
# (seeded from make_corpus.py); a crash leaves its input in BUILD/fuzz/.
set -eu
BUILD=${1:-build}
SECONDS_=${2:-30}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$BUILD/fuzz/corpus"
[ -n "$(ls -A "$BUILD/fuzz/corpus")" ] || "$PY" tests/fuzz/make_corpus.py "$BUILD/fuzz/corpus"
exec "$BUILD/fuzz/fuzz_rpc_server" -max_total_time="$SECONDS_" -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$BUILD/fuzz/" "$BUILD/fuzz/corpus"
