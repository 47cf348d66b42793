#!/bin/bash
# tests/gpu/run.sh: every GPU check and benchmark of issue 7 in one run, for a
# session that has the device tool (an H200).  Writes under $OUT (default
# build/gpu/out): log.txt (everything), results.jsonl (one JSON object per
# check or benchmark), summary.md (the table for docs/BENCHMARKS.md).
#
#   1. builds the checker (tests/gpu/build.sh: nvcc + cc only, no Makefile)
#   2. ops: every CUDA op vs kernels/cpu, forward, backward, finite differences
#   3. ViT-B/16 and ViT-L/14, batch 256, 224 px, bf16: images/s and TFLOP/s,
#      then transformers' CLIPVisionModelWithProjection (bf16, SDPA) on the
#      same weights: cross-check and images/s
#   4. every backbone in the open_clip configs: image embeddings at random
#      weights vs C (fp32 1e-4 relative; tf32 and bf16 cosine >= 0.999)
#   5. one CoOp step per text-tower shape: dL/dctx vs C, step times
# Each step has a time limit, and no backbone check starts after
# $VF_GPU_BUDGET_S (450) seconds, so the whole run stays under ~9 minutes.
#
# Configs: $VF_CLIP_CONFIGS, else ../shared/data/clip-configs/open_clip, else
# .gpu-carry/clip-configs/open_clip (tests/gpu/prepare.sh copies it there;
# name .gpu-carry in the device call's `carry`).  Exit status: 0 when every
# check passed.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-build/gpu/out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
RES=$OUT/results.jsonl
: >"$RES"
exec > >(tee "$LOG") 2>&1
WORK=${VF_GPU_WORK:-/tmp/vflclip-gpu}
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
BUDGET=${VF_GPU_BUDGET_S:-450}  # no new backbone check starts after this many seconds
failed=0
step() {  # step NAME LIMIT_S CMD...: runs with a time limit, records the outcome
  local name=$1 limit=$2; shift 2
  local s=$(date +%s)
  echo "=== $name ($(($s - T0)) s into the run)"
  timeout "$limit" "$@" </dev/null
  local rc=$?
  echo "=== $name: rc=$rc in $(($(date +%s) - s)) s"
  if [ $rc != 0 ]; then
    failed=1
    echo "{\"check\":\"step $name\",\"pass\":false,\"rc\":$rc}" >>"$RES"
  fi
}

date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | head -3
nproc

# 1. build
BUILD=build/gpu
step build 300 bash -c "tests/gpu/build.sh $BUILD >$WORK/build.txt 2>&1; rc=\$?; cat $WORK/build.txt; exit \$rc"
LDP=$(grep '^LD_LIBRARY_PATH=' "$WORK/build.txt" | tail -1 | cut -d= -f2-)
export LD_LIBRARY_PATH="$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CHK="$BUILD/gpu_check --results $RES"
if [ ! -x "$BUILD/gpu_check" ]; then echo "no checker built; stopping"; exit 1; fi
if "$BUILD/gpu_check" info | grep -q '^SKIP'; then
  echo "SKIP run.sh: no CUDA GPU or driver on this machine: nothing was checked (exit 77)"
  exit 77
fi
step info 60 $CHK info

# 2. ops
step ops 120 $CHK ops

# 3. benchmarks: ours, then PyTorch on the same weights
for m in "ViT-B-16 --width 768 --layers 12 --heads 12 --mlp 3072 --image 224 --patch 16 --proj 512" \
         "ViT-L-14 --width 1024 --layers 24 --heads 16 --mlp 4096 --image 224 --patch 14 --proj 768"; do
  set -- $m
  label=$1; shift
  dir="$WORK/$label"
  mkdir -p "$dir"
  step "bench $label" 150 $CHK bench-vit --label "$label" "$@" --batch 256 --peak 790 --dir "$dir"
  step "torch $label" 240 python3 tests/gpu/bench_torch.py --label "$label" "$@" --batch 256 --peak 790 --dir "$dir" \
    --results "$RES"
  rm -f "$dir/weights.safetensors"
done

# 4. + 5. every backbone shape (skipped once the run nears its budget)
CFG=""
for d in "${VF_CLIP_CONFIGS:-}" ../shared/data/clip-configs/open_clip .gpu-carry/clip-configs/open_clip; do
  [ -n "$d" ] && [ -d "$d" ] && CFG=$d && break
done
if [ -n "$CFG" ]; then
  python3 tests/gpu/configs.py "$CFG" >"$WORK/configs.txt"
else
  echo "WARNING: no clip-configs folder here (run tests/gpu/prepare.sh and carry .gpu-carry); using the shapes below"
  cat >"$WORK/configs.txt" <<'EOF'
resnet --label RN50x4 --rn-layers 4,6,10,6 --width 80 --image 288 --heads 40 --proj 640
resnet --label RN50x16 --rn-layers 6,8,18,8 --width 96 --image 384 --heads 48 --proj 768
resnet --label RN50x64 --rn-layers 3,15,36,10 --width 128 --image 448 --heads 64 --proj 1024
vit --label ViT-B-32 --width 768 --layers 12 --heads 12 --mlp 3072 --image 224 --patch 32 --proj 512
vit --label ViT-B-16 --width 768 --layers 12 --heads 12 --mlp 3072 --image 224 --patch 16 --proj 512
vit --label ViT-L-14 --width 1024 --layers 24 --heads 16 --mlp 4096 --image 224 --patch 14 --proj 768
vit --label ViT-L-14-336 --width 1024 --layers 24 --heads 16 --mlp 4096 --image 336 --patch 14 --proj 768
coop --label ViT-B-16-text --width 512 --layers 12 --heads 8 --mlp 2048 --proj 512
coop --label ViT-L-14-text --width 768 --layers 12 --heads 12 --mlp 3072 --proj 768
EOF
fi
# cheapest first: CoOp steps, then ViTs, then ResNets
{ grep '^coop' "$WORK/configs.txt"; grep '^vit' "$WORK/configs.txt"; grep '^resnet' "$WORK/configs.txt"; } >"$WORK/order.txt"
cat "$WORK/order.txt"
while read -r line; do
  set -- $line
  if [ $(($(date +%s) - T0)) -gt "$BUDGET" ]; then
    echo "=== $1 $3: SKIPPED, the run is past its ${BUDGET} s budget"
    echo "{\"check\":\"step $1 $3\",\"pass\":false,\"skipped\":\"time budget\"}" >>"$RES"
    continue
  fi
  step "$1 $3" 120 $CHK $line --batch 2
done <"$WORK/order.txt"

echo "=== summary ($(($(date +%s) - T0)) s)"
python3 tests/gpu/summarize.py "$RES" "$OUT/summary.md"
grep -q '"pass": *false' "$RES" && failed=1
echo "run.sh: $([ $failed = 0 ] && echo ALL PASSED || echo SOME FAILED)"
exit $failed
