"""Operating a federation (issue 14): per-site results, run history, and
progress of long work.

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

from test_federation_support import HOSPITALS, RUN_FLAGS, SIZES, Federation
from test_train import CLASSES

TEMPLATE = "a photo of {ctx} {class}."


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    f = Federation(vflclip, tmp_path_factory.mktemp("ops"))
    f.start()
    yield f
    f.stop()


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
