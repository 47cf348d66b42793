"""Price of privacy: test AUC and ACC of CoOp on the synthetic shapes task
(four classes: red disc, green square, blue stripe, yellow cross on grey
noise; the tiny random-weight CLIP of `vflclip make-model --like tiny`,
at transformers' init scales) at several levels of
differential privacy, with the epsilon each level spends.

Every row is `vflclip train` in one process, which the federation matches to
1e-5 with the same flags (tests/python/test_privacy.py), so these are the
numbers a federated run with the same settings gives:
- dL/dT DP: per-example clip `--text-grad-clip` and noise multiplier
  `--text-grad-noise` (epsilon at delta 1e-5 from the RDP accountant,
  sampling rate batch / n_train, one release per step);
- embedding DP: `--embed-clip` / `--embed-noise` as an image party's
  [privacy] section (epsilon of one Gaussian release per image).
Metrics: MedMNIST's ACC and macro one-vs-rest AUC of the best-val-AUC
context, mean (and min..max) over three seeds (batch order, context
initialisation and noise).  With Adam the clip bound's scale cancels out
(a smaller bound scales signal and noise alike), so --text-clip 0.1, below
every example's gradient norm, makes each example count the same.  The data and the model are random: the figures say what noise
costs on this task, nothing about dermatology."""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from test_train import CLASSES, ENV, shapes  # noqa: E402

SIZES = [("train", 640), ("val", 128), ("test", 256)]
BASE = ["--epochs", "10", "--batch-size", "32", "--lr", "0.01", "--n-ctx", "4",
        "--template", "a photo of {ctx} {class}.", "--no-cache", "--quiet"]
SEEDS = (5, 6, 7)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--text-clip", type=float, default=0.1)
    ap.add_argument("--embed-clip", type=float, default=5.0)
    a = ap.parse_args()
    vflclip = ROOT / a.build / "vflclip"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model = tmp / "model"
        subprocess.run([vflclip, "make-model", "--like", "tiny", "--seed", "3", "--out", model], check=True,
                       capture_output=True)
        rng = np.random.default_rng(0)
        data = {}
        for split, n in SIZES:
            data[f"{split}_images"], data[f"{split}_labels"] = shapes(rng, n)
        np.savez_compressed(tmp / "shapes.npz", **data)
        rows = [("(no training: the initial context, --lr 0)", ["--lr", "0"]), ("none", [])]
        for sigma in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0):
            rows.append((f"dL/dT: clip {a.text_clip}, noise {sigma}",
                         ["--text-grad-clip", str(a.text_clip), "--text-grad-noise", str(sigma)]))
        rows.append(("dL/dT: accumulate 4 batches (no noise)", ["--text-grad-accumulate", "4"]))
        for sigma in (0.02, 0.05, 0.2, 0.5):
            rows.append((f"embeddings: clip {a.embed_clip}, noise {sigma}",
                         ["--embed-clip", str(a.embed_clip), "--embed-noise", str(sigma), "--embed-seed", "9"]))
        print(f"synthetic shapes, 4 classes, train/val/test {'/'.join(str(n) for _, n in SIZES)}, tiny random-weight CLIP; "
              f"CoOp {' '.join(BASE[:-2])}, seeds {SEEDS}")
        print(f"{'privacy':<42} {'epsilon (delta 1e-5)':>20} {'test AUC mean (min..max)':>26} {'test ACC mean (min..max)':>26}")
        for r, (name, flags) in enumerate(rows):
            auc, acc, eps = [], [], None
            for seed in SEEDS:
                out = tmp / f"run{r}-{seed}"
                p = subprocess.run([vflclip, "train", "--model", model, "--data", tmp / "shapes.npz", "--out", out,
                                    "--classes", CLASSES, *BASE, "--seed", str(seed), *flags],
                                   capture_output=True, text=True, env=ENV)
                if p.returncode:
                    print(p.stderr)
                    return 1
                test = json.loads((out / "test_metrics.json").read_text())
                priv = json.loads((out / "privacy.json").read_text())
                auc.append(test["auc"])
                acc.append(test["acc"])
                eps = priv["embeddings"][0]["epsilon"] if priv["embeddings"] else priv["text_grad"]["epsilon"]
            eps_s = "inf (no noise)" if eps is None else f"{eps:.3f}"
            print(f"{name:<42} {eps_s:>20} {np.mean(auc):>10.4f} ({min(auc):.3f}..{max(auc):.3f}) "
                  f"{np.mean(acc):>10.4f} ({min(acc):.3f}..{max(acc):.3f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
