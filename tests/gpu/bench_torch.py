"""The PyTorch side of the GPU benchmark (tests/gpu/run.sh runs it on the device).

Loads the random ViT weights that `gpu_check bench-vit --dir DIR` wrote
(weights.safetensors, Hugging Face names) into transformers'
CLIPVisionModelWithProjection and
  1. cross-checks: fp32 image embeddings of DIR/pixels.f32 against ours
     (ours_fp32.f32: relative error; ours_bf16.f32: cosine) — an independent
     reference for the CUDA tower;
  2. times a bf16, SDPA-attention forward of `--batch` random images resident
     on the device: 3 warm-ups, 10 timed runs with CUDA events, median.
Appends JSON lines to --results and prints RESULT/CHECK lines.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection


def gflop_per_image(a):
    C, F, P, S = a.width, a.mlp, a.patch, a.image
    NP = (S // P) ** 2
    T = NP + 1
    layer = 2 * T * C * 3 * C + 2 * 2 * T * T * C + 2 * T * C * C + 2 * 2 * T * C * F
    return (2 * NP * 3 * P * P * C + a.layers * layer + 2 * C * a.proj) / 1e9


def build(a, dtype):
    cfg = CLIPVisionConfig(hidden_size=a.width, intermediate_size=a.mlp, num_hidden_layers=a.layers,
                           num_attention_heads=a.heads, image_size=a.image, patch_size=a.patch,
                           hidden_act=a.act, projection_dim=a.proj, layer_norm_eps=1e-5)
    try:
        model = CLIPVisionModelWithProjection._from_config(cfg, attn_implementation="sdpa")
    except (TypeError, ValueError, ImportError):  # ImportError: torch < 2.1 has no SDPA (CPU check-only runs)
        model = CLIPVisionModelWithProjection(cfg)
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("sdpa")
    state = load_file(os.path.join(a.dir, "weights.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        sys.exit(f"bench_torch: weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device=a.device, dtype=dtype).eval(), getattr(model.config, "_attn_implementation", "?")


def emit(results, obj, line):
    print(line, flush=True)
    with open(results, "a") as f:
        f.write(json.dumps(obj) + "\n")


def main():
    p = argparse.ArgumentParser()
    for k in ("width", "layers", "heads", "mlp", "image", "patch", "proj", "batch"):
        p.add_argument("--" + k, type=int, required=True)
    p.add_argument("--act", default="quick_gelu")
    p.add_argument("--label", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--peak", type=float, default=790.0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--check-only", action="store_true", help="cross-check only, no benchmark (works on the CPU)")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    # 1. cross-check against our embeddings of the same pixels
    S, D = a.image, a.proj
    pix = np.fromfile(os.path.join(a.dir, "pixels.f32"), dtype=np.float32).reshape(-1, 3, S, S)
    ours32 = np.fromfile(os.path.join(a.dir, "ours_fp32.f32"), dtype=np.float32).reshape(-1, D)
    ours16 = np.fromfile(os.path.join(a.dir, "ours_bf16.f32"), dtype=np.float32).reshape(-1, D)
    model, attn = build(a, torch.float32)
    with torch.inference_mode():
        ref = model(pixel_values=torch.from_numpy(pix).to(a.device)).image_embeds.double().cpu().numpy()
    rel = float(np.linalg.norm(ours32 - ref) / np.linalg.norm(ref))
    cos = float(np.min(np.sum(ours16 * ref, 1) / (np.linalg.norm(ours16, axis=1) * np.linalg.norm(ref, axis=1))))
    ok32, ok16 = rel <= 1e-4, cos >= 0.999
    name = f"vit {a.label} vs transformers fp32"
    emit(a.results, {"check": name, "pass": ok32, "rel": rel, "tol": 1e-4},
         f"CHECK {name:44s} {'PASS' if ok32 else 'FAIL'} rel={rel:.3g} max_abs={np.abs(ours32 - ref).max():.3g} tol=1e-4")
    name = f"vit {a.label} bf16 vs transformers fp32"
    emit(a.results, {"check": name, "pass": ok16, "min_cos": cos, "tol": 0.999},
         f"CHECK {name:44s} {'PASS' if ok16 else 'FAIL'} cos={cos:.7f} min_cos=0.999")
    del model
    if a.check_only:
        sys.exit(0 if ok32 and ok16 else 1)
    torch.cuda.empty_cache()

    # 2. bf16 SDPA benchmark on device-resident random images
    model, attn = build(a, torch.bfloat16)
    x = (torch.rand(a.batch, 3, S, S, device="cuda") * 4 - 1.8).to(torch.bfloat16)
    times = []
    with torch.inference_mode():
        for i in range(13):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(pixel_values=x)
            end.record()
            torch.cuda.synchronize()
            if i >= 3:
                times.append(start.elapsed_time(end))
    times.sort()
    ms = times[5]
    g = gflop_per_image(a)
    tflops = g * a.batch / (ms / 1e3) / 1e3
    obj = {"result": f"torch_vit_forward {a.label}", "precision": "bf16", "attn_implementation": attn,
           "torch": torch.__version__, "batch": a.batch, "image_size": S, "gflop_per_image": round(g, 2),
           "median_ms": round(ms, 3), "min_ms": round(times[0], 3), "max_ms": round(times[-1], 3),
           "images_per_s": round(a.batch / (ms / 1e3), 1), "tflops": round(tflops, 1), "peak_tflops": a.peak,
           "fraction_of_peak": round(tflops / a.peak, 3)}
    emit(a.results, obj, f"RESULT torch_vit_forward {a.label} " + json.dumps(obj))


if __name__ == "__main__":
    main()
