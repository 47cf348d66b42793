#!/bin/sh
# Run HERE (the machine without the GPU) before tests/gpu/run.sh goes to the
# device: the device call sends only this repository, not ../shared, so the
# backbone configs are copied into .gpu-carry/ (git-ignored through
# .git/info/exclude) for the call to carry.  Then, with the device tool:
#   run(command="OUT=$OUT tests/gpu/run.sh", carry=[".gpu-carry"], timeout_s=590)
# and copy summary.md's figures into docs/BENCHMARKS.md (date, H200).
set -eu
cd "$(dirname "$0")/../.."
SRC=${1:-../shared/data/clip-configs}
[ -d "$SRC" ] || { echo "prepare.sh: $SRC not found"; exit 1; }
grep -qx '/.gpu-carry/' .git/info/exclude 2>/dev/null || echo '/.gpu-carry/' >>.git/info/exclude
rm -rf .gpu-carry/clip-configs
mkdir -p .gpu-carry
cp -r "$SRC" .gpu-carry/clip-configs
echo "prepare.sh: copied $SRC to .gpu-carry/clip-configs ($(du -sh .gpu-carry | cut -f1)); carry .gpu-carry"
