#!/bin/sh
# Benchmarks (`make bench` calls this with the build directory as $1).
# Independent sections, one per benchmark: each prints its own figures and a
# failing section does not stop the others.  Add a section by appending one
# `section` line and its command.
set -u
BUILD=${1:-build}
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
status=0
section() {
    echo
    echo "== $1"
}
run() {
    "$@" || { echo "FAILED: $*"; status=1; }
}

section "CPU image embedding: ViT-B/16, vflclip vs transformers' CLIPVisionModelWithProjection"
run "$PY" tests/bench/bench_embed_vs_torch.py --build "$BUILD"

section "CPU image embedding in bf16: vflclip fp32/bf16 vs OpenVINO (bf16, f32) and ONNX Runtime on the same ONNX export, ViT-B/16 and ViT-L/14; DermaMNIST projection"
run "$PY" tests/bench/bench_bf16_vs_openvino.py --build "$BUILD"

section "CoOp training step: ViT-B/16 text tower, 7 classes, 16 ctx, batch 32, Adam; vflclip vs PyTorch autograd (transformers)"
run "$PY" tests/bench/coop_step_torch.py --build "$BUILD"

section "gRPC transport: unary round trip and 1 MiB server-stream throughput, mTLS on loopback; vflclip (C) vs grpcio's own pair"
run "$PY" tests/bench/bench_rpc.py --build "$BUILD"

section "CPU image embedding: RN50x4 (OpenCLIP ModifiedResNet, 288 px), vflclip vs open_clip's own model"
run "$PY" tests/bench/bench_rn50x4_vs_torch.py --build "$BUILD"

section "Federated step: aggregator + knowledge party + 3 image parties over gRPC/mTLS on loopback vs vflclip train in one process (ViT-B text tower, 7 classes, 16 ctx, batch 32)"
run "$PY" tests/bench/bench_federated_step.py --build "$BUILD"

section "Price of privacy: test AUC/ACC and epsilon at several noise levels (dL/dT and embedding DP), synthetic shapes, tiny model"
run "$PY" tests/bench/bench_privacy.py --build "$BUILD"

exit $status
