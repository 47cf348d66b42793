"""CPU image-embedding throughput of the RN50x4 tower (OpenCLIP ModifiedResNet,
288 px): vflclip (build/bench/bench_embed, model load excluded) against
open_clip's own model (open_clip_torch, PyTorch with oneDNN convolutions) on
the same random-weight checkpoint (`vflclip make-model --like rn50x4`), the
same pixels, the same batch and thread count, in one run.

Prints images/s for both and the ratio, and also CPU-seconds per image
(process CPU time of the timed loop: for vflclip the difference between a
2-repeat and a 1-repeat run, so load and warm-up drop out).  On a machine
shared with other work, wall-clock images/s swings with the load; CPU time per
image is the steadier comparison.  Checks that both computed the same
embeddings."""
import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

from embed_common import cpu_model, make_model, run_bench_embed, save_pixels, thread_env, torch_like_ours


def run_c(build, model, pixels, batch, repeats, env, dump=None):
    got, cpu = run_bench_embed(build, model, pixels, batch, repeats, env, dump)
    return float(got["images_per_s"]), cpu, got.get("blas_core", "?")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    build = pathlib.Path(a.build)
    n = a.threads
    env = thread_env(n)
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="vf_bench_rn50x4_") as tmp:
        tmp = pathlib.Path(tmp)
        model = tmp / "rn50x4"
        make_model(build, "rn50x4", model)
        cfg = json.loads((model / "open_clip_config.json").read_text())["model_cfg"]
        size = cfg["vision_cfg"]["image_size"]
        pixels = save_pixels(tmp / "pixels.npy", a.images, size)

        ours_ips, cpu1, core = run_c(build, model, tmp / "pixels.npy", a.batch, 1, env, tmp / "ours.npy")

        # PyTorch: the same thread count (and OpenBLAS kernels, for what it uses OpenBLAS for)
        torch = torch_like_ours(env, core, n)
        from open_clip.model import CLIP
        from safetensors.torch import load_file
        m = CLIP(**cfg).eval()
        m.load_state_dict(load_file(str(model / "open_clip_model.safetensors")), strict=True)
        x = torch.from_numpy(pixels)
        with torch.no_grad():
            m.encode_image(x[: a.batch])  # warm-up, as bench_embed does
            c0, t0 = time.process_time(), time.perf_counter()
            outs = [m.encode_image(x[i:i + a.batch]) for i in range(0, a.images, a.batch)]
            dt, torch_cpu = time.perf_counter() - t0, time.process_time() - c0
        torch_ips = a.images / dt
        ref = torch.cat(outs).numpy()

        _, cpu2, _ = run_c(build, model, tmp / "pixels.npy", a.batch, 2, env)
        ours_cpu = (cpu2 - cpu1) / a.images
        diff = float(np.abs(np.load(tmp / "ours.npy") - ref).max())

    torch_cpu /= a.images
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; threads={n}; OpenBLAS kernels={core}; "
          f"torch {torch.__version__} (oneDNN convolutions); load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"model: random RN50x4 ({size} px); {a.images} images, batch {a.batch}")
    print(f"vflclip: {ours_ips:.3f} images/s, {ours_cpu:.3f} CPU-s/image")
    print(f"pytorch: {torch_ips:.3f} images/s, {torch_cpu:.3f} CPU-s/image")
    print(f"ratio:   {ours_ips / torch_ips:.2f}x images/s, {torch_cpu / ours_cpu:.2f}x by CPU time")
    print(f"max abs diff of the embeddings: {diff:.3g} (max |ref| {np.abs(ref).max():.3g})")
    if not diff <= 1e-4 * max(1.0, float(np.abs(ref).max())):
        sys.exit("embeddings differ: the benchmark compared different computations")


if __name__ == "__main__":
    main()
