#!/bin/sh
# No GPU needed: checks the benchmark's weight export and bench_torch.py's
# loading against transformers on the CPU.  gpu_check export-vit writes a tiny
# random ViT as an HF safetensors file with pixels and the C tower's
# embeddings; bench_torch.py --check-only loads it into
# CLIPVisionModelWithProjection and compares (fp32: 1e-4 relative).
# Usage: tests/gpu/check_export_cpu.sh [PYTHON]   (default .venv/bin/python)
set -eu
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
[ -x build/gpu/gpu_check ] || tests/gpu/build.sh build/gpu >/dev/null
A="--width 128 --layers 2 --heads 2 --mlp 320 --image 56 --patch 14 --proj 96"
build/gpu/gpu_check export-vit $A --batch 3 --dir "$DIR"
"$PY" tests/gpu/bench_torch.py $A --batch 3 --label tiny-cpu --dir "$DIR" --results "$DIR/r.jsonl" --device cpu --check-only
