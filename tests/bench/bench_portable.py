"""Portable build against -march=native (issue 16 item 2): the ViT-B/16 image
embedding (bench/bench_embed) and the CoOp training step (bench/bench_coop_step)
of two build directories, e.g. the default build and `make NATIVE=1`, on the
same random-weight models and inputs, the same thread count, the two builds
alternating for --rounds rounds so that load from other processes hits both
alike.  Prints each round, each side's best, and portable/native.

  python3 tests/bench/bench_portable.py --portable build-portable --native build-native [--rounds 3 --threads 2]
"""
import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from embed_common import children_cpu, cpu_model, make_model, run_bench_embed, save_pixels, thread_env  # noqa: E402


def coop_step(build, model, steps, env):
    """bench_coop_step's figures and the CPU seconds of the whole process
    (model load included): less sensitive to other processes' load."""
    cpu0 = children_cpu()
    p = subprocess.run([build / "bench" / "bench_coop_step", model, str(steps)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"bench_coop_step failed:\n{p.stderr}")
    return dict(re.findall(r"(\w+)=(\S+)", p.stdout), cpu=children_cpu() - cpu0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--portable", required=True)
    ap.add_argument("--native", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    builds = {"portable": pathlib.Path(a.portable), "native": pathlib.Path(a.native)}
    env = thread_env(a.threads)
    emb = {k: [] for k in builds}
    step = {k: [] for k in builds}
    with tempfile.TemporaryDirectory(prefix="vf_bench_portable_") as tmp:
        tmp = pathlib.Path(tmp)
        make_model(builds["portable"], "vit-b-16", tmp / "vit")
        save_pixels(tmp / "pixels.npy", a.images, 224)
        (tmp / "coop").mkdir()
        for r in range(a.rounds):
            for k, b in builds.items():
                got, _ = run_bench_embed(b, tmp / "vit", tmp / "pixels.npy", a.batch, 1, env)
                emb[k].append((float(got["images_per_s"]), float(got["cpu_seconds"]) / a.images, got["blas_core"]))
                got = coop_step(b, tmp / "coop", a.steps, env)
                step[k].append((float(got["min"]), float(got["median"]), got["cpu"]))
                print(f"round {r + 1} {k:8s}: embed {emb[k][-1][0]:.3f} images/s ({emb[k][-1][1]:.3f} CPU s/image, "
                      f"OpenBLAS {emb[k][-1][2]}); CoOp step min {step[k][-1][0]:.1f} ms, median {step[k][-1][1]:.1f} ms "
                      f"({step[k][-1][2]:.2f} CPU s for the run)",
                      flush=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; threads={a.threads}; "
          f"ViT-B/16 random weights, {a.images} images batch {a.batch}; CoOp step {a.steps} steps; best of {a.rounds} rounds")
    best = {k: (max(x[0] for x in emb[k]), min(x[1] for x in emb[k]), min(x[0] for x in step[k]),
                min(x[1] for x in step[k]), min(x[2] for x in step[k])) for k in builds}
    for k in builds:
        e_ips, e_cpu, s_min, s_med, s_cpu = best[k]
        print(f"{k:8s}: embed {e_ips:.3f} images/s, {e_cpu:.3f} CPU s/image; CoOp step min {s_min:.1f} ms, "
              f"median {s_med:.1f} ms, {s_cpu:.2f} CPU s per run")
    p, n = best["portable"], best["native"]
    print(f"portable/native: embed {p[0] / n[0]:.3f}x images/s, {n[1] / p[1]:.3f}x by CPU time; "
          f"CoOp step {n[2] / p[2]:.3f}x (min), {n[3] / p[3]:.3f}x (median), {n[4] / p[4]:.3f}x by CPU time "
          f"(1.000 = as fast; below 1 = slower)")


if __name__ == "__main__":
    main()
