"""`vflclip train` / `vflclip evaluate` end to end on a small synthetic task
whose classes are visually distinct (coloured shapes drawn here with numpy,
saved by numpy.savez_compressed as a MedMNIST-style npz), with a random-weight
tiny model from `vflclip make-model --like tiny`.

make-model draws the encoder matrices at transformers'
CLIPPreTrainedModel._init_weights scales, so the tiny tower's pooled outputs
depend on its input and a context can be learned on them.

The runs use one thread: the tiny shapes gain nothing from threads and the
test machine's 2 cores are shared."""
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from conftest import ROOT, run

sys.path.insert(0, str(ROOT / "deploy"))
from demo_shapes import shapes  # noqa: E402  (the demo's data set; test_federation_support imports it from here)

CLASSES = "red disc,green square,blue stripe,yellow cross"
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def tiny_task(vflclip, root, sizes=(("train", 240), ("val", 60), ("test", 120)), seed=0):
    """The tiny random model (`make-model --like tiny --seed 3`) and a shapes
    data set of these split sizes in root/shapes.npz."""
    model = root / "tiny"
    run([vflclip, "make-model", "--like", "tiny", "--seed", "3", "--out", model])
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in sizes:
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = shapes(rng, n)
    np.savez_compressed(root / "shapes.npz", **arrays)
    return {"root": root, "model": model, "data": root / "shapes.npz", "cache": root / "cache", "arrays": arrays}


@pytest.fixture(scope="module")
def work(vflclip, tmp_path_factory):
    return tiny_task(vflclip, tmp_path_factory.mktemp("train"))


def train(vflclip, work, out, *extra, check=True):
    p = run([vflclip, "train", "--model", work["model"], "--data", work["data"], "--out", out, "--classes", CLASSES,
             "--cache-dir", work["cache"], "--device", "cpu", *extra], check=check, env=ENV)
    return p, (json.loads(p.stdout) if p.returncode == 0 else None)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(vflclip, work):
    out = work["root"] / "run1"
    p, summary = train(vflclip, work, out, "--epochs", "8", "--batch-size", "16", "--lr", "0.005", "--n-ctx", "4",
                       "--template", "a photo of {ctx} {class}.")
    return out, p, summary


def test_training_lowers_the_loss_and_beats_chance(first_run):
    out, p, summary = first_run
    epochs = read_jsonl(out / "metrics.jsonl")
    assert [e["epoch"] for e in epochs] == list(range(1, 9))
    losses = [e["train_loss"] for e in epochs]
    test = json.loads((out / "test_metrics.json").read_text())
    print(f"train loss per epoch {np.round(losses, 4).tolist()}; test ACC {test['acc']:.3f} AUC {test['auc']:.3f} "
          f"(chance 0.25 / 0.5)")
    assert losses[-1] < losses[0] - 0.1
    assert epochs[-1]["train"]["loss"] < epochs[0]["train"]["loss"]
    assert test["acc"] > 0.4 and test["auc"] > 0.8
    assert test["n"] == 120 and sum(map(sum, test["confusion"])) == 120
    assert test["class_names"] == CLASSES.split(",")
    best = max(epochs, key=lambda e: e["val"]["auc"])
    assert summary["best_epoch"] == best["epoch"] == test["context_epoch"] == int(epochs[-1]["best_epoch"])


def test_run_directory_files(work, first_run):
    out, p, summary = first_run
    with safe_open(out / "context.safetensors", "np") as f:
        meta = f.metadata()
        ctx = f.get_tensor("ctx")
    assert ctx.shape == (4, 64) and np.isfinite(ctx).all()
    assert meta["template"] == "a photo of {ctx} {class}."
    assert json.loads(meta["class_names"]) == CLASSES.split(",")
    assert (meta["n_ctx"], meta["csc"], meta["class_pos"]) == ("4", "0", "end")
    assert len(meta["model_fingerprint"]) == 64 and int(meta["model_fingerprint"], 16) >= 0
    for name in ["auc_acc.png", "loss.png", "confusion_test.png", "confusion_val.png"]:
        img = np.asarray(Image.open(out / name).convert("L"), dtype=np.float32)
        assert img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 5, name   # drawn, not blank
    assert not [f for f in os.listdir(out) if ".tmp." in f]
    # Progress on a non-terminal: plain lines, no carriage returns.
    assert "epoch 1/8" in p.stderr and "\r" not in p.stderr and "ETA" not in p.stderr


def test_second_run_uses_the_embedding_cache(vflclip, work, first_run):
    _, p1, s1 = first_run
    assert s1["images_encoded"] == 420 and s1["cache_hits"] == 0
    p, s = train(vflclip, work, work["root"] / "run2", "--epochs", "1", "--n-ctx", "4")
    assert s["images_encoded"] == 0 and s["cache_hits"] == 3
    assert p.stderr.count("event=embed_cache_hit") == 3 and "event=embed_encoded" not in p.stderr
    # A changed image changes its split's key: only that split is encoded again.
    arrays = dict(work["arrays"])
    arrays["val_images"] = arrays["val_images"].copy()
    arrays["val_images"][7, 3, 3, 0] ^= 1
    np.savez(work["root"] / "changed.npz", **arrays)
    p = run([vflclip, "train", "--model", work["model"], "--data", work["root"] / "changed.npz", "--out",
             work["root"] / "run3", "--classes", CLASSES, "--cache-dir", work["cache"], "--epochs", "1"], env=ENV)
    s = json.loads(p.stdout)
    assert s["images_encoded"] == 60 and s["cache_hits"] == 2
    # Other preprocessing (same weights): every split is encoded again.
    model2 = work["root"] / "tiny_other_mean"
    shutil.copytree(work["model"], model2)
    pp = json.loads((model2 / "preprocessor_config.json").read_text())
    pp["image_mean"][0] += 0.01
    (model2 / "preprocessor_config.json").write_text(json.dumps(pp))
    p = run([vflclip, "train", "--model", model2, "--data", work["data"], "--out", work["root"] / "run4",
             "--classes", CLASSES, "--cache-dir", work["cache"], "--epochs", "1"], env=ENV)
    s = json.loads(p.stdout)
    assert s["images_encoded"] == 420 and s["cache_hits"] == 0
    # A damaged cache file is recomputed with a warning, not an error.
    victim = max(work["cache"].glob("*.safetensors"), key=os.path.getmtime)
    victim.write_bytes(victim.read_bytes()[:100])
    p = run([vflclip, "train", "--model", model2, "--data", work["data"], "--out", work["root"] / "run5",
             "--classes", CLASSES, "--cache-dir", work["cache"], "--epochs", "1"], env=ENV)
    s = json.loads(p.stdout)
    assert s["cache_hits"] == 2 and s["images_encoded"] in (60, 120, 240) and "event=embed_cache_invalid" in p.stderr


def test_evaluate_reproduces_test_metrics(vflclip, work, first_run):
    out, _, _ = first_run
    p = run([vflclip, "evaluate", "--model", work["model"], "--context", out / "context.safetensors", "--data",
             work["data"], "--cache-dir", work["cache"], "--out", work["root"] / "eval.json"], env=ENV)
    got, saved = json.loads(p.stdout), json.loads((out / "test_metrics.json").read_text())
    diff = max(abs(got[k] - saved[k]) for k in ("acc", "auc", "balanced_acc", "loss"))
    print(f"evaluate vs test_metrics.json: max abs diff {diff:.2e}")
    assert diff < 1e-9
    assert got["confusion"] == saved["confusion"] and got["class_names"] == saved["class_names"]
    # Another model is refused by fingerprint.
    other = work["root"] / "other"
    run([vflclip, "make-model", "--like", "tiny", "--seed", "4", "--out", other])
    p = run([vflclip, "evaluate", "--model", other, "--context", out / "context.safetensors", "--data", work["data"],
             "--no-cache"], check=False, env=ENV)
    assert p.returncode != 0 and "trained with model" in p.stderr


def test_class_specific_contexts_learn_the_task(vflclip, work):
    out = work["root"] / "csc"
    _, s = train(vflclip, work, out, "--epochs", "5", "--batch-size", "16", "--lr", "0.01", "--n-ctx", "4", "--csc",
                 "--class-pos", "middle")
    test = json.loads((out / "test_metrics.json").read_text())
    with safe_open(out / "context.safetensors", "np") as f:
        assert f.get_tensor("ctx").shape == (4, 4, 64) and f.metadata()["class_pos"] == "middle"
    print(f"CSC/Adam: loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}, test ACC {test['acc']:.3f} AUC {test['auc']:.3f}")
    assert s["last_loss"] < s["first_loss"] - 0.3 and test["acc"] > 0.6 and test["auc"] > 0.85


def test_sgd_with_warmup_and_cosine_schedule(vflclip, work):
    """CoOp's schedule (Dassl, WARMUP_RECOUNT): constant warm-up lr for the warm-up epochs, then the cosine
    annealing of the base lr over max_epochs, starting at the base lr after warm-up, stepped per epoch."""
    out = work["root"] / "sgd"
    E, base, warm = 5, 0.02, 0.001
    _, s = train(vflclip, work, out, "--epochs", str(E), "--batch-size", "16", "--n-ctx", "4", "--csc",
                 "--class-pos", "front", "--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "0.0005",
                 "--warmup-epochs", "1", "--warmup-lr", str(warm), "--lr", str(base))
    lrs = [e["lr"] for e in read_jsonl(out / "metrics.jsonl")]
    expected = [warm] + [base * (1 + np.cos(np.pi * (e - 1) / E)) / 2 for e in range(1, E)]
    print(f"SGD lr per epoch {lrs}; loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}")
    assert np.allclose(lrs, expected, rtol=1e-6)
    assert s["last_loss"] < s["first_loss"] - 0.3


def test_max_steps_init_ctx_and_bad_options(vflclip, work, first_run):
    out = work["root"] / "steps"
    _, s = train(vflclip, work, out, "--max-steps", "3", "--epochs", "4", "--init-ctx",
                 first_run[0] / "context.safetensors")
    assert s["steps"] == 3 and s["epochs"] == 1 and len(read_jsonl(out / "metrics.jsonl")) == 1
    np.save(work["root"] / "bad_ctx.npy", np.zeros((4, 63), np.float32))
    p, _ = train(vflclip, work, work["root"] / "bad", "--init-ctx", work["root"] / "bad_ctx.npy", check=False)
    assert p.returncode != 0 and "bad_ctx.npy" in p.stderr and "63" in p.stderr, p.stderr
    p, _ = train(vflclip, work, work["root"] / "bad", "--class-pos", "left", check=False)
    assert p.returncode == 2 and "left" in p.stderr
    p, _ = train(vflclip, work, work["root"] / "bad", "--epochs", "0", check=False)
    assert p.returncode == 2 and "--epochs" in p.stderr
    p, _ = train(vflclip, work, work["root"] / "bad", "--device", "tpu", check=False)
    assert p.returncode == 2 and "'tpu' is not a device" in p.stderr


def test_progress_on_a_terminal_is_one_updating_line(vflclip, work):
    """stderr on a pty: one line redrawn with carriage returns."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(vflclip), "train", "--model", work["model"], "--data", work["data"], "--out",
                          work["root"] / "tty", "--classes", CLASSES, "--cache-dir", work["cache"], "--epochs", "2"],
                         stdout=subprocess.DEVNULL, stderr=slave, env=ENV)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait() == 0
    text = b"".join(chunks).decode()
    assert "\r\x1b[Kepoch 1/2  step" in text and "ETA" in text


def test_kill_9_leaves_no_torn_files(vflclip, work):
    """Killed at arbitrary moments while it rewrites metrics.jsonl and the plots every epoch, a run directory
    holds only complete files (each written to a temp name, fsynced and renamed)."""
    out = work["root"] / "killed"
    for delay in (0.4, 0.7, 1.0, 1.3, 1.6):
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.Popen([str(vflclip), "train", "--model", work["model"], "--data", work["data"], "--out", out,
                              "--classes", CLASSES, "--cache-dir", work["cache"], "--epochs", "100000",
                              "--batch-size", "240", "--quiet"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        names = os.listdir(out) if out.exists() else []
        if "metrics.jsonl" in names:
            lines = read_jsonl(out / "metrics.jsonl")   # every line parses: never torn
            assert [e["epoch"] for e in lines] == list(range(1, len(lines) + 1))
        for png in [n for n in names if n.endswith(".png")]:
            Image.open(out / png).load()
        if "context.safetensors" in names:   # saved whenever val AUC improves
            with safe_open(out / "context.safetensors", "np") as f:
                assert np.isfinite(f.get_tensor("ctx")).all()
        print(f"killed after {delay}s: {sorted(n for n in names if '.tmp.' not in n)}, "
              f"{sum('.tmp.' in n for n in names)} temp file(s) left beside them")


def test_image_folder_with_labels_csv(vflclip, work, shared_data):
    """The real HAM10000 sample (600x450 and 224x224 JPEGs) through the whole pipeline for two steps."""
    out = work["root"] / "ham"
    p = run([vflclip, "train", "--model", work["model"], "--data", shared_data / "ham10000-sample", "--out", out,
             "--cache-dir", work["cache"], "--max-steps", "2", "--batch-size", "32"], env=ENV)
    s = json.loads(p.stdout)
    assert s["steps"] == 2 and s["images_encoded"] == 201 and s["random_weights"] is True
    assert "RANDOM weights" in p.stderr
    test = json.loads((out / "test_metrics.json").read_text())
    assert test["n"] == 39 and len(test["class_names"]) == 7
