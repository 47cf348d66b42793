"""`vflclip predict` throughput on the CPU (issue 15 item 5): images/s of the
whole command on a MedMNIST-style npz (decode, CLIP preprocessing, the vision
tower in fp32, scoring, CSV), with the embedding cache off so every image is
encoded, for a random-weight model of a real size (default ViT-B/16, 224 px).
The classifier comes from a one-epoch `vflclip train` on the same data (its
contents do not change the cost).  Each round times the command on N and on
2N test images: N / t(N) is the whole command's rate (model load included),
N / (t(2N) - t(N)) the rate per added image (encode and score only).  Best
and median over --rounds.

  python3 tests/bench/bench_predict.py --build build [--like vit-b-16] [--images 64] [--threads 2] [--rounds 3]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np


def run(cmd, env):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{p.stderr[-3000:]}")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--like", default="vit-b-16")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    exe = pathlib.Path(a.build) / "vflclip"
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        run([exe, "make-model", "--like", a.like, "--seed", "1", "--out", d / "model"], env)
        size = json.loads((d / "model" / "preprocessor_config.json").read_text())["crop_size"]["height"]
        rng = np.random.default_rng(0)
        arrays = {}
        for split, n in [("train", 8), ("val", 4), ("test", 2 * a.images)]:
            arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            arrays[f"{split}_labels"] = rng.integers(0, 7, (n, 1))
        np.savez(d / "data2.npz", **arrays)
        arrays["test_images"], arrays["test_labels"] = arrays["test_images"][:a.images], arrays["test_labels"][:a.images]
        np.savez(d / "data.npz", **arrays)
        run([exe, "train", "--model", d / "model", "--data", d / "data.npz", "--out", d / "run", "--epochs", "1",
             "--batch-size", "4", "--n-ctx", "4", "--no-cache", "--quiet", "--device", "cpu"], env)
        clf = d / "run" / "classifier.safetensors"
        def timed(data, n):
            t0 = time.perf_counter()
            run([exe, "predict", "--model", d / "model", "--classifier", clf, "--data", data, "--split", "test",
                 "--no-cache", "--device", "cpu", "--precision", "fp32", "--embed-batch", a.batch, "--out", d / "p.csv"], env)
            dt = time.perf_counter() - t0
            rows = sum(1 for _ in open(d / "p.csv")) - 1
            assert rows == n, rows
            return dt

        whole, marginal = [], []
        for r in range(a.rounds):
            t1, t2 = timed(d / "data.npz", a.images), timed(d / "data2.npz", 2 * a.images)
            whole.append(a.images / t1)
            marginal.append(a.images / (t2 - t1))
            print(f"round {r + 1}: {a.images} images {t1:.2f} s, {2 * a.images} images {t2:.2f} s: "
                  f"{whole[-1]:.2f} images/s whole command, {marginal[-1]:.2f} images/s per added image")
        print(f"predict on the CPU, {a.like} ({size} px), {a.threads} threads, batch {a.batch}, N = {a.images}: "
              f"whole command best {max(whole):.2f} images/s (median {float(np.median(whole)):.2f}); "
              f"per added image best {max(marginal):.2f} images/s (median {float(np.median(marginal)):.2f})")


if __name__ == "__main__":
    main()
