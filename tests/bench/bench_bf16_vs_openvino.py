"""CPU image embedding in bf16 (issue 18): vflclip fp32 and bf16
(build/bench/bench_embed, model load excluded) against OpenVINO (bf16 and
f32 inference precision) and ONNX Runtime (fp32, its CPU provider), all on
the same random-weight model (`vflclip make-model --like ...`), the same
pixels and the same thread count.  OpenVINO and ONNX Runtime read the ONNX
export (torch.onnx.export) of transformers' CLIPVisionModelWithProjection
loaded from that model directory.

The engines alternate for --rounds rounds (each: vflclip fp32, vflclip bf16,
OpenVINO f32, OpenVINO bf16, ONNX Runtime) and each one's best round counts,
so that load from other processes on a shared machine hits all alike.
Prints images/s, the ratio vflclip bf16 / OpenVINO bf16 (goal >= 1), the
cosine of every engine's embeddings to vflclip fp32, the CPU model and its
bf16 flags, and, with --dermamnist, the projected time to encode the 10,015
DermaMNIST images at that rate.

On a CPU without bf16 the vflclip bf16 row says so in one line; OpenVINO
then runs its bf16 hint in f32 itself (it reports its execution precision,
printed here)."""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from embed_common import cpu_model, make_model, run_bench_embed, save_pixels, thread_env

DERMAMNIST_IMAGES = 10015


def cpu_flags():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    flags = re.search(r"Flags:\s*(.*)", out)
    flags = flags.group(1).split() if flags else []
    return [f for f in flags if f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_fp16")]


def export_onnx(model_dir, path, size, threads):
    import torch
    from transformers import CLIPVisionModelWithProjection
    torch.set_num_threads(threads)
    m = CLIPVisionModelWithProjection.from_pretrained(model_dir).eval()

    class Embeds(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).image_embeds

    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(Embeds(m), (x,), str(path), input_names=["pixel_values"], output_names=["image_embeds"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}, opset_version=14)
    return torch.__version__


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--like", action="append", help="backbones (default vit-b-16 and vit-l-14)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dermamnist", default="vit-l-14", help="project DermaMNIST's encoding time for this backbone")
    a = ap.parse_args()
    build = pathlib.Path(a.build)
    n = a.threads
    env = thread_env(n)
    os.environ.update(env)
    import openvino as ov
    import onnxruntime as ort

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, flags {' '.join(cpu_flags())}; threads={n}; "
          f"openvino {ov.__version__}, onnxruntime {ort.__version__}; load average {os.getloadavg()[0]:.2f} at the start")
    for like in a.like or ["vit-b-16", "vit-l-14"]:
        with tempfile.TemporaryDirectory(prefix="vf_bench_bf16_") as tmp:
            tmp = pathlib.Path(tmp)
            model = tmp / "model"
            make_model(build, like, model)
            size = json.loads((model / "config.json").read_text())["vision_config"]["image_size"]
            pixels = save_pixels(tmp / "pixels.npy", a.images, size)
            torch_version = export_onnx(model, tmp / "vision.onnx", size, n)

            core = ov.Core()
            compiled = {}
            for hint in ("f32", "bf16"):
                m = core.read_model(str(tmp / "vision.onnx"))
                m.reshape({"pixel_values": [a.batch, 3, size, size]})
                compiled[hint] = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                                "INFERENCE_NUM_THREADS": n,
                                                                "PERFORMANCE_HINT": "LATENCY"})
            ov_exec = {h: c.get_property("INFERENCE_PRECISION_HINT") for h, c in compiled.items()}
            ov_exec = {h: getattr(t, "get_type_name", lambda: str(t))() for h, t in ov_exec.items()}
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = n, 1
            sess = ort.InferenceSession(str(tmp / "vision.onnx"), so, providers=["CPUExecutionProvider"])

            def run_vflclip(prec):
                got, _ = run_bench_embed(build, model, tmp / "pixels.npy", a.batch, 1, env, tmp / f"vf_{prec}.npy",
                                         precision=prec, may_fail=True)
                if "error" in got:
                    return None, got["error"]
                return float(got["images_per_s"]), np.load(tmp / f"vf_{prec}.npy")

            def run_ov(hint):
                req = compiled[hint].create_infer_request()
                req.infer({0: pixels[: a.batch]})  # warm-up, as bench_embed does
                t0 = time.perf_counter()
                outs = [req.infer({0: pixels[i:i + a.batch]})[0].copy() for i in range(0, a.images, a.batch)]
                return a.images / (time.perf_counter() - t0), np.concatenate(outs)

            def run_ort():
                sess.run(None, {"pixel_values": pixels[: a.batch]})
                t0 = time.perf_counter()
                outs = [sess.run(None, {"pixel_values": pixels[i:i + a.batch]})[0] for i in range(0, a.images, a.batch)]
                return a.images / (time.perf_counter() - t0), np.concatenate(outs)

            engines = {"vflclip fp32": lambda: run_vflclip("fp32"), "vflclip bf16": lambda: run_vflclip("bf16"),
                       "OpenVINO f32": lambda: run_ov("f32"), "OpenVINO bf16": lambda: run_ov("bf16"),
                       "ONNX Runtime fp32": run_ort}
            rounds = {k: [] for k in engines}
            emb = {}
            for _ in range(a.rounds):
                for k, f in engines.items():
                    ips, e = f()
                    rounds[k].append(ips)
                    emb[k] = e
            load = os.getloadavg()[0]

        print(f"\nmodel: random {like} ({size} px), {a.images} images, batch {a.batch}, best of {a.rounds} alternating "
              f"rounds; ONNX from transformers' CLIPVisionModelWithProjection (torch {torch_version}); OpenVINO "
              f"execution precision: f32 hint -> {ov_exec['f32']}, bf16 hint -> {ov_exec['bf16']}")
        ref = emb["vflclip fp32"]
        best = {}
        for k, r in rounds.items():
            if r[0] is None:
                print(f"{k:18s} not run: {emb[k]}")
                continue
            best[k] = max(r)
            print(f"{k:18s} {best[k]:8.3f} images/s   rounds: {' '.join(f'{x:.3f}' for x in r)}   "
                  f"min cosine to vflclip fp32 {cosines(emb[k], ref).min():.7f}")
        if "vflclip bf16" in best:
            print(f"ratio vflclip bf16 / OpenVINO bf16: {best['vflclip bf16'] / best['OpenVINO bf16']:.2f}x (goal >= 1); "
                  f"/ OpenVINO f32: {best['vflclip bf16'] / best['OpenVINO f32']:.2f}x; "
                  f"/ ONNX Runtime fp32: {best['vflclip bf16'] / best['ONNX Runtime fp32']:.2f}x; "
                  f"/ vflclip fp32: {best['vflclip bf16'] / best['vflclip fp32']:.2f}x")
        print(f"ratio vflclip fp32 / OpenVINO f32: {best['vflclip fp32'] / best['OpenVINO f32']:.2f}x; load average "
              f"{load:.2f} at the end")
        if like == a.dermamnist:
            for k in ("vflclip bf16", "vflclip fp32"):
                if k in best:
                    s = DERMAMNIST_IMAGES / best[k]
                    print(f"DermaMNIST ({DERMAMNIST_IMAGES} images, 224 px) with {like}, {k}: projected {s / 60:.1f} min "
                          f"({s:.0f} s) of tower time at {best[k]:.3f} images/s (measured on {a.images} images; "
                          f"decoding and preprocessing not included)")
        for k in ("vflclip bf16", "OpenVINO bf16", "OpenVINO f32", "ONNX Runtime fp32"):
            if k in emb and rounds[k][0] is not None and cosines(emb[k], ref).min() < 0.999:
                sys.exit(f"{k} embeddings differ from vflclip fp32: the benchmark compared different computations")


if __name__ == "__main__":
    main()
