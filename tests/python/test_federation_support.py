"""Shared pieces of the federation tests (test_federation*.py, test_deploy.py):
a federation on loopback made the way an operator makes one — `vflclip
provision` kits, the starter INIs filled in, a tiny random-weight model from
`vflclip make-model` (rescaled to transformers' init scales, see
test_train.py), a synthetic four-class data set split over three hospitals
(plus the same data in one npz for the single-process reference) — and
handles on the three daemons.  No tests in this module."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import time

import numpy as np

from conftest import BUILD, run
from test_train import CLASSES, shapes

ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
HOSPITALS = ["hosp-a", "hosp-b", "hosp-c"]
SIZES = [("train", 96), ("val", 30), ("test", 45)]
# One training configuration, as `vflclip run start` flags and as `vflclip train` options.
RUN_FLAGS = ["--epochs", "3", "--batch-size", "16", "--lr", "0.01", "--n-ctx", "4", "--seed", "5",
             "--template", "a photo of {ctx} {class}."]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data(root, seed=0, sizes=SIZES):
    """Three hospital npz files and all.npz = their concatenation in name order."""
    rng = np.random.default_rng(seed)
    full, parts = {}, [{} for _ in HOSPITALS]
    for split, n in sizes:
        x, y = shapes(rng, n)
        full[f"{split}_images"], full[f"{split}_labels"] = x, y
        for p, idx in zip(parts, np.array_split(np.arange(n), len(HOSPITALS))):
            p[f"{split}_images"], p[f"{split}_labels"] = x[idx], y[idx]
    np.savez_compressed(root / "all.npz", **full)
    for name, p in zip(HOSPITALS, parts):
        np.savez_compressed(root / f"{name}.npz", **p)
    return full, parts


def set_key(ini, section, key, value):
    """Sets [section] key = value in a starter INI (adds the section if needed)."""
    lines = ini.read_text().splitlines()
    out, cur, done = [], None, False
    for line in lines:
        s = line.strip()
        if s.startswith("["):
            if cur == section and not done:
                out.append(f"{key} = {value}")
                done = True
            cur = s[1:-1]
        elif cur == section and s.split("=")[0].strip() == key and not s.startswith(";"):
            out.append(f"{key} = {value}")
            done = True
            continue
        out.append(line)
    if not done:
        if cur != section:
            out.append(f"[{section}]")
        out.append(f"{key} = {value}")
    ini.write_text("\n".join(out) + "\n")


class Daemon:
    def __init__(self, fed, role, name, ini):
        self.fed, self.role, self.name, self.ini = fed, role, name, ini
        self.log = fed.root / f"{role}-{name}.log"
        self.proc = None

    def start(self):
        exe = BUILD / f"vflclip-{self.role}"
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen([str(exe), "--config", str(self.ini)], stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=self.fed.env)
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.logf.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self.logf.close()
        self.proc = None

    def text(self):
        return self.log.read_text() if self.log.exists() else ""


class Federation:
    """Provisioned kits, model, data and daemon handles under root."""

    def __init__(self, vflclip, root, extra_image_parties=(), sizes=SIZES):
        self.vflclip, self.root = vflclip, pathlib.Path(root)
        self.env = dict(ENV)
        self.port = free_port()
        self.fed = self.root / "fed"
        run([vflclip, "provision", "--out", self.fed, "--aggregator", "localhost,127.0.0.1", "--port", self.port,
             "--image-party", *HOSPITALS, *extra_image_parties, "--knowledge-party", "derm", "--admin", "ops"])
        self.model = self.root / "model"
        run([vflclip, "make-model", "--like", "tiny", "--seed", "3", "--out", self.model])
        self.full, self.parts = make_data(self.root, sizes=sizes)
        agg_ini = self.fed / "aggregator-localhost" / "aggregator.ini"
        set_key(agg_ini, "server", "host", "127.0.0.1")
        self.aggregator = Daemon(self, "aggregator", "localhost", agg_ini)
        kp_ini = self.fed / "knowledge-party-derm" / "knowledge-party.ini"
        set_key(kp_ini, "model", "dir", self.model)
        set_key(kp_ini, "prompt", "classes", CLASSES)
        set_key(kp_ini, "aggregator", "backoff_max_ms", 1000)
        self.kp = Daemon(self, "knowledge-party", "derm", kp_ini)
        self.images = {}
        for name in HOSPITALS:
            self.images[name] = self.image_party(name, self.root / f"{name}.npz", self.model)
        self.admin = self.fed / "admin-ops" / "admin.ini"

    def image_party(self, name, data, model):
        ini = self.fed / f"image-party-{name}" / "image-party.ini"
        set_key(ini, "model", "dir", model)
        set_key(ini, "data", "path", data)
        set_key(ini, "aggregator", "backoff_max_ms", 1000)
        return Daemon(self, "image-party", name, ini)

    def daemons(self):
        return [self.aggregator, self.kp, *self.images.values()]

    def start(self):
        try:
            self.aggregator.start()
            for d in [self.kp, *self.images.values()]:
                d.start()
            self.wait_parties(1 + len(self.images))
        except BaseException:
            self.stop()   # a fixture whose set-up fails gets no teardown
            raise
        return self

    def stop(self):
        for d in self.daemons():
            d.stop()

    def cli(self, *args, check=True, timeout=120):
        return run([self.vflclip, *args, "--admin", self.admin], check=check, env=self.env, timeout=timeout)

    def status(self):
        return json.loads(self.cli("status", "--json").stdout)

    def wait_parties(self, n, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            p = self.cli("status", "--json", check=False)
            if p.returncode == 0 and json.loads(p.stdout)["parties_connected"] >= n:
                return
            time.sleep(0.2)
        logs = "\n".join(f"--- {d.log.name}\n{d.text()[-2000:]}" for d in self.daemons())
        raise AssertionError(f"{n} parties did not connect in {timeout} s\n{logs}")

    def wait_state(self, pred, timeout=120, what="state"):
        t0 = time.time()
        while time.time() - t0 < timeout:
            p = self.cli("status", "--json", check=False)
            if p.returncode == 0:
                s = json.loads(p.stdout)
                if pred(s):
                    return s
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.aggregator.text()[-3000:]}")

    def results(self, run_id, out):
        self.cli("run", "results", "--run-id", run_id, "--out", out)
        return pathlib.Path(out)

    def train_single(self, out, *flags):
        """`vflclip train` in one process on all.npz with the same settings."""
        args = list(flags or RUN_FLAGS)
        p = run([self.vflclip, "train", "--model", self.model, "--data", self.root / "all.npz", "--out", out,
                 "--classes", CLASSES, "--no-cache", "--quiet", *args], env=self.env)
        return json.loads(p.stdout)


def running(vflclip, tmp_path_factory, name, **kw):
    """A started Federation in a fresh directory `name` (Federation's keywords), for a module fixture to
    `yield from`; stopped at teardown."""
    f = Federation(vflclip, tmp_path_factory.mktemp(name), **kw)
    f.start()
    yield f
    f.stop()


def single_reference(fed, tmp_path_factory, flags):
    """The one-process `vflclip train` run a federated run with `flags` must equal: its output directory."""
    out = tmp_path_factory.mktemp("reference") / "single"
    fed.train_single(out, *flags)
    return out


def read_jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def compare_runs(a, b):
    """Max abs differences between two run directories: context, test metrics,
    and every per-epoch number of metrics.jsonl except wall time."""
    from safetensors.numpy import load_file
    ca, cb = load_file(a / "context.safetensors")["ctx"], load_file(b / "context.safetensors")["ctx"]
    assert ca.shape == cb.shape
    diffs = {"ctx": float(np.abs(ca - cb).max())}
    ta, tb = json.loads((a / "test_metrics.json").read_text()), json.loads((b / "test_metrics.json").read_text())
    diffs["test"] = max(abs(ta[k] - tb[k]) for k in ("acc", "auc", "balanced_acc", "loss"))
    assert ta["confusion"] == tb["confusion"]
    ea, eb = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert [e["epoch"] for e in ea] == [e["epoch"] for e in eb]
    d = 0.0
    for x, y in zip(ea, eb):
        assert x["best_epoch"] == y["best_epoch"] and x["steps"] == y["steps"]
        d = max(d, abs(x["train_loss"] - y["train_loss"]), abs(x["lr"] - y["lr"]))
        for split in ("train", "val"):
            for k in ("acc", "auc", "loss"):
                d = max(d, abs(x[split][k] - y[split][k]))
    diffs["epochs"] = d
    return diffs
