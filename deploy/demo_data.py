"""The demo's data and model preparation, shared by deploy/demo.sh and the
Compose provisioning step (deploy/docker/provision.sh):

  demo_data.py --out DIR [--npz DATA.npz] [--rescale-model MODEL_DIR]

writes DIR/hospital-{a,b,c}.npz: the synthetic shapes (deploy/demo_shapes.py:
train 240, val 60, test 120, seed 0) or the given MedMNIST-style npz, each
split cut in three in order.  --rescale-model rescales the encoder matrices of
a random-weight model written by `vflclip make-model` (std 0.02 everywhere,
which leaves a 2-layer tower nearly blind to its input) to transformers' own
initialisation scales, so that the random model can learn the shapes.  Never
use it on a real checkpoint."""
import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_shapes import shapes  # noqa: E402

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]


def write_hospitals(out, data_npz=None):
    rng = np.random.default_rng(0)
    if data_npz:
        src = np.load(data_npz)
        full = {k: src[k] for k in src.files}
    else:
        full = {}
        for split, n in [("train", 240), ("val", 60), ("test", 120)]:
            full[f"{split}_images"], full[f"{split}_labels"] = shapes(rng, n)
    for h, part in enumerate(HOSPITALS):
        data = {}
        for split in ("train", "val", "test"):
            idx = np.array_split(np.arange(len(full[f"{split}_labels"])), 3)[h]
            data[f"{split}_images"], data[f"{split}_labels"] = full[f"{split}_images"][idx], full[f"{split}_labels"][idx]
        np.savez_compressed(os.path.join(out, f"{part}.npz"), **data)
        print(f"{part}: " + ", ".join(f"{s} {len(data[s + '_labels'])}" for s in ("train", "val", "test")))


def rescale_random_model(model):
    path = os.path.join(model, "model.safetensors")
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    cfg = json.load(open(os.path.join(model, "config.json")))
    data = bytearray(raw[8 + n:])
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        c = cfg["vision_config" if name.startswith("vision_model") else "text_config"]
        w, L = c["hidden_size"], c["num_hidden_layers"]
        if any(name.endswith(f"{p}_proj.weight") for p in "qkv") or name.endswith("fc2.weight"):
            std = w ** -0.5 * (2 * L) ** -0.5
        elif name.endswith("out_proj.weight"):
            std = w ** -0.5
        elif name.endswith("fc1.weight"):
            std = (2 * w) ** -0.5
        else:
            continue
        a, b = t["data_offsets"]
        x = np.frombuffer(bytes(data[a:b]), np.float32)
        data[a:b] = (x * (std / x.std())).astype(np.float32).tobytes()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(raw[:8 + n] + bytes(data))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for hospital-{a,b,c}.npz")
    ap.add_argument("--npz", help="a MedMNIST-style npz to split instead of the synthetic shapes")
    ap.add_argument("--rescale-model", help="a random-weight `vflclip make-model` directory to rescale")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    write_hospitals(a.out, a.npz)
    if a.rescale_model:
        rescale_random_model(a.rescale_model)


if __name__ == "__main__":
    main()
