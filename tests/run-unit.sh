#!/bin/sh
# Runs every cmocka unit-test program under BUILD/tests and sums the results.
set -u
BUILD=${1:-build}
pass=0; fail=0
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  case "$t" in *.d|*.o) continue;; esac
  if "$t"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAILED: $t"; fi
done
echo "unit test programs: $pass passed, $fail failed"
[ "$fail" = 0 ]
