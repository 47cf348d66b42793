"""CPU image-embedding throughput: vflclip's ViT (build/bench/bench_embed,
model load excluded) against transformers' CLIPVisionModelWithProjection on
the same random-weight model (made by `vflclip make-model`), the same pixels
and the same thread count, in one run.  Prints images/s for both and the
ratio, and checks that both computed the same embeddings.  A vflclip bf16
row (bf16 matmuls on a CPU with AVX512_BF16/AMX, issue 18) runs in the same
rounds, with its cosine to the fp32 embeddings; elsewhere it says in one line
why it did not run.

The two alternate for --rounds rounds and each side's best round counts, so
that load from other processes on a shared machine hits both alike; CPU
seconds per image are printed too (less sensitive to that load)."""
import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

from embed_common import cpu_model, make_model, run_bench_embed, save_pixels, thread_env, torch_like_ours


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--like", default="vit-b-16")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    build = pathlib.Path(a.build)
    n = a.threads
    env = thread_env(n)

    with tempfile.TemporaryDirectory(prefix="vf_bench_embed_") as tmp:
        tmp = pathlib.Path(tmp)
        model = tmp / "model"
        make_model(build, a.like, model)
        import json
        size = json.loads((model / "config.json").read_text())["vision_config"]["image_size"]
        pixels = save_pixels(tmp / "pixels.npy", a.images, size)

        def run_ours():
            got, _ = run_bench_embed(build, model, tmp / "pixels.npy", a.batch, a.repeats, env, tmp / "ours.npy")
            return float(got["images_per_s"]), float(got["cpu_seconds"]) / (a.images * a.repeats), got["blas_core"]

        def run_ours_bf16():
            got, _ = run_bench_embed(build, model, tmp / "pixels.npy", a.batch, a.repeats, env, tmp / "ours_bf16.npy",
                                     precision="bf16", may_fail=True)
            if "error" in got:
                return got["error"]
            return float(got["images_per_s"]), float(got["cpu_seconds"]) / (a.images * a.repeats)

        ours = [run_ours()]
        ours_bf16 = [run_ours_bf16()]
        core = ours[0][2]
        # PyTorch gets the same OpenBLAS kernels and thread count.
        torch = torch_like_ours(env, core, n)
        from transformers import CLIPVisionModelWithProjection
        m = CLIPVisionModelWithProjection.from_pretrained(model).eval()
        x = torch.from_numpy(pixels)

        def run_torch():
            with torch.no_grad():
                m(pixel_values=x[: a.batch])  # warm-up, as bench_embed does
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(a.repeats):
                    outs = [m(pixel_values=x[i:i + a.batch]).image_embeds for i in range(0, a.images, a.batch)]
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            return a.images * a.repeats / dt, cpu / (a.images * a.repeats), torch.cat(outs).numpy()

        theirs = [run_torch()]
        for _ in range(a.rounds - 1):
            ours.append(run_ours())
            if not isinstance(ours_bf16[0], str):
                ours_bf16.append(run_ours_bf16())
            theirs.append(run_torch())
        ref = theirs[-1][2]
        fp32 = np.load(tmp / "ours.npy")
        diff = float(np.abs(fp32 - ref).max())
        if not isinstance(ours_bf16[0], str):
            bf16 = np.load(tmp / "ours_bf16.npy")
            bf16_cos = float(((fp32 * bf16).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))).min())

    ours_ips, torch_ips = max(r[0] for r in ours), max(r[0] for r in theirs)
    ours_cpu, torch_cpu = min(r[1] for r in ours), min(r[1] for r in theirs)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; threads={n}; OpenBLAS kernels={core}; "
          f"torch {torch.__version__}")
    print(f"model: random {a.like}; {a.images} images x {a.repeats} repeats, batch {a.batch}; best of {a.rounds} alternating rounds")
    print(f"vflclip: {ours_ips:.3f} images/s  ({ours_cpu:.3f} CPU s/image)   rounds: " + " ".join(f"{r[0]:.3f}" for r in ours))
    print(f"pytorch: {torch_ips:.3f} images/s  ({torch_cpu:.3f} CPU s/image)   rounds: " + " ".join(f"{r[0]:.3f}" for r in theirs))
    print(f"ratio:   {ours_ips / torch_ips:.2f}x images/s (goal >= 1.3x); {torch_cpu / ours_cpu:.2f}x in CPU time per image")
    if isinstance(ours_bf16[0], str):
        print(f"vflclip bf16: not run: {ours_bf16[0]}")
    else:
        bf16_ips, bf16_cpu = max(r[0] for r in ours_bf16), min(r[1] for r in ours_bf16)
        print(f"vflclip bf16: {bf16_ips:.3f} images/s  ({bf16_cpu:.3f} CPU s/image)   rounds: "
              + " ".join(f"{r[0]:.3f}" for r in ours_bf16)
              + f"; {bf16_ips / ours_ips:.2f}x vflclip fp32, {bf16_ips / torch_ips:.2f}x pytorch; min cosine to fp32 {bf16_cos:.7f}")
    print(f"max abs diff of the embeddings: {diff:.3g}")
    if not diff <= 1e-3 * max(1.0, float(np.abs(ref).max())):
        sys.exit("embeddings differ: the benchmark compared different computations")


if __name__ == "__main__":
    main()
