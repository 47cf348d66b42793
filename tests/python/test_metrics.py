"""Metrics (common/metrics) against scikit-learn: ACC, MedMNIST's AUC (mean
one-vs-rest ROC AUC, ties counted half), per-class recall, balanced accuracy
and the confusion matrix, computed by `vflclip evaluate --scores --labels`
on random scores with many ties."""
import json

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score,
                             roc_auc_score)

from conftest import run


def c_metrics(vflclip, tmp_path, scores, labels):
    np.save(tmp_path / "scores.npy", scores.astype(np.float32))
    np.save(tmp_path / "labels.npy", labels.astype(np.int64))
    p = run([vflclip, "evaluate", "--scores", tmp_path / "scores.npy", "--labels", tmp_path / "labels.npy",
             "--out", tmp_path / "m.json"])
    printed = json.loads(p.stdout)
    assert json.loads((tmp_path / "m.json").read_text())["auc"] == printed["auc"]
    return printed


def check_against_sklearn(m, scores, labels):
    scores = scores.astype(np.float32)
    C = scores.shape[1]
    pred = scores.argmax(1)
    present = [k for k in range(C) if 0 < (labels == k).sum() < len(labels)]
    ref_class_auc = {k: roc_auc_score(labels == k, scores[:, k]) for k in present}
    ref_auc = np.mean(list(ref_class_auc.values()))
    ref = {
        "acc": accuracy_score(labels, pred),
        "auc": ref_auc,
        "balanced_acc": balanced_accuracy_score(labels, pred),
    }
    diffs = {k: abs(m[k] - v) for k, v in ref.items()}
    auc_diff = max(abs(m["class_auc"][k] - v) for k, v in ref_class_auc.items())
    rec = recall_score(labels, pred, labels=list(range(C)), average=None, zero_division=np.nan)
    rec_diff = max(abs(m["class_recall"][k] - rec[k]) for k in range(C) if (labels == k).any())
    print(f"max abs diff vs scikit-learn: acc {diffs['acc']:.2e} auc {diffs['auc']:.2e} "
          f"balanced_acc {diffs['balanced_acc']:.2e} class_auc {auc_diff:.2e} recall {rec_diff:.2e}")
    assert max(diffs.values()) < 1e-12 and auc_diff < 1e-12 and rec_diff < 1e-12
    for k in range(C):
        if k not in ref_class_auc:
            assert m["class_auc"][k] is None
        if not (labels == k).any():
            assert m["class_recall"][k] is None
    assert m["confusion"] == confusion_matrix(labels, pred, labels=list(range(C))).tolist()
    assert m["n"] == len(labels)


@pytest.mark.parametrize("seed,N,C,levels", [(0, 500, 7, 10), (1, 97, 3, 4), (2, 2005, 7, 1000), (3, 60, 2, 3)])
def test_metrics_match_sklearn_with_ties(vflclip, tmp_path, seed, N, C, levels):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, N)
    # Quantised scores: many exact ties inside every class column, and tied rows for argmax.
    scores = np.round(rng.random((N, C)) * levels) / levels
    scores[np.arange(N), labels] += rng.random(N) * 0.3 * (rng.random(N) < 0.5)   # some signal
    scores = scores / scores.sum(1, keepdims=True).clip(1e-6)
    m = c_metrics(vflclip, tmp_path, scores, labels)
    check_against_sklearn(m, scores, labels)


def test_softmax_scores_and_absent_class(vflclip, tmp_path):
    rng = np.random.default_rng(7)
    N, C = 300, 7
    labels = rng.choice([0, 1, 2, 4, 5, 6], N)            # class 3 never occurs: its AUC is undefined
    logits = rng.normal(size=(N, C)).astype(np.float32)
    logits[np.arange(N), labels] += 1.0
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = c_metrics(vflclip, tmp_path, scores, labels)
    check_against_sklearn(m, scores, labels)
    assert m["class_auc"][3] is None and m["class_recall"][3] is None


def test_bad_scores_are_rejected(vflclip, tmp_path):
    scores = np.full((4, 3), 1 / 3, np.float32)
    np.save(tmp_path / "s.npy", scores)
    np.save(tmp_path / "l.npy", np.array([0, 1, 3, 2]))
    p = run([vflclip, "evaluate", "--scores", tmp_path / "s.npy", "--labels", tmp_path / "l.npy"], check=False)
    assert p.returncode != 0 and "label 3 of sample 2 is outside 0..2" in p.stderr, p.stderr
    scores[1, 2] = np.nan
    np.save(tmp_path / "s.npy", scores)
    np.save(tmp_path / "l.npy", np.array([0, 1, 1, 2]))
    p = run([vflclip, "evaluate", "--scores", tmp_path / "s.npy", "--labels", tmp_path / "l.npy"], check=False)
    assert p.returncode != 0 and "score [1][2] is not finite" in p.stderr, p.stderr
