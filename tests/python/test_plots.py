"""The figures a clinician reads (issue 14 item 4): `vflclip evaluate` writes,
next to its metrics file, the split's confusion matrix, one-vs-rest ROC curves
per class (their points as JSON beside the PNG) and per-class recall bars.

The ROC points are checked against scikit-learn's roc_curve
(drop_intermediate=False: one point per distinct score, ties grouped) and
roc_auc_score on the very scores the C side used: given ones (--scores), and
those `vflclip evaluate --scores-out` dumps for a context trained on the
synthetic shapes of test_train.py with a random-weight tiny model.  The AUC in
the legend (the JSON's) must equal the metrics' per-class AUC."""
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from conftest import run
from test_train import CLASSES, ENV, tiny_task  # the same task and tiny model as the training tests


def check_png(path, min_h=300, min_w=500):
    with Image.open(path) as im:
        assert im.format == "PNG", path
        im.load()
        a = np.asarray(im.convert("L"), dtype=np.float32)
    assert a.shape[0] >= min_h and a.shape[1] >= min_w and a.std() > 5, (path, a.shape)   # drawn, not blank
    return a.shape


def check_roc_json(path, scores, labels, metrics, names=None):
    """roc JSON vs sklearn on the same float32 scores; AUC vs the metrics file."""
    roc = json.loads(path.read_text())
    C = scores.shape[1]
    assert roc["source"] == "scores" and len(roc["classes"]) == C
    worst = 0.0
    for k, c in enumerate(roc["classes"]):
        if names:
            assert c["name"] == names[k]
        y = labels == k
        assert c["positives"] == int(y.sum()) and c["negatives"] == int((~y).sum())
        if y.all() or not y.any():
            assert c["auc"] is None and c["fpr"] == [] and metrics["class_auc"][k] is None
            continue
        fpr, tpr, thr = roc_curve(y, scores[:, k], drop_intermediate=False)
        assert len(c["fpr"]) == len(fpr), (k, len(c["fpr"]), len(fpr))
        np.testing.assert_allclose(c["fpr"], fpr, rtol=0, atol=1e-15)
        np.testing.assert_allclose(c["tpr"], tpr, rtol=0, atol=1e-15)
        assert c["thresholds"][0] is None and np.isinf(thr[0])
        # the float32 scores themselves (cJSON prints doubles to about 1e-16)
        np.testing.assert_array_equal(np.array(c["thresholds"][1:], dtype=np.float32), thr[1:].astype(np.float32))
        auc = roc_auc_score(y, scores[:, k])
        worst = max(worst, abs(c["auc"] - auc), abs(c["auc"] - metrics["class_auc"][k]))
    print(f"ROC JSON vs sklearn roc_curve/roc_auc_score and the metrics' class AUC: max |dAUC| {worst:.1e}")
    assert worst < 1e-12
    return roc


def test_scores_figures_and_roc_match_sklearn(vflclip, tmp_path):
    rng = np.random.default_rng(7)
    N, C = 300, 5
    labels = rng.integers(0, 4, N)                       # class 4 never occurs
    logits = rng.normal(size=(N, C))
    logits[np.arange(N), labels] += 1.2
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    scores = np.round(p, 2).astype(np.float32)           # rounded: many tied scores
    np.save(tmp_path / "s.npy", scores)
    np.save(tmp_path / "l.npy", labels.astype(np.float32))
    run([vflclip, "evaluate", "--scores", tmp_path / "s.npy", "--labels", tmp_path / "l.npy", "--out",
         tmp_path / "eval.json"])
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for name in ["eval_confusion_scores.png", "eval_roc_scores.png", "eval_recall_scores.png"]:
        check_png(tmp_path / name)
    check_roc_json(tmp_path / "eval_roc_scores.json", scores, labels, metrics)
    # --no-figures writes none
    run([vflclip, "evaluate", "--scores", tmp_path / "s.npy", "--labels", tmp_path / "l.npy", "--out",
         tmp_path / "quiet.json", "--no-figures"])
    assert not list(tmp_path.glob("quiet_*"))


@pytest.fixture(scope="module")
def trained(vflclip, tmp_path_factory):
    w = tiny_task(vflclip, tmp_path_factory.mktemp("plots"), (("train", 96), ("val", 32), ("test", 64)), seed=1)
    root, model, arrays = w["root"], w["model"], w["arrays"]
    out = root / "run-ab12"
    p = run([vflclip, "train", "--model", model, "--data", root / "shapes.npz", "--out", out, "--classes", CLASSES,
             "--cache-dir", root / "cache", "--device", "cpu", "--epochs", "3", "--batch-size", "16", "--lr", "0.005",
             "--n-ctx", "4"], env=ENV)
    return {"root": root, "model": model, "data": root / "shapes.npz", "out": out, "arrays": arrays,
            "summary": json.loads(p.stdout)}


def test_evaluate_writes_the_run_figures(vflclip, trained):
    t = trained
    ev = t["root"] / "evaluate"
    ev.mkdir()
    run([vflclip, "evaluate", "--model", t["model"], "--context", t["out"] / "context.safetensors", "--data", t["data"],
         "--cache-dir", t["root"] / "cache", "--device", "cpu", "--out", ev / "test_eval.json", "--scores-out",
         ev / "scores.npy"], env=ENV)
    metrics = json.loads((ev / "test_eval.json").read_text())
    scores = np.load(ev / "scores.npy")
    labels = t["arrays"]["test_labels"][:, 0].astype(int)
    assert scores.dtype == np.float32 and scores.shape == (64, 4)
    np.testing.assert_allclose(scores.sum(1), 1, atol=1e-5)
    assert (scores.argmax(1) == labels).mean() == pytest.approx(metrics["acc"], abs=1e-12)   # the split's order
    for name in ["test_eval_confusion_test.png", "test_eval_roc_test.png", "test_eval_recall_test.png"]:
        check_png(ev / name)
    check_roc_json(ev / "test_eval_roc_test.json", scores, labels, metrics, CLASSES.split(","))
    # --scores-out, --backbone and --run belong to the model form
    p = run([vflclip, "evaluate", "--scores", ev / "scores.npy", "--labels", ev / "scores.npy", "--scores-out",
             ev / "x.npy"], check=False)
    assert p.returncode == 2


def test_train_run_directory_has_the_final_figures(vflclip, trained):
    out = trained["out"]
    for split in ["val", "test"]:
        for kind in ["confusion", "roc", "recall"]:
            assert (out / f"{kind}_{split}.png").exists(), f"{kind}_{split}.png"
            check_png(out / f"{kind}_{split}.png")
    metrics = json.loads((out / "test_metrics.json").read_text())
    roc = json.loads((out / "roc_test.json").read_text())
    for k, c in enumerate(roc["classes"]):
        assert (c["auc"] is None) == (metrics["class_auc"][k] is None)
        if c["auc"] is not None:
            assert c["auc"] == pytest.approx(metrics["class_auc"][k], abs=1e-12)
