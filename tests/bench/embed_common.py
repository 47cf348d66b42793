"""What the image-embedding benchmarks (bench_embed_vs_torch.py,
bench_rn50x4_vs_torch.py) share: the machine line, the thread environment,
the random model and pixels, one run of build/bench/bench_embed, and PyTorch
set up with the same threads and OpenBLAS kernels."""
import os
import platform
import re
import resource
import subprocess
import sys

import numpy as np


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return re.search(r"Model name:\s*(.*)", out).group(1).strip()
    except Exception:
        return platform.processor() or "unknown"


def thread_env(n):
    return dict(os.environ, OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n))


def make_model(build, like, out):
    """A random-weight model made by `vflclip make-model --like LIKE --seed 0`."""
    subprocess.run([build / "vflclip", "make-model", "--like", like, "--seed", "0", "--out", out],
                   check=True, capture_output=True)


def save_pixels(path, images, size):
    """Seeded N(0, 1) pixels (images, 3, size, size), saved to path for bench_embed."""
    pixels = np.random.default_rng(0).standard_normal((images, 3, size, size)).astype(np.float32)
    np.save(path, pixels)
    return pixels


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_bench_embed(build, model, pixels, batch, repeats, env, dump=None, precision="fp32", may_fail=False):
    """One bench_embed run: (its key=value figures, the run's CPU seconds as the kernel counts them).
    precision "bf16" needs a CPU with AVX512_BF16/AMX; with may_fail its refusal comes back as
    ({"error": message}, 0) instead of ending the benchmark."""
    e = dict(env, VF_BENCH_OUT=str(dump)) if dump else env
    cpu0 = children_cpu()
    p = subprocess.run([build / "bench" / "bench_embed", model, pixels, str(batch), str(repeats), precision],
                       capture_output=True, text=True, env=e)
    if p.returncode == 3 and may_fail:
        return {"error": p.stderr.strip()}, 0.0
    if p.returncode != 0:
        sys.exit(f"bench_embed failed:\n{p.stderr}")
    return dict(re.findall(r"(\w+)=(\S+)", p.stdout)), children_cpu() - cpu0


def torch_like_ours(env, core, threads):
    """PyTorch with the thread count and OpenBLAS kernels bench_embed used."""
    os.environ.update(env)
    os.environ["OPENBLAS_CORETYPE"] = core
    import torch
    torch.set_num_threads(threads)
    return torch
