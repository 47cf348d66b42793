"""Federated step benchmark: one CoOp training step's wall time when the
aggregator, the knowledge party and three image parties are separate
processes talking gRPC over mutual TLS on loopback, against the same step in
one process; prints the ratio and the bytes each step puts on the wire.

The step: text forward of the 7 DermaMNIST class prompts (16 context
vectors, template "a dermatoscopic image of {ctx} {class}."), the eq. 1 loss
and dL/dT on a batch of 32 image embeddings, the text backward to the
context and an Adam step, on the text tower of `vflclip make-model --like
vit-b-32` (random weights; the same text shapes as ViT-B/16: width 512, 12
layers).
- In one process: build/bench/bench_coop_step on that model (the library
  calls of `vflclip train`'s step, timed per step, model load excluded).
- Federated: the aggregator times each step from drawing the batch to having
  the updated context's text features back (loss + dL/dT here, TextBackward
  out, backward + Adam + forward at the knowledge party, TextFeatures in) and
  logs the minimum and mean at the end of the run.
The machine is shared, so the two run in interleaved rounds and the figure of
each side is its fastest step.  Bytes per step: the protobuf messages of a
step plus gRPC's 5-byte framing, as the aggregator counts them; HTTP/2 and
TLS framing add a few dozen bytes per message on top."""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from test_federation_support import Daemon, free_port, set_key  # noqa: E402
from test_train import shapes  # noqa: E402

HOSPITALS = ["hosp-a", "hosp-b", "hosp-c"]


def sh(*cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{p.stderr[-3000:]}")
    return p


def hospital_data(root, sizes):
    """root/<hospital>.npz for the three hospitals: the shapes images with the
    7 DermaMNIST labels drawn at random, each split cut in three."""
    rng = np.random.default_rng(0)
    parts = [{} for _ in HOSPITALS]
    for split, n in sizes:
        x, _ = shapes(rng, n)
        y = rng.integers(0, 7, (n, 1)).astype(np.uint8)
        for p, idx in zip(parts, np.array_split(np.arange(n), 3)):
            p[f"{split}_images"], p[f"{split}_labels"] = x[idx], y[idx]
    for h, p in zip(HOSPITALS, parts):
        np.savez(root / f"{h}.npz", **p)


def run_flags(epochs):
    """The benchmarks' run: 16 context vectors, batch 32, DermaMNIST's template."""
    return ["--epochs", str(epochs), "--batch-size", "32", "--n-ctx", "16", "--seed", "1",
            "--template", "a dermatoscopic image of {ctx} {class}."]


def coop_step_ms(bench, model, steps):
    p = sh(bench, model, steps, 32, 16)
    m = re.search(r"coop_step_ms min=([0-9.]+) median=([0-9.]+)", p.stdout + p.stderr)
    if not m:
        raise SystemExit(f"bench_coop_step printed no timing:\n{p.stdout}{p.stderr}")
    return float(m.group(1)), float(m.group(2))


class Fed:
    """Just enough of a federation for the benchmark (see test_federation_support.Federation)."""

    def __init__(self, vflclip, root, model):
        self.root, self.env = root, None
        self.fed = root / "fed"
        port = free_port()
        sh(vflclip, "provision", "--out", self.fed, "--aggregator", "localhost,127.0.0.1", "--port", port,
           "--image-party", *HOSPITALS, "--knowledge-party", "derm", "--admin", "ops")
        agg = self.fed / "aggregator-localhost" / "aggregator.ini"
        set_key(agg, "server", "host", "127.0.0.1")
        kp = self.fed / "knowledge-party-derm" / "knowledge-party.ini"
        set_key(kp, "model", "dir", model)
        self.daemons = [Daemon(self, "aggregator", "localhost", agg), Daemon(self, "knowledge-party", "derm", kp)]
        for h in HOSPITALS:
            ini = self.fed / f"image-party-{h}" / "image-party.ini"
            set_key(ini, "model", "dir", model)
            set_key(ini, "data", "path", root / f"{h}.npz")
            self.daemons.append(Daemon(self, "image-party", h, ini))

    def wait_connected(self, vflclip, admin):
        """Until the knowledge party and the three image parties are connected (5 minutes at most)."""
        for _ in range(600):
            p = subprocess.run([str(vflclip), "status", "--json", "--admin", str(admin)], capture_output=True, text=True)
            if p.returncode == 0 and json.loads(p.stdout)["parties_connected"] == 1 + len(HOSPITALS):
                return
            time.sleep(0.5)
        raise SystemExit("the parties did not connect:\n" + "\n".join(d.text()[-1500:] for d in self.daemons))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--like", default="vit-b-32")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps of the one-process side per round")
    ap.add_argument("--train", type=int, default=64, help="training images over the three parties")
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenMP/OpenBLAS threads of every process (1: the comparable figure on a shared 2-core machine)")
    args = ap.parse_args()
    build = pathlib.Path(args.build)
    import os
    os.environ.update(OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    vflclip = build / "vflclip"
    with tempfile.TemporaryDirectory(prefix="bench-fed-") as tmp:
        root = pathlib.Path(tmp)
        model = root / "model"
        sh(vflclip, "make-model", "--like", args.like, "--seed", "1", "--out", model)
        hospital_data(root, [("train", args.train), ("val", 9), ("test", 9)])
        flags = run_flags(args.epochs)
        fed = Fed(vflclip, root, model)
        import conftest
        import test_federation_support as tfs
        conftest.BUILD = tfs.BUILD = build   # Daemon.start runs the binaries of --build
        admin = fed.fed / "admin-ops" / "admin.ini"
        single, federated, wire = [], [], None
        try:
            for d in fed.daemons:
                d.start()
            fed.wait_connected(vflclip, admin)
            for r in range(args.rounds):
                single.append(coop_step_ms(build / "bench" / "bench_coop_step", model, args.steps)[0])
                sh(vflclip, "run", "start", *flags, "--run-id", f"bench-{r}", "--watch", "--admin", admin)
                times = re.findall(rf"event=step_time run=bench-{r} steps=(\d+) min_ms=([0-9.]+) mean_ms=([0-9.]+)",
                                   fed.daemons[0].text())
                federated.append(float(times[-1][1]))
                print(f"round {r + 1}: one process {single[-1]:.1f} ms/step, federated {federated[-1]:.1f} ms/step "
                      f"(fastest of {args.steps} and {times[-1][0]} steps)", flush=True)
            wire = re.findall(r"steps=(\d+) bytes_out=(\d+) bytes_in=(\d+) bytes_per_step=(\d+)", fed.daemons[0].text())
        finally:
            for d in fed.daemons:
                d.stop()
        best_s, best_f = min(single), min(federated)
        print(f"one process: {best_s:.1f} ms/step; federated over loopback: {best_f:.1f} ms/step; "
              f"ratio {best_f / best_s:.3f}x (goal <= 1.15x)")
        per = None
        if wire:
            n, out_b, in_b, per = map(int, wire[-1])
            print(f"wire per step: {per} bytes = dL/dT out {out_b / n:.0f} + text features back {in_b / n:.0f} "
                  f"(protobuf + gRPC framing, mean over {n} steps)")
        print(json.dumps({"bench": "federated_step", "model": args.like, "threads": args.threads,
                          "single_ms": round(best_s, 2), "federated_ms": round(best_f, 2),
                          "ratio": round(best_f / best_s, 4), "bytes_per_step": per}))


if __name__ == "__main__":
    main()
