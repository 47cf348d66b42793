"""PyTorch side of the RN50x4 benchmark (tests/bench/run.sh): image-embedding
throughput of open_clip's own model for an OpenCLIP checkpoint directory, on
the same preprocessed pixels and thread count as build/bench/bench_embed.

usage: open_clip_torch.py MODEL_DIR PIXELS.npy BATCH REPEATS THREADS [C_EMBEDDINGS.npy]
Prints images_per_s=<x>; with C_EMBEDDINGS (bench_embed's $VF_BENCH_OUT) it
also prints the max abs difference, so a fast but wrong C result is visible."""
import json
import sys
import time

import numpy as np
import torch
from open_clip.model import CLIP
from safetensors.torch import load_file


def main():
    model_dir, pixels_path, batch, repeats, threads = sys.argv[1:6]
    batch, repeats, threads = int(batch), int(repeats), int(threads)
    torch.set_num_threads(threads)
    cfg = json.load(open(f"{model_dir}/open_clip_config.json"))["model_cfg"]
    model = CLIP(**cfg).eval()
    model.load_state_dict(load_file(f"{model_dir}/open_clip_model.safetensors"), strict=True)
    pixels = torch.from_numpy(np.load(pixels_path))
    n = pixels.shape[0]
    out = torch.empty(n, cfg["embed_dim"])
    with torch.no_grad():
        model.encode_image(pixels[:batch])  # warm-up, as bench_embed does
        t0 = time.perf_counter()
        for _ in range(repeats):
            for b0 in range(0, n, batch):
                out[b0:b0 + batch] = model.encode_image(pixels[b0:b0 + batch])
        dt = time.perf_counter() - t0
    print(f"images_per_s={n * repeats / dt:.3f} images={n} repeats={repeats} seconds={dt:.3f} threads={threads}")
    if len(sys.argv) > 6:
        c_out = np.load(sys.argv[6])
        ref = out.numpy()
        print(f"max_abs_diff={np.abs(c_out - ref).max():.3g} max_abs_ref={np.abs(ref).max():.3g}")


if __name__ == "__main__":
    main()
