"""Federated step benchmark: one CoOp training step's wall time when the
aggregator, the knowledge party and three image parties are separate
processes talking gRPC over mutual TLS on loopback, against the same step in
one process (`vflclip train`), same model, data and settings; prints the
ratio and the bytes each step puts on the wire.

Model: `vflclip make-model --like vit-b-32` (random weights; its text tower
has ViT-B/16's text shapes: width 512, 12 layers), 7 classes with the
DermaMNIST names, 16 context vectors, batch 32, Adam.  Step time is measured
the same way on both sides, from metrics.jsonl: (seconds at the last epoch -
seconds at the first epoch) / steps in between, so it is the steady-state
step including the per-epoch evaluation both sides do, and excluding start-up
and image encoding.  Bytes per step: the protobuf messages of a step (the
TextBackward with dL/dT out, the TextFeatures back) plus gRPC's 5-byte
framing, as the aggregator counts them; HTTP/2 and TLS add a few dozen bytes
per message on top."""
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


def step_seconds(run_dir):
    ep = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = sum(e["steps"] for e in ep[1:])
    return (ep[-1]["seconds"] - ep[0]["seconds"]) / steps, steps


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--like", default="vit-b-32")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train", type=int, default=64, help="training images over the three parties")
    args = ap.parse_args()
    build = pathlib.Path(args.build)
    vflclip = build / "vflclip"
    with tempfile.TemporaryDirectory(prefix="bench-fed-") as tmp:
        root = pathlib.Path(tmp)
        model = root / "model"
        sh(vflclip, "make-model", "--like", args.like, "--seed", "1", "--out", model)
        rng = np.random.default_rng(0)
        full, parts = {}, [{} for _ in HOSPITALS]
        for split, n in [("train", args.train), ("val", 9), ("test", 9)]:
            x, y = shapes(rng, n)
            y = rng.integers(0, 7, (n, 1)).astype(np.uint8)   # the 7 DermaMNIST labels
            full[f"{split}_images"], full[f"{split}_labels"] = x, y
            for p, idx in zip(parts, np.array_split(np.arange(n), 3)):
                p[f"{split}_images"], p[f"{split}_labels"] = x[idx], y[idx]
        np.savez(root / "all.npz", **full)
        for h, p in zip(HOSPITALS, parts):
            np.savez(root / f"{h}.npz", **p)
        flags = ["--epochs", str(args.epochs), "--batch-size", "32", "--n-ctx", "16", "--seed", "1"]

        t0 = time.time()
        sh(vflclip, "train", "--model", model, "--data", root / "all.npz", "--out", root / "single", "--no-cache",
           "--quiet", *flags)
        single, steps = step_seconds(root / "single")
        print(f"single process: {single * 1e3:.1f} ms/step over {steps} steps (whole command {time.time() - t0:.1f} s)")

        fed = Fed(vflclip, root, model)
        # Daemon.start reads the binary from conftest.BUILD; point it at --build.
        import conftest
        conftest.BUILD = build
        import test_federation_support as tfs
        tfs.BUILD = build
        try:
            for d in fed.daemons:
                d.start()
            admin = fed.fed / "admin-ops" / "admin.ini"
            for _ in range(600):
                p = subprocess.run([str(vflclip), "status", "--json", "--admin", str(admin)], capture_output=True, text=True)
                if p.returncode == 0 and json.loads(p.stdout)["parties_connected"] == 4:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit("the parties did not connect:\n" + "\n".join(d.text()[-1500:] for d in fed.daemons))
            t0 = time.time()
            p = sh(vflclip, "run", "start", *flags, "--run-id", "bench", "--watch", "--admin", admin)
            wall = time.time() - t0
            sh(vflclip, "run", "results", "--run-id", "bench", "--out", root / "fed-results", "--admin", admin)
        finally:
            for d in fed.daemons:
                d.stop()
        federated, fsteps = step_seconds(root / "fed-results")
        m = re.search(r"steps=(\d+) bytes_out=(\d+) bytes_in=(\d+) bytes_per_step=(\d+)", fed.daemons[0].text())
        print(f"federated:      {federated * 1e3:.1f} ms/step over {fsteps} steps (run incl. encoding {wall:.1f} s)")
        print(f"ratio federated/single: {federated / single:.3f}x (goal <= 1.15x)")
        if m:
            n, out, inn, per = map(int, m.groups())
            print(f"wire per step: {per} bytes = dL/dT out {out / n:.0f} + text features back {inn / n:.0f} "
                  f"(protobuf + gRPC framing, mean over {n} steps)")
        print(json.dumps({"bench": "federated_step", "model": args.like, "single_ms": round(single * 1e3, 2),
                          "federated_ms": round(federated * 1e3, 2), "ratio": round(federated / single, 4),
                          "bytes_per_step": int(m.group(4)) if m else None, "steps": fsteps}))


if __name__ == "__main__":
    main()
