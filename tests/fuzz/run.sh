#!/bin/sh
# Runs every libFuzzer target built in BUILD/fuzz for SECONDS each:
#   tests/fuzz/run.sh BUILD SECONDS [NAME...]
# Each target starts from its seed corpus tests/fuzz/corpus/<name> (read only,
# in the repository) and keeps what it finds in BUILD/fuzz/corpus/<name>.  A
# crash, a sanitizer report, a leak, an input slower than 10 s or a single
# allocation over 1 GiB fails the target; its input is left at
# BUILD/fuzz/<name>-crash-<sha1> (or -timeout-, -leak-, -oom-, -slow-unit-), and the script
# exits non-zero after running the others.  Replay one with
#   BUILD/fuzz/fuzz_<name> BUILD/fuzz/<name>-crash-<sha1>
set -u
BUILD=${1:-build}
SECONDS_=${2:-30}
if [ $# -ge 2 ]; then shift 2; else shift $#; fi
names=$*
if [ -z "$names" ]; then
  for b in "$BUILD"/fuzz/fuzz_*; do
    [ -x "$b" ] && [ -f "$b" ] && names="$names ${b##*/fuzz_}"
  done
fi
[ -n "$names" ] || { echo "tests/fuzz/run.sh: no fuzz targets in $BUILD/fuzz (make fuzz-build)"; exit 1; }
# fontconfig's process-lifetime cache (cairo plots in the aggregator's run) is
# not a leak of ours; everything else LeakSanitizer finds fails the target.
LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=tests/fuzz/lsan.supp:print_suppressions=0}
export LSAN_OPTIONS
failed=""
for n in $names; do
  bin="$BUILD/fuzz/fuzz_$n"
  seeds="tests/fuzz/corpus/$n"
  work="$BUILD/fuzz/corpus/$n"
  [ -d "$seeds" ] || { echo "FUZZ $n: no seed corpus $seeds"; failed="$failed $n"; continue; }
  mkdir -p "$work"
  log="$BUILD/fuzz/$n.log"
  echo "FUZZ $n: ${SECONDS_}s from $(ls "$seeds" | wc -l) seeds"
  if "$bin" -max_total_time="$SECONDS_" -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=1024 -print_final_stats=1 \
       -artifact_prefix="$BUILD/fuzz/$n-" "$work" "$seeds" >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^Done' "$log" | tr '\n' ' '; echo
  else
    echo "FUZZ $n FAILED (log $log):"
    grep -A40 -E '^==[0-9]+==|runtime error|deadly signal|Test unit written' "$log" | head -60
    failed="$failed $n"
  fi
done
if [ -n "$failed" ]; then
  echo "fuzz targets failed:$failed"
  exit 1
fi
echo "fuzz targets passed: $names"
