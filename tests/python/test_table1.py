"""deploy/table1.sh, the seed paper's Table I in one command, end to end
without network (docs/reproduce-table1.md).

The models are random-weight checkpoints written by `vflclip make-model`: the
seven paper backbones' layouts (OpenCLIP ViT-B/32, B/16, L/14, L/14-336 with
their patch and input sizes; ModifiedResNet RN50x4/x16/x64 at 288/384/448 px)
shrunk to one layer (one block per ResNet stage) and width 64 (ResNets: 8),
each with a backbone.txt naming the backbone it stands for, plus the tiny
Hugging Face model with no label (a model that is not one of the seven). The
data is a small synthetic MedMNIST-style npz. Checked: every row is in the
table; its numbers are each run's test_metrics.json, written by the program;
the paper's numbers and the differences; plots; a second invocation skips
every finished backbone and a backbone whose run was cut short is redone; the
federated mode gives the one-process numbers; the real configs are recognised
without a label; a .bin-only checkpoint is refused, and the guide's conversion
snippet turns it into a checkpoint vflclip reads as the original."""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import BUILD, ROOT, SHARED_DATA, run

SCRIPT = ROOT / "deploy" / "table1.sh"
PAPER = {"RN50x4": (0.931, 0.776), "RN50x16": (0.929, 0.776), "RN50x64": (0.884, 0.675),
         "ViT-B/16": (0.923, 0.771), "ViT-B/32": (0.914, 0.755), "ViT-L/14": (0.933, 0.793),
         "ViT-L/14-336": (0.934, 0.780)}
# directory name -> (backbone, image tower of the reduced OpenCLIP config)
REDUCED = {
    "vit-b-32": ("ViT-B/32", {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32}),
    "vit-b-16": ("ViT-B/16", {"image_size": 224, "layers": 1, "width": 64, "patch_size": 16}),
    "vit-l-14": ("ViT-L/14", {"image_size": 224, "layers": 1, "width": 64, "patch_size": 14}),
    "vit-l-14-336": ("ViT-L/14-336", {"image_size": 336, "layers": 1, "width": 64, "patch_size": 14}),
    "rn50x4": ("RN50x4", {"image_size": 288, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None}),
    "rn50x16": ("RN50x16", {"image_size": 384, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None}),
    "rn50x64": ("RN50x64", {"image_size": 448, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None}),
}
TEXT = {"context_length": 77, "vocab_size": 834, "width": 64, "heads": 1, "layers": 1}  # the tiny vocabulary's size
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHON=sys.executable)


def table1(*args, check=True):
    p = subprocess.run(["bash", str(SCRIPT), "--bin", str(BUILD), *map(str, args)], capture_output=True, text=True,
                       env=ENV, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"table1.sh exited {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


@pytest.fixture(scope="module")
def setup(vflclip, tmp_path_factory):
    root = tmp_path_factory.mktemp("table1")
    models = root / "models"
    for name, (backbone, vision) in REDUCED.items():
        cfg = root / f"{name}.json"
        cfg.write_text(json.dumps({"model_cfg": {"embed_dim": 32, "quick_gelu": True, "vision_cfg": vision,
                                                 "text_cfg": TEXT}}))
        run([vflclip, "make-model", "--open-clip-config", cfg, "--seed", "1", "--out", models / name])
        (models / name / "backbone.txt").write_text(backbone + "\n")
    run([vflclip, "make-model", "--like", "tiny", "--seed", "1", "--out", models / "hf-tiny"])
    rng = np.random.default_rng(0)
    data = {}
    for split, n in [("train", 42), ("val", 14), ("test", 21)]:
        data[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        data[f"{split}_labels"] = (np.arange(n) % 7).reshape(n, 1).astype(np.uint8)
    np.savez_compressed(root / "derma.npz", **data)
    return root


@pytest.fixture(scope="module")
def first(setup):
    out = setup / "out"
    p = table1("--models", setup / "models", "--data", setup / "derma.npz", "--out", out, "--epochs", 2,
               "--batch-size", 8)
    return out, p


def read_csv(out):
    with open(out / "table1.csv", newline="") as f:
        return {r["model"]: r for r in csv.DictReader(f)}


def test_every_row_with_the_programs_numbers(first):
    out, p = first
    print(p.stdout[-3000:])
    rows = read_csv(out)
    assert set(rows) == set(REDUCED) | {"hf-tiny"}
    for i in range(1, 9):  # progress per backbone
        assert f"== [{i}/8] " in p.stdout
    md = (out / "table1.md").read_text()
    for model, r in rows.items():
        run_dir = out / "runs" / model
        t = json.loads((run_dir / "test_metrics.json").read_text())
        assert r["status"] == "done"
        # the table's numbers are exactly the program's
        assert float(r["test_auc"]) == t["auc"] and float(r["test_acc"]) == t["acc"]
        for f in ("auc_acc.png", "loss.png", "confusion_test.png", "context.safetensors", "metrics.jsonl"):
            assert (run_dir / f).stat().st_size > 0, f
        assert int(r["images_encoded"]) == 77 and float(r["encode_images_per_s"]) > 0
        assert r["device"].startswith("cpu-fp32") and r["random_weights"] == "True"
        assert float(r["wall_s"]) > 0
        lines = [l for l in md.splitlines() if f"(runs/{model}/auc_acc.png)" in l]
        assert len(lines) == 1
        cells = [c.strip() for c in lines[0].strip("|").split("|")]
        assert cells[1] == f"{t['auc']:.3f}" and cells[2] == f"{t['acc']:.3f}"
        if model == "hf-tiny":
            assert r["backbone"] == "-" and r["paper_auc"] == "" and cells[3] == "-" and cells[5] == "-"
            assert "not one of the seven" in cells[0]
            continue
        backbone = REDUCED[model][0]
        assert r["backbone"] == backbone and r["recognised_by"] == "backbone.txt"
        pa, pc = PAPER[backbone]
        assert (float(r["paper_auc"]), float(r["paper_acc"])) == (pa, pc)
        assert float(r["diff_auc"]) == pytest.approx(t["auc"] - pa, abs=1e-12)
        assert float(r["diff_acc"]) == pytest.approx(t["acc"] - pc, abs=1e-12)
        assert cells[3] == f"{pa:.3f}" and cells[5] == f"{t['auc'] - pa:+.3f}"
    # paper order, then the others
    assert list(rows) == ["rn50x4", "rn50x16", "rn50x64", "vit-b-16", "vit-b-32", "vit-l-14", "vit-l-14-336", "hf-tiny"]
    assert "NOT one of MedMNIST's official DermaMNIST files" in md and "RANDOM weights" in md
    # the paper's settings reached the program
    rec = json.loads((out / "runs" / "vit-b-16" / "row.json").read_text())["settings"]
    assert rec["n_ctx"] == 16 and rec["optimizer"] == "adam" and rec["lr"] == 1e-3 and rec["epochs"] == 2
    ctx = subprocess.run([sys.executable, "-c", "from safetensors import safe_open; import sys; "
                          "f = safe_open(sys.argv[1], 'np'); print(f.get_tensor('ctx').shape)",
                          out / "runs" / "vit-b-16" / "context.safetensors"], capture_output=True, text=True)
    assert ctx.stdout.strip() == "(16, 64)"


def test_second_invocation_skips_and_a_cut_run_is_redone(setup, first):
    out, _ = first
    before = {m: (out / "runs" / m / "test_metrics.json").stat().st_mtime_ns for m in read_csv(out)}
    table_before = read_csv(out)
    p = table1("--models", setup / "models", "--data", setup / "derma.npz", "--out", out, "--epochs", 2,
               "--batch-size", 8)
    assert p.stdout.count("already done") == 8 and "encoding train images" not in p.stdout
    after = {m: (out / "runs" / m / "test_metrics.json").stat().st_mtime_ns for m in read_csv(out)}
    assert after == before
    assert {m: (r["test_auc"], r["test_acc"]) for m, r in read_csv(out).items()} == \
           {m: (r["test_auc"], r["test_acc"]) for m, r in table_before.items()}
    # a run cut short (no row.json yet) is redone, from the embedding cache; the others are skipped
    (out / "runs" / "rn50x16" / "row.json").unlink()
    p = table1("--models", setup / "models", "--data", setup / "derma.npz", "--out", out, "--epochs", 2,
               "--batch-size", 8)
    assert p.stdout.count("already done") == 7
    assert (out / "runs" / "rn50x16" / "test_metrics.json").stat().st_mtime_ns > before["rn50x16"]
    row = json.loads((out / "runs" / "rn50x16" / "row.json").read_text())
    assert row["images_encoded"] == 0 and row["images_per_s"] is None  # all three splits came from the cache
    assert read_csv(out)["rn50x16"]["test_auc"] == table_before["rn50x16"]["test_auc"]
    # other settings in the same --out: refused for that backbone, not silently mixed
    p = table1("--models", setup / "models", "--data", setup / "derma.npz", "--out", out, "--epochs", 3,
               "--batch-size", 8, check=False)
    assert p.returncode == 2 and "was made with other settings" in p.stderr and "encoding" not in p.stdout
    assert {m: r["test_auc"] for m, r in read_csv(out).items()} == {m: r["test_auc"] for m, r in table_before.items()}


def test_federated_gives_the_one_process_numbers(setup, first, tmp_path):
    out, _ = first
    models = tmp_path / "models"
    models.mkdir()
    for m in ("rn50x4", "hf-tiny"):
        os.symlink(setup / "models" / m, models / m)
    fed = tmp_path / "fed"
    p = table1("--models", models, "--data", setup / "derma.npz", "--out", fed, "--epochs", 2, "--batch-size", 8,
               "--federated")
    print(p.stdout[-2000:])
    assert "hospital-a: train 14, val 5, test 7" in p.stdout
    single, fedrows = read_csv(out), read_csv(fed)
    assert set(fedrows) == {"rn50x4", "hf-tiny"}
    for m, r in fedrows.items():
        t = json.loads((fed / "runs" / m / "test_metrics.json").read_text())
        assert float(r["test_auc"]) == t["auc"] and float(r["test_acc"]) == t["acc"]
        assert t["auc"] == pytest.approx(float(single[m]["test_auc"]), abs=1e-5)
        assert t["acc"] == pytest.approx(float(single[m]["test_acc"]), abs=1e-5)
        assert (fed / "runs" / m / "transcript.jsonl").stat().st_size > 0  # it really went through the aggregator
        assert "3 hospitals x 1 threads" in r["device"]
    assert "federated" in (fed / "table1.md").read_text()
    left = subprocess.run(["pgrep", "-f", str(fed)], capture_output=True, text=True).stdout.split()
    assert not left, left


def test_real_configs_are_recognised(vflclip, tmp_path):
    models = tmp_path / "m"
    want = {}
    for like, name in [("vit-b-32", "ViT-B/32"), ("vit-b-16", "ViT-B/16"), ("vit-l-14", "ViT-L/14"),
                       ("vit-l-14-336", "ViT-L/14-336")]:
        run([vflclip, "make-model", "--like", like, "--seed", "0", "--out", models / f"hf-{like}", "--config-only"])
        run([vflclip, "make-model", "--like", like, "--layout", "open_clip", "--seed", "0",
             "--out", models / f"oc-{like}", "--config-only"])
        want[f"hf-{like}"] = want[f"oc-{like}"] = name
    for like, name in [("rn50x4", "RN50x4"), ("rn50x16", "RN50x16"), ("rn50x64", "RN50x64")]:
        run([vflclip, "make-model", "--like", like, "--seed", "0", "--out", models / like, "--config-only"])
        want[like] = name
    if SHARED_DATA.is_dir():  # OpenAI's own config.json files, where this checkout has them
        for d in (SHARED_DATA / "clip-configs" / "hf").iterdir():
            (models / f"real-{d.name}").mkdir()
            (models / f"real-{d.name}" / "config.json").write_bytes((d / "config.json").read_bytes())
        want.update({"real-clip-vit-base-patch16": "ViT-B/16", "real-clip-vit-base-patch32": "ViT-B/32",
                     "real-clip-vit-large-patch14": "ViT-L/14"})
    run([vflclip, "make-model", "--like", "tiny", "--seed", "0", "--out", models / "tiny", "--config-only"])
    want["tiny"] = "-"
    p = table1("--models", models, "--list")
    got = {}
    for line in p.stdout.splitlines()[1:]:
        f = line.split()
        got[f[0]] = (f[1], f[2])
    assert {k: v[0] for k, v in got.items()} == want
    assert all(v[1] == "config" for k, v in got.items() if k != "tiny")
    # without weights nothing runs: one line per directory, before any training
    p = table1("--models", models, "--data", SCRIPT, "--out", tmp_path / "o", check=False)
    assert p.returncode == 2 and "no model.safetensors" in p.stderr and "no open_clip_model.safetensors" in p.stderr
    assert not (tmp_path / "o").exists()


def guide_snippet():
    """The guide's .bin -> safetensors step, as the user copies it."""
    text = (ROOT / "docs" / "reproduce-table1.md").read_text()
    m = re.search(r"<!-- bin2safetensors -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/reproduce-table1.md lost its bin2safetensors snippet"
    return m.group(1)


def test_bin_only_checkpoint_refused_then_converted_by_the_guides_step(vflclip, setup, tmp_path):
    torch = pytest.importorskip("torch", reason="SKIP: torch is not installed (tests/python/make-venv.sh)")
    from safetensors.torch import load_file
    from PIL import Image
    src = setup / "models" / "hf-tiny"
    d = tmp_path / "models" / "bin-only"
    d.mkdir(parents=True)
    for f in ("config.json", "vocab.json", "merges.txt", "preprocessor_config.json"):
        (d / f).write_bytes((src / f).read_bytes())
    sd = load_file(str(src / "model.safetensors"))
    sd["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)  # as OpenAI's .bin files carry
    torch.save(sd, d / "pytorch_model.bin")
    p = table1("--models", d.parent, "--data", setup / "derma.npz", "--out", tmp_path / "o", check=False)
    assert p.returncode == 2 and "only pytorch_model.bin" in p.stderr and "reproduce-table1.md" in p.stderr
    (tmp_path / "bin2safetensors.py").write_text(guide_snippet())
    run([sys.executable, tmp_path / "bin2safetensors.py", d])
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(img)
    run([vflclip, "embed", "--model", d, "--image", img, "--out", tmp_path / "conv.npy"])
    run([vflclip, "embed", "--model", src, "--image", img, "--out", tmp_path / "orig.npy"])
    assert np.array_equal(np.load(tmp_path / "conv.npy"), np.load(tmp_path / "orig.npy"))
    table1("--models", d.parent, "--list")
