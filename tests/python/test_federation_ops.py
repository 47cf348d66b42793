"""Operating a federation (issue 14): per-site results, run history, and
progress of long work.

Progress: `vflclip embed` reports images done / total, rate and time left;
an image party that encodes a large data set logs the same every few
seconds and sends it to the aggregator, so `vflclip status` shows it as
"encoding N/M", then "connected" (the interval is shortened for the test
with VFLCLIP_PROGRESS_INTERVAL_S).

Per-site results: a three-hospital run writes site_metrics.json, each
hospital's val and test ACC, AUC, balanced accuracy, per-class recall and
confusion matrix.  The reference is independent of the C code: the scores
come from transformers (CLIPModel image features of CLIPImageProcessor
pixels, CoOp text features of the run's learned context through the text
tower, as test_coop_grad.py builds them) and the metrics from scikit-learn
on each hospital's rows (the data set is split over the hospitals with
np.array_split, concatenated in name order)."""
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score, roc_auc_score

from conftest import run
from test_federation_support import HOSPITALS, RUN_FLAGS, SIZES, running
from test_train import CLASSES

TEMPLATE = "a photo of {ctx} {class}."


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    yield from running(vflclip, tmp_path_factory, "ops", extra_image_parties=["hosp-slow"])


@pytest.fixture(scope="module")
def finished(fed, tmp_path_factory):
    """One complete run ("sites") and its fetched results."""
    p = fed.cli("run", "start", *RUN_FLAGS, "--run-id", "sites", "--watch", timeout=300)
    assert json.loads(p.stdout.splitlines()[-1])["state"] == "done", p.stderr
    return fed.results("sites", tmp_path_factory.mktemp("sites") / "results")


def reference_scores(fed, ctx):
    """Softmax scores (N, C) of the val and test splits of all.npz under the
    context ctx, in float64 through transformers."""
    from test_coop_grad import coop_reference_grad, load_reference
    from transformers import CLIPImageProcessor
    model, tok = load_reference(fed.model)
    classes = CLASSES.split(",")
    proc = CLIPImageProcessor.from_pretrained(str(fed.model))
    out = {}
    for split in ("val", "test"):
        images = fed.full[f"{split}_images"]
        labels = np.asarray(fed.full[f"{split}_labels"]).reshape(-1).astype(np.int64)
        pixels = proc(images=list(images), return_tensors="pt")["pixel_values"].double()
        with torch.no_grad():
            img = model.get_image_features(pixel_values=pixels).numpy()
        _, _, text = coop_reference_grad(model, tok, classes, TEMPLATE, ctx.astype(np.float64), False, "end", img, labels)
        img = img / np.linalg.norm(img, axis=1, keepdims=True)
        text = text / np.linalg.norm(text, axis=1, keepdims=True)
        logits = math.exp(model.logit_scale_value) * img @ text.T
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        out[split] = (p / p.sum(1, keepdims=True), labels)
    return out


def sklearn_metrics(scores, labels, C):
    pred = scores.argmax(1)
    present = [k for k in range(C) if 0 < (labels == k).sum() < len(labels)]
    class_auc = {k: roc_auc_score(labels == k, scores[:, k]) for k in present}
    return {
        "n": len(labels),
        "acc": accuracy_score(labels, pred),
        "auc": float(np.mean(list(class_auc.values()))) if class_auc else None,
        "class_auc": class_auc,
        "balanced_acc": balanced_accuracy_score(labels, pred),
        "recall": recall_score(labels, pred, labels=list(range(C)), average=None, zero_division=np.nan),
        "confusion": confusion_matrix(labels, pred, labels=list(range(C))).tolist(),
    }


def assert_close(got, ref, C, what):
    assert got["n"] == ref["n"], what
    assert got["confusion"] == ref["confusion"], what
    for k in ("acc", "balanced_acc", "auc"):
        assert abs(got[k] - ref[k]) < 1e-6, (what, k, got[k], ref[k])
    for k in range(C):
        if k in ref["class_auc"]:
            assert abs(got["class_auc"][k] - ref["class_auc"][k]) < 1e-6, (what, k)
        else:
            assert got["class_auc"][k] is None, (what, k)
        if np.isnan(ref["recall"][k]):
            assert got["class_recall"][k] is None, (what, k)
        else:
            assert abs(got["class_recall"][k] - ref["recall"][k]) < 1e-12, (what, k)


def test_per_site_metrics_match_sklearn(fed, finished):
    from safetensors.numpy import load_file
    sites = json.loads((finished / "site_metrics.json").read_text())
    assert [s["name"] for s in sites["sites"]] == HOSPITALS
    C = len(CLASSES.split(","))
    assert sites["class_names"] == CLASSES.split(",")
    ctx = load_file(str(finished / "context.safetensors"))["ctx"]
    ref = reference_scores(fed, ctx)
    # The reference reproduces the pooled test metrics the run reported ...
    pooled = json.loads((finished / "test_metrics.json").read_text())
    assert sites["context_epoch"] == pooled["context_epoch"]
    assert_close(pooled, sklearn_metrics(*ref["test"], C), C, "pooled test")
    # ... and each hospital's rows give its own metrics.
    sizes = dict(SIZES)
    worst = 0.0
    for split in ("val", "test"):
        scores, labels = ref[split]
        first = 0
        for site, idx in zip(sites["sites"], np.array_split(np.arange(sizes[split]), len(HOSPITALS))):
            got = site[split]
            assert got["first_row"] == first == idx[0], (site["name"], split)
            want = sklearn_metrics(scores[idx], labels[idx], C)
            assert_close(got, want, C, f"{site['name']} {split}")
            worst = max(worst, abs(got["auc"] - want["auc"]), abs(got["balanced_acc"] - want["balanced_acc"]))
            first += len(idx)
    print(f"per-site metrics vs scikit-learn on transformers scores: max abs diff {worst:.2e}; "
          + ", ".join(f"{s['name']} test AUC {s['test']['auc']:.3f} ACC {s['test']['acc']:.3f}" for s in sites["sites"]))


# ---------------------------------------------------------------- history ----
def run_dir(fed, run_id):
    return fed.fed / "aggregator-localhost" / "state" / "runs" / run_id


def test_run_list_show_and_results_of_a_past_run(fed, finished, tmp_path):
    """After a second run, the first is still listed, shown and fetched whole."""
    p = fed.cli("run", "start", "--epochs", "1", "--n-ctx", "2", "--run-id", "second", "--watch", timeout=300)
    assert json.loads(p.stdout.splitlines()[-1])["state"] == "done", p.stderr
    runs = {r["run_id"]: r for r in json.loads(fed.cli("run", "list", "--json").stdout)["runs"]}
    assert {"sites", "second"} <= set(runs)
    kp_fp = next(p["fingerprint"] for p in fed.status()["parties"] if p["role"] == "knowledge-party")
    for run_id in ("sites", "second"):
        r = runs[run_id]
        test = json.loads((run_dir(fed, run_id) / "test_metrics.json").read_text())
        assert r["state"] == "done" and r["image_parties"] == HOSPITALS and r["knowledge_party"] == "derm"
        assert r["model_fingerprint"] == kp_fp
        assert r["test_auc"] == pytest.approx(test["auc"], abs=1e-12) and r["test_acc"] == pytest.approx(test["acc"], abs=1e-12)
        assert r["best_val_auc"] is not None and r["epsilon"] is None   # no noise: no epsilon
        assert r["started_unix"] <= r["ended_unix"]
    assert runs["second"]["current"] and not runs["sites"]["current"]
    human = fed.cli("run", "list").stdout
    print(human)
    assert "sites" in human and "second" in human and "hosp-a,hosp-b,hosp-c" in human

    shown = json.loads(fed.cli("run", "show", "sites", "--json").stdout)
    settings = shown["settings"]
    assert settings["run_id"] == "sites" and settings["format"] == "vflclip-run-settings-1"
    flags = dict(zip(RUN_FLAGS[::2], RUN_FLAGS[1::2]))
    assert settings["run"]["epochs"] == int(flags["--epochs"]) and settings["run"]["seed"] == int(flags["--seed"])
    assert settings["run"]["template"] == flags["--template"] and settings["run"]["lr"] == pytest.approx(0.01)
    assert settings["seeds"]["seed"] == int(flags["--seed"]) and settings["model_fingerprint"] == kp_fp
    assert settings["tokenizer_fingerprint"] and settings["preprocessing_fingerprint"]
    assert settings["class_names"] == CLASSES.split(",")
    assert [s["name"] for s in shown["site_metrics"]["sites"]] == HOSPITALS
    assert len(shown["epochs"]) == int(flags["--epochs"]) and "site_metrics.json" in shown["files"]
    human = fed.cli("run", "show", "sites").stdout
    print(human)
    for h in HOSPITALS:
        assert f"{h}, test" in human and f"{h}, val" in human

    # results of the earlier run, by positional id, equal the files kept for it
    out = tmp_path / "again"
    fed.cli("run", "results", "sites", "--out", out)
    for name in ("context.safetensors", "test_metrics.json", "site_metrics.json", "run_settings.json", "metrics.jsonl"):
        assert (out / name).read_bytes() == (finished / name).read_bytes(), name
    p = fed.cli("run", "show", "no-such-run", check=False)
    assert p.returncode == 1 and "no run 'no-such-run'" in p.stderr


def test_vflclip_train_writes_the_same_settings_file(fed, finished, tmp_path):
    fed.train_single(tmp_path / "single")
    single = json.loads((tmp_path / "single" / "run_settings.json").read_text())
    fedset = json.loads((finished / "run_settings.json").read_text())
    assert single["format"] == fedset["format"] and single["program"] == "vflclip train"
    assert single["software_version"] == fedset["software_version"]
    federation_only = {"party_timeout_s", "checkpoint_every", "chunk_size", "image_parties"}
    assert set(single["run"]) == set(fedset["run"])
    same = {k: (single["run"][k], fedset["run"][k]) for k in single["run"] if k not in federation_only}
    assert all(a == b for a, b in same.values()), {k: v for k, v in same.items() if v[0] != v[1]}
    for k in ("model_fingerprint", "tokenizer_fingerprint", "seeds", "class_names"):
        assert single[k] == fedset[k], k
    assert single["data"].endswith("all.npz") and single["run_id"] is None


CONTINUE_FLAGS = ["--epochs", "8", "--batch-size", "8", "--lr", "0.01", "--n-ctx", "4", "--seed", "11",
                  "--template", TEMPLATE]


def test_an_aborted_run_continues_and_equals_an_uninterrupted_run(fed, tmp_path):
    from test_federation_support import compare_runs
    fed.cli("run", "start", *CONTINUE_FLAGS, "--checkpoint-every", "3", "--run-id", "cont")
    s = fed.wait_state(lambda s: s["run_id"] == "cont" and s["step"] >= 20, what="step 20")
    assert s["state"].startswith("training"), s
    fed.cli("run", "abort", "--reason", "night shift")
    aborted = {r["run_id"]: r for r in json.loads(fed.cli("run", "list", "--json").stdout)["runs"]}["cont"]
    assert aborted["state"] == "aborted" and aborted["best_val_auc"] is not None and aborted["ended_unix"]
    assert "night shift" in aborted["message"]
    p = fed.cli("run", "continue", "cont", "--watch", timeout=300)
    print(p.stdout.splitlines()[0])
    resume_step = int(p.stdout.splitlines()[0].split("resume_step=")[1])
    assert 0 < resume_step <= aborted["step"]
    assert json.loads(p.stdout.splitlines()[-1])["state"] == "done", p.stderr
    out = fed.results("cont", tmp_path / "cont")
    fed.train_single(tmp_path / "single", *CONTINUE_FLAGS)
    d = compare_runs(out, tmp_path / "single")
    print(f"continued (from step {resume_step}) vs uninterrupted: max abs diff context {d['ctx']:.3g}, "
          f"test {d['test']:.3g}, epochs {d['epochs']:.3g}")
    assert d["ctx"] <= 1e-5 and d["test"] <= 1e-6 and d["epochs"] <= 1e-6
    # both parts of the run's transcript verify on their own
    ca = fed.fed / "aggregator-localhost" / "ca.crt"
    for part in ("transcript.1.jsonl", "transcript.jsonl"):
        p = run([fed.vflclip, "transcript", "verify", out / part, "--ca", ca], check=False)
        assert p.returncode == 0, (part, p.stderr)
    # a done run does not continue; an unknown one is named
    p = fed.cli("run", "continue", "cont", check=False)
    assert p.returncode == 1 and "is done" in p.stderr
    p = fed.cli("run", "continue", "nope", check=False)
    assert p.returncode == 1 and "no run 'nope'" in p.stderr
    audit = (fed.fed / "aggregator-localhost" / "state" / "audit.log").read_text()
    assert "event=run_continue " in audit and "run=cont" in audit



# --------------------------------------------------------------- progress ----
def test_embed_reports_images_done_rate_and_time_left(fed, tmp_path):
    from PIL import Image
    images = fed.full["train_images"][:40]
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(im).save(paths[-1])
    env = dict(fed.env, VFLCLIP_PROGRESS_INTERVAL_S="0.000001")
    p = run([fed.vflclip, "embed", "--model", fed.model, "--image", *paths, "--batch", "1", "--out", tmp_path / "e.npy"],
            env=env)
    lines = [l for l in p.stderr.splitlines() if l.startswith("encoding images ")]
    print("\n".join(lines[:3] + ["..."] + lines[-2:]))
    assert lines[-1].startswith("encoding images 40/40 (100.0%)") and " img/s" in lines[-1]
    partial = [l for l in lines[:-1] if "/40 (" in l]
    assert partial and all(" img/s" in l and " eta " in l for l in partial), lines
    done = [int(l.split()[2].split("/")[0]) for l in lines]
    assert done == sorted(done) and done[-1] == 40
    # the default: a line every few seconds, so a short run prints only the last
    p = run([fed.vflclip, "embed", "--model", fed.model, "--image", *paths[:4], "--out", tmp_path / "f.npy"], env=fed.env)
    assert [l for l in p.stderr.splitlines() if l.startswith("encoding images ")] == [
        next(l for l in p.stderr.splitlines() if l.startswith("encoding images 4/4 (100.0%)"))]


def test_status_shows_an_image_party_encoding(fed, tmp_path):
    """A hospital with many images: while it encodes, status says how far it
    is (from its EncodingProgress), its log says the same every interval, and
    once done it is "connected"."""
    base = fed.full["train_images"]
    n = 8000
    images = np.concatenate([base] * (n // len(base) + 1))[:n]
    labels = np.concatenate([np.asarray(fed.full["train_labels"])] * (n // len(base) + 1))[:n]
    np.savez(tmp_path / "big.npz", train_images=images, train_labels=labels, val_images=images[:30],
             val_labels=labels[:30], test_images=images[:30], test_labels=labels[:30])
    party = fed.image_party("hosp-slow", tmp_path / "big.npz", fed.model)
    from test_federation_support import set_key
    set_key(party.ini, "encode", "cache", "false")
    set_key(party.ini, "encode", "batch", "1")
    fed.env["VFLCLIP_PROGRESS_INTERVAL_S"] = "0.2"
    try:
        party.start()
        seen = fed.wait_state(lambda s: any(p["name"] == "hosp-slow" and p["state"].startswith("encoding ")
                                            for p in s["parties"]), timeout=60, what="hosp-slow encoding")
        state = next(p["state"] for p in seen["parties"] if p["name"] == "hosp-slow")
        print("status:", state)
        done, total = state.split()[1].split("/")
        assert total == f"{n + 60:,}" and 0 <= int(done.replace(",", "")) < n + 60
        human = fed.cli("status").stdout
        assert "hosp-slow" in human and "encoding " in human
        fed.wait_state(lambda s: any(p["name"] == "hosp-slow" and p["state"] == "connected" for p in s["parties"]),
                       timeout=120, what="hosp-slow done encoding")
        log = party.text()
        progress = [l for l in log.splitlines() if "event=progress " in l]
        print(progress[0], progress[-1], sep="\n")
        assert len(progress) >= 2 and f"total={n + 60}" in progress[-1] and f"done={n + 60}" in progress[-1]
        assert any(" eta " in l and "img/s" in l for l in progress[:-1])
        agg = fed.aggregator.text()
        assert "event=party_encoding peer=hosp-slow" in agg
    finally:
        party.stop()
        fed.env.pop("VFLCLIP_PROGRESS_INTERVAL_S", None)
    fed.wait_state(lambda s: all(p["name"] != "hosp-slow" for p in s["parties"]), what="hosp-slow to leave")
