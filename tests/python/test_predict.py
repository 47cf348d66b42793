"""The run's product: classifier.safetensors and `vflclip predict`.

A tiny random-weight model trained on the coloured-shapes task of
test_train.py; the references are independent of vflclip's scoring code:
numpy for the softmax of the exported features over the image embeddings
(read from the embedding cache `train` wrote), scikit-learn for ACC/AUC, a
numpy ECE (15 equal-width bins, Guo et al. 2017) and scipy's bounded scalar
minimiser for the validation temperature."""
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, roc_auc_score

from conftest import run
from test_train import CLASSES, ENV, tiny_task  # noqa: F401  (same task and tiny model)

NAMES = CLASSES.split(",")


@pytest.fixture(scope="module")
def work(vflclip, tmp_path_factory):
    w = tiny_task(vflclip, tmp_path_factory.mktemp("predict"))
    root, model = w["root"], w["model"]
    for name, extra in [("run", []), ("run_t", ["--fit-temperature"])]:
        run([vflclip, "train", "--model", model, "--data", w["data"], "--out", root / name, "--classes", CLASSES,
             "--cache-dir", w["cache"], "--device", "cpu", "--epochs", "6", "--batch-size", "16", "--lr", "0.005",
             "--n-ctx", "4", "--quiet", *extra], env=ENV)
    return w


def load_classifier(path):
    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def cached_embeddings(work, split):
    for p in work["cache"].glob("*.safetensors"):
        with safe_open(str(p), "np") as f:
            if f.metadata().get("split") == split:
                return f.get_tensor("embeddings")
    raise AssertionError(f"no cached {split} embeddings")


def softmax_ref(emb, text, scale):
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    z = scale * (x.astype(np.float64) @ text.T.astype(np.float64))
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ece_ref(probs, labels, bins=15):
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return ece


def predict(vflclip, work, clf, *extra, model=None, check=True):
    return run([vflclip, "predict", "--model", model or work["model"], "--classifier", clf, "--cache-dir", work["cache"],
                "--device", "cpu", *extra], check=check, env=ENV)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_classifier_file(work):
    tensors, meta = load_classifier(work["root"] / "run" / "classifier.safetensors")
    assert list(tensors) == ["text"]                       # no context, no tower weight
    T = tensors["text"]
    assert T.shape[0] == 4 and np.allclose(np.linalg.norm(T, axis=1), 1, atol=1e-6)
    assert json.loads(meta["class_names"]) == NAMES
    with safe_open(str(work["root"] / "run" / "context.safetensors"), "np") as f:
        assert meta["model_fingerprint"] == f.metadata()["model_fingerprint"]
    assert len(meta["preprocessing_fingerprint"]) == 64 and len(meta["template_sha256"]) == 64
    assert float.fromhex(meta["temperature"]) == 1.0
    m = json.loads(meta["metrics"])
    saved = json.loads((work["root"] / "run" / "test_metrics.json").read_text())
    assert m["test"]["auc"] == saved["auc"] and m["test"]["acc"] == saved["acc"]
    assert (work["root"] / "run" / "reliability.png").stat().st_size > 1000


def test_predict_matches_numpy_and_the_runs_test_metrics(vflclip, work):
    out = work["root"] / "preds.csv"
    p = predict(vflclip, work, work["root"] / "run" / "classifier.safetensors", "--data", work["data"], "--out", out)
    rows = read_csv(out)
    assert {r["split"] for r in rows} == {"train", "val", "test"} and len(rows) == 420
    tensors, meta = load_classifier(work["root"] / "run" / "classifier.safetensors")
    scale = np.exp(float.fromhex(meta["logit_scale"]))
    test = [r for r in rows if r["split"] == "test"]
    probs = np.array([[float(r[f"p_{n}"]) for n in NAMES] for r in test])
    labels = np.array([int(r["label"]) for r in test])
    assert [int(r["id"]) for r in test] == list(range(120))
    assert (labels == work["arrays"]["test_labels"].reshape(-1)).all()
    ref = softmax_ref(cached_embeddings(work, "test"), tensors["text"], scale)
    print(f"predict vs numpy softmax: max abs diff {np.abs(probs - ref).max():.2e}")
    assert np.abs(probs - ref).max() < 1e-5
    assert [int(r["pred"]) for r in test] == list(probs.argmax(axis=1))
    assert all(r["pred_name"] == NAMES[int(r["pred"])] for r in test)
    # The printed metrics: scikit-learn's, and the run's own test metrics.
    lines = {j["split"]: j for j in map(json.loads, p.stdout.splitlines())}
    got = lines["test"]["metrics"]
    saved = json.loads((work["root"] / "run" / "test_metrics.json").read_text())
    assert abs(got["acc"] - accuracy_score(labels, probs.argmax(axis=1))) < 1e-12
    assert abs(got["auc"] - roc_auc_score(labels, probs, multi_class="ovr", average="macro")) < 1e-6
    assert abs(got["acc"] - saved["acc"]) < 1e-12 and abs(got["auc"] - saved["auc"]) < 1e-6
    assert got["confusion"] == saved["confusion"]
    assert abs(lines["test"]["ece"] - ece_ref(probs, labels)) < 1e-6
    cal = json.loads((work["root"] / "run" / "calibration.json").read_text())
    assert abs(cal["evaluation"]["ece"] - ece_ref(ref, labels)) < 1e-6
    assert sum(cal["evaluation"]["reliability"]["count"]) == 120


def test_fitted_temperature_matches_scipy(vflclip, work):
    tensors, meta = load_classifier(work["root"] / "run_t" / "classifier.safetensors")
    scale = np.exp(float.fromhex(meta["logit_scale"]))
    emb, y = cached_embeddings(work, "val"), work["arrays"]["val_labels"].reshape(-1)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = x.astype(np.float64) @ tensors["text"].T.astype(np.float64)

    def nll(beta):
        z = scale * beta * cos
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    beta = minimize_scalar(nll, bounds=(0.01, 100), method="bounded", options={"xatol": 1e-9}).x
    t = float.fromhex(meta["temperature"])
    print(f"temperature: vflclip {t:.6f}, scipy {1 / beta:.6f}")
    assert abs(t - 1 / beta) < 1e-3 * max(1, 1 / beta)
    cal = json.loads((work["root"] / "run_t" / "calibration.json").read_text())
    assert cal["temperature_fit"]["nll_after"] <= cal["temperature_fit"]["nll_before"] + 1e-12
    assert abs(cal["temperature_fit"]["nll_after"] - nll(1 / t)) < 1e-6
    # predict applies it: probabilities at scale / t, the argmax unchanged.
    out = work["root"] / "preds_t.jsonl"
    predict(vflclip, work, work["root"] / "run_t" / "classifier.safetensors", "--data", work["data"], "--split", "test",
            "--out", out)
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    probs = np.array([r["probs"] for r in rows])
    ref = softmax_ref(cached_embeddings(work, "test"), tensors["text"], scale / t)
    assert np.abs(probs - ref).max() < 1e-5 and {r["split"] for r in rows} == {"test"}
    assert abs(cal["evaluation"]["ece"] - ece_ref(ref, work["arrays"]["test_labels"].reshape(-1))) < 1e-6
    assert abs(cal["evaluation"]["ece_uncalibrated"] -
               ece_ref(softmax_ref(cached_embeddings(work, "test"), tensors["text"], scale),
                       work["arrays"]["test_labels"].reshape(-1))) < 1e-6


def test_single_images_as_the_data_set(vflclip, work):
    """--image files go through the same preprocessing and tower: the same probabilities."""
    imgs = work["arrays"]["test_images"][:5]
    paths = []
    for i, a in enumerate(imgs):
        p = work["root"] / f"img{i}.png"
        Image.fromarray(a).save(p)
        paths += ["--image", p]
    clf = work["root"] / "run" / "classifier.safetensors"
    p = predict(vflclip, work, clf, *paths)
    rows = list(csv.DictReader(p.stdout.splitlines()))
    assert [r["id"] for r in rows] == [str(x) for x in paths[1::2]] and all(r["label"] == "" for r in rows)
    probs = np.array([[float(r[f"p_{n}"]) for n in NAMES] for r in rows])
    tensors, meta = load_classifier(clf)
    ref = softmax_ref(cached_embeddings(work, "test")[:5], tensors["text"], np.exp(float.fromhex(meta["logit_scale"])))
    assert np.abs(probs - ref).max() < 1e-5


def test_fingerprint_mismatch_is_refused(vflclip, work):
    clf = work["root"] / "run" / "classifier.safetensors"
    _, meta = load_classifier(clf)
    other = work["root"] / "other"
    run([vflclip, "make-model", "--like", "tiny", "--seed", "4", "--out", other])
    for form in (["--data", work["data"]], ["--image", work["root"] / "img0.png"]):
        p = predict(vflclip, work, clf, *form, model=other, check=False)
        assert p.returncode != 0 and meta["model_fingerprint"] in p.stderr and "made for model" in p.stderr
    # Same weights, other preprocessing.
    pp = work["root"] / "tiny_pp"
    shutil.copytree(work["model"], pp)
    cfg = json.loads((pp / "preprocessor_config.json").read_text())
    cfg["image_mean"] = [0.5, 0.5, 0.5]
    (pp / "preprocessor_config.json").write_text(json.dumps(cfg))
    p = predict(vflclip, work, clf, "--data", work["data"], model=pp, check=False)
    assert p.returncode != 0 and "preprocessing" in p.stderr and meta["preprocessing_fingerprint"] in p.stderr
    # A damaged file is named.
    bad = work["root"] / "bad.safetensors"
    b = bytearray(clf.read_bytes())
    b[-3] ^= 0xFF
    bad.write_bytes(bytes(b))
    p = predict(vflclip, work, bad, "--data", work["data"], check=False)
    assert p.returncode != 0 and str(bad) in p.stderr


# ---- federated: the classifier the aggregator keeps, and who receives it ----------------------------------------
from test_federation_support import HOSPITALS, RUN_FLAGS, Federation, running  # noqa: E402
from test_grpc_support import stand_in_aggregator, stubs  # noqa: E402,F401  (fixture)


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    yield from running(vflclip, tmp_path_factory, "fed-classifier")


def party_log(fed, name):
    """(run, kind) of every message the image party received, from its own party log."""
    logs = list((fed.fed / f"image-party-{name}").rglob("party-log.jsonl"))
    assert len(logs) == 1, logs
    out, runs = [], []
    for line in logs[0].read_text().splitlines():
        o = json.loads(line)
        if "dir" not in o:
            runs.append(o.get("run"))
        elif o["dir"] == "received":
            out.append((runs[-1] if runs else None, o["kind"]))
    return out


def state_classifiers(fed, name):
    return {p.stem: p for p in (fed.fed / f"image-party-{name}").rglob("classifiers/*.safetensors")}


def test_federated_classifier_reproduces_the_runs_test_metrics_and_is_shared_only_when_on(vflclip, fed, tmp_path):
    cfg = tmp_path / "run.ini"
    flags = dict(zip(RUN_FLAGS[::2], RUN_FLAGS[1::2]))   # the same run as flags, as [run] keys
    keys = "".join(f"{k[2:].replace('-', '_')} = {v}\n" for k, v in flags.items())
    cfg.write_text(f"[run]\n{keys}share_classifier = image-parties\n")
    p = fed.cli("run", "start", "--config", cfg, "--run-id", "shared", "--watch")
    assert json.loads(p.stdout.splitlines()[-1])["state"] == "done", p.stderr
    out = fed.results("shared", tmp_path / "shared")
    clf = out / "classifier.safetensors"
    tensors, meta = load_classifier(clf)
    assert list(tensors) == ["text"] and meta["run_id"] == "shared"
    show = fed.cli("run", "show", "shared").stdout
    assert "share_classifier" in show and "image-parties" in show
    # The exported classifier reproduces the run's test ACC/AUC through predict on the pooled data.
    pr = run([vflclip, "predict", "--model", fed.model, "--classifier", clf, "--data", fed.root / "all.npz",
              "--split", "test", "--no-cache", "--out", tmp_path / "preds.csv"], env=ENV)
    got = json.loads(pr.stdout.splitlines()[0])["metrics"]
    saved = json.loads((out / "test_metrics.json").read_text())
    print(f"federated test: run acc {saved['acc']:.6f} auc {saved['auc']:.6f}; predict acc {got['acc']:.6f} auc {got['auc']:.6f}")
    assert abs(got["acc"] - saved["acc"]) < 1e-12 and abs(got["auc"] - saved["auc"]) < 1e-6
    assert got["confusion"] == saved["confusion"]
    # Each image party received it once, after the knowledge party's export, and kept it.
    transcript = [json.loads(l) for l in (out / "transcript.jsonl").read_text().splitlines()]
    kinds = [e.get("kind") for e in transcript]
    export = max(i for i, k in enumerate(kinds) if k == "context_file")
    sent = [i for i, k in enumerate(kinds) if k == "classifier_file"]
    assert len(sent) == len(HOSPITALS) and min(sent) > export
    for name in HOSPITALS:
        received = [k for r, k in party_log(fed, name) if r == "shared"]
        assert received.count("classifier_file") == 1 and received[-1] in ("classifier_file", "shutdown")
        assert set(received) <= {"welcome", "encode_split", "classifier_file", "shutdown"}, received
        kept = state_classifiers(fed, name)
        assert kept["shared"].read_bytes() == clf.read_bytes()
    # Off (the default): no party receives anything of the kind.
    p = fed.cli("run", "start", *RUN_FLAGS, "--run-id", "private", "--watch")
    assert json.loads(p.stdout.splitlines()[-1])["state"] == "done", p.stderr
    out2 = fed.results("private", tmp_path / "private")
    assert (out2 / "classifier.safetensors").exists()
    assert "classifier_file" not in [json.loads(l).get("kind") for l in (out2 / "transcript.jsonl").read_text().splitlines()]
    for name in HOSPITALS:
        assert "classifier_file" not in [k for r, k in party_log(fed, name) if r == "private"]
        assert "private" not in state_classifiers(fed, name)


def test_image_party_keeps_a_valid_classifier_once_and_refuses_others(vflclip, stubs, tmp_path):  # noqa: F811
    """A grpcio server with the aggregator's kit sends a real image party ClassifierFiles:
    one for its model and preprocessing (kept, byte for byte), the same run again
    (dropped: once), one for another model and a truncated one (refused).  The party
    answers none of them."""
    import threading
    from safetensors.numpy import save_file

    from test_federation_support import set_key

    fed = Federation(vflclip, tmp_path / "f")
    pb = stubs.fed
    got, done = [], threading.Event()

    def classifier_bytes(hello, model_fp, run_id):
        text = np.random.default_rng(0).normal(size=(4, hello.embed_dim)).astype(np.float32)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        meta = {"format": "vflclip-classifier-1", "class_names": json.dumps(NAMES), "template_sha256": "0" * 64,
                "model_fingerprint": model_fp, "preprocessing_fingerprint": hello.preprocessing_fingerprint,
                "run_id": run_id, "metrics": "{}", "logit_scale": float(np.log(100)).hex(), "temperature": (1.0).hex()}
        p = tmp_path / f"{run_id}.safetensors"
        save_file({"text": text}, str(p), metadata=meta)
        return p.read_bytes()

    def join(requests, context):
        hello = next(requests).hello
        yield pb.AggregatorMessage(welcome=pb.Welcome(aggregator_name="python", protocol_version=1))
        good = classifier_bytes(hello, hello.model_fingerprint, "good")
        got.append(good)
        yield pb.AggregatorMessage(task_id=1, classifier_file=pb.ClassifierFile(run_id="good", data=good))
        yield pb.AggregatorMessage(task_id=2, classifier_file=pb.ClassifierFile(run_id="good", data=good))
        other = classifier_bytes(hello, "f" * 64, "other")
        yield pb.AggregatorMessage(task_id=3, classifier_file=pb.ClassifierFile(run_id="other", data=other))
        yield pb.AggregatorMessage(task_id=4, classifier_file=pb.ClassifierFile(run_id="cut", data=good[:len(good) // 2]))
        yield pb.AggregatorMessage(task_id=5, classifier_file=pb.ClassifierFile(run_id="../escape", data=good))
        done.wait(20)

    sent = []
    server, port = stand_in_aggregator(fed.fed / "aggregator-localhost", join,
                                       lambda b: (sent.append(pb.PartyMessage.FromString(b)), sent[-1])[1])
    party = fed.images["hosp-a"]
    set_key(party.ini, "aggregator", "host", "127.0.0.1")
    set_key(party.ini, "aggregator", "port", port)
    party.start()
    try:
        import time
        t0 = time.time()
        while time.time() - t0 < 30 and party.text().count("event=classifier_") < 5:
            time.sleep(0.1)
        log = party.text()
    finally:
        done.set()
        party.stop()
        server.stop(1)
    kept = state_classifiers(fed, "hosp-a")
    assert set(kept) == {"good"} and kept["good"].read_bytes() == got[0], log[-3000:]
    assert log.count("event=classifier_received") == 1 and log.count("event=classifier_refused") == 4, log[-3000:]
    assert "received once" in log and "is for model ffff" in log
    assert {m.task_id for m in sent} <= {0}, "the party answered a ClassifierFile"
    assert not list((fed.fed / "image-party-hosp-a").rglob("*escape*"))


def test_precision_tagged_classifier(vflclip, work, tmp_path):
    """A federated run's classifier from bf16-encoding parties carries the precision in its
    preprocessing fingerprint: predict encodes in that precision, and refuses another one."""
    import hashlib
    tensors, meta = load_classifier(work["root"] / "run" / "classifier.safetensors")
    from safetensors.numpy import save_file
    meta = dict(meta)
    meta["preprocessing_fingerprint"] = hashlib.sha256(
        f"{meta['preprocessing_fingerprint']} precision=bf16".encode()).hexdigest()
    clf = tmp_path / "bf16.safetensors"
    save_file(tensors, str(clf), metadata=meta)
    p = predict(vflclip, work, clf, "--data", work["data"], "--precision", "fp32", check=False)
    assert p.returncode != 0 and "made from bf16 embeddings" in p.stderr, p.stderr
