"""[run] loss_at = image-parties end to end: three image parties keep their
embeddings and labels, the aggregator receives only secure sums (pairwise
masked, fixed point) of each batch's loss and dL/dT and of each evaluation's
counts.  The run must equal the pooled single-process `vflclip train` on the
same data: context within 1e-5 relative, per-epoch and test AUC within 1e-4,
ACC and confusion matrices exactly; also after kill -9 of an image party
(the sum in flight is redone with fresh masks when it is back) and of the
aggregator.  The run's transcript shows the aggregator never received an
embedding from any party, each site reported its own metrics, and with a
single image party status and privacy.json say the mode adds no
protection."""
import json

import numpy as np
import pytest

from test_federation_support import HOSPITALS, read_jsonl, running, single_reference

SIZES = [("train", 480), ("val", 120), ("test", 120)]
FLAGS = ["--epochs", "3", "--batch-size", "16", "--lr", "0.01", "--n-ctx", "4", "--seed", "7",
         "--template", "a photo of {ctx} {class}."]
KILL_AT = 40          # steps; 30 per epoch, 90 in all


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    # splits large enough that one pair of scores weighs less than the 1e-4 the AUCs must agree to
    yield from running(vflclip, tmp_path_factory, "secure", sizes=SIZES)


@pytest.fixture(scope="module")
def reference(fed, tmp_path_factory):
    return single_reference(fed, tmp_path_factory, FLAGS)


def compare(out, ref):
    """Context relative difference, and the largest AUC / loss difference of
    the per-epoch and test metrics; ACC, steps, best epochs and confusion
    matrices must agree exactly."""
    from safetensors.numpy import load_file
    ca, cb = load_file(out / "context.safetensors")["ctx"], load_file(ref / "context.safetensors")["ctx"]
    ctx = float(np.abs(ca - cb).max() / np.abs(cb).max())
    ta, tb = json.loads((out / "test_metrics.json").read_text()), json.loads((ref / "test_metrics.json").read_text())
    assert ta["confusion"] == tb["confusion"] and ta["acc"] == pytest.approx(tb["acc"], abs=1e-12)
    auc = abs(ta["auc"] - tb["auc"])
    loss = abs(ta["loss"] - tb["loss"])
    ea, eb = read_jsonl(out / "metrics.jsonl"), read_jsonl(ref / "metrics.jsonl")
    assert [(e["epoch"], e["steps"], e["best_epoch"]) for e in ea] == [(e["epoch"], e["steps"], e["best_epoch"]) for e in eb]
    for x, y in zip(ea, eb):
        for split in ("train", "val"):
            assert x[split]["acc"] == pytest.approx(y[split]["acc"], abs=1e-12)
            auc = max(auc, abs(x[split]["auc"] - y[split]["auc"]))
            loss = max(loss, abs(x[split]["loss"] - y[split]["loss"]))
        loss = max(loss, abs(x["train_loss"] - y["train_loss"]))
    return ctx, auc, loss


def run_to_end(fed, run_id, tmp_path):
    s = fed.wait_state(lambda s: s["run_id"] == run_id and s["state"] in ("done", "failed", "aborted"), timeout=300,
                       what=f"{run_id} to end")
    assert s["state"] == "done", s
    return fed.results(run_id, tmp_path / run_id)


def check_same(fed, run_id, reference, tmp_path):
    out = run_to_end(fed, run_id, tmp_path)
    ctx, auc, loss = compare(out, reference)
    print(f"{run_id}: loss at the image parties vs pooled single process: context rel {ctx:.3g}, AUC {auc:.3g}, loss {loss:.3g}")
    assert ctx <= 1e-5 and auc <= 1e-4 and loss <= 1e-5
    return out


def transcript_kinds(out):
    """(sender, kind) of every message of the run, per its transcript."""
    kinds = set()
    for line in (out / "transcript.jsonl").read_text().splitlines():
        e = json.loads(line)
        if "kind" in e and e.get("receiver") not in (None, "-"):
            kinds.add((e["sender"], e["kind"]))
    return kinds


def test_secure_run_equals_pooled_and_receives_no_embedding(fed, reference, tmp_path):
    fed.cli("run", "start", *FLAGS, "--loss-at", "image-parties", "--run-id", "secure")
    s = fed.wait_state(lambda s: s["run_id"] == "secure" and s["state"] != "idle", what="the run to start")
    assert s["loss_at"] == "image-parties" and "only secure sums" in s["loss_at_note"], s
    out = check_same(fed, "secure", reference, tmp_path)
    kinds = {k for _, k in transcript_kinds(out)}
    print("message kinds in the transcript:", sorted(kinds))
    assert "masked_share" in kinds and "secure_sum" in kinds
    assert "embeddings" not in kinds and "encode_split" not in kinds
    sites = json.loads((out / "site_metrics.json").read_text())
    test = json.loads((out / "test_metrics.json").read_text())
    assert [x["name"] for x in sites["sites"]] == HOSPITALS
    n = sum(x["test"]["n"] for x in sites["sites"])
    acc = sum(x["test"]["acc"] * x["test"]["n"] for x in sites["sites"]) / n
    assert n == test["n"] and acc == pytest.approx(test["acc"], abs=1e-12)
    priv = json.loads((out / "privacy.json").read_text())["loss_at"]
    assert priv["mode"] == "image-parties" and priv["fewest_participants"] == 3 and priv["protects_against_aggregator"]
    agg = fed.aggregator.text()
    assert "event=loss_at_image_parties run=secure" in agg and "event=encoding_start run=secure" not in agg


def test_image_party_killed_mid_run_redoes_the_sum_and_continues(fed, reference, tmp_path):
    fed.wait_parties(4)
    fed.cli("run", "start", *FLAGS, "--loss-at", "image-parties", "--checkpoint-every", "5", "--run-id", "secure-kill-image")
    fed.wait_state(lambda s: s["run_id"] == "secure-kill-image" and s["step"] >= KILL_AT, what=f"step {KILL_AT}")
    party = fed.images["hosp-b"]
    party.kill9()
    fed.wait_state(lambda s: s["state"] == "training-paused", what="the run to wait for hosp-b")
    party.start()
    check_same(fed, "secure-kill-image", reference, tmp_path)
    agg = fed.aggregator.text()
    assert 'event=run_paused run=secure-kill-image' in agg and "waiting for image party 'hosp-b'" in agg


def test_aggregator_killed_mid_run(fed, reference, tmp_path):
    fed.wait_parties(4)
    fed.cli("run", "start", *FLAGS, "--loss-at", "image-parties", "--checkpoint-every", "5", "--run-id", "secure-kill-agg")
    fed.wait_state(lambda s: s["run_id"] == "secure-kill-agg" and s["step"] >= KILL_AT, what=f"step {KILL_AT}")
    fed.aggregator.kill9()
    fed.aggregator.start()
    check_same(fed, "secure-kill-agg", reference, tmp_path)


def test_single_image_party_is_told_it_has_no_protection(fed, tmp_path):
    fed.wait_parties(4)
    fed.cli("run", "start", "--epochs", "1", "--batch-size", "8", "--n-ctx", "4", "--loss-at", "image-parties",
            "--image-parties", "hosp-a", "--run-id", "secure-single")
    out = run_to_end(fed, "secure-single", tmp_path)
    s = fed.status()
    assert "no protection" in s["loss_at_note"], s
    priv = json.loads((out / "privacy.json").read_text())["loss_at"]
    assert priv["fewest_participants"] == 1 and not priv["protects_against_aggregator"] and "no protection" in priv["note"]
    assert "event=secure_sum_single_party run=secure-single" in fed.aggregator.text()


def test_label_leak_guard_works_the_same_at_the_image_parties(fed, tmp_path):
    """Accumulation, per-example clipping (at the parties), Gaussian noise on
    the sum and the epsilon ledger: the secure run equals `vflclip train`
    with the same privacy flags, epsilon included."""
    flags = FLAGS + ["--text-grad-accumulate", "2", "--text-grad-clip", "0.5", "--text-grad-noise", "0.8"]
    ref = tmp_path / "single"
    fed.train_single(ref, *flags)
    fed.wait_parties(4)
    fed.cli("run", "start", *flags, "--loss-at", "image-parties", "--run-id", "secure-dp")
    out = check_same(fed, "secure-dp", ref, tmp_path)
    pa, pb = json.loads((out / "privacy.json").read_text()), json.loads((ref / "privacy.json").read_text())
    print(f"epsilon: secure run {pa['text_grad']['epsilon']:.6f}, single process {pb['text_grad']['epsilon']:.6f}")
    assert pa["text_grad"]["epsilon"] == pytest.approx(pb["text_grad"]["epsilon"], rel=1e-12)
    assert pa["text_grad"]["steps"] == pb["text_grad"]["steps"]
