"""The federation end to end on loopback: three image parties, one knowledge
party and the aggregator as separate processes over mutual TLS (kits from
`vflclip provision`), driven by the admin CLI.  The reference is `vflclip
train` in one process on the same data (the three hospitals' npz files
concatenated in name order) with the same seed: the federated run must give
the same context (max abs diff <= 1e-5), the same per-epoch metrics and the
same test metrics.  Also: the run refuses a party whose model differs and
names it (a party with the same weights but other preprocessing too);
`vflclip status` reports roles and certificate expiry (checked
against Python `cryptography`); the audit log names the admin certificate
that started and aborted runs; configuration mistakes are clear start-up
errors."""
import datetime
import json
import shutil

import pytest
from cryptography import x509

from conftest import BUILD, run
from test_federation_support import ENV, HOSPITALS, RUN_FLAGS, compare_runs, running


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    yield from running(vflclip, tmp_path_factory, "federation", extra_image_parties=["hosp-x"])


def test_federated_run_equals_single_process(fed, tmp_path):
    p = fed.cli("run", "start", *RUN_FLAGS, "--run-id", "equal", "--watch")
    final = json.loads(p.stdout.splitlines()[-1])
    assert final["state"] == "done", p.stderr
    out = fed.results("equal", tmp_path / "fed")
    for name in ["metrics.jsonl", "test_metrics.json", "context.safetensors", "auc_acc.png", "loss.png",
                 "confusion_test.png", "confusion_val.png"]:
        assert (out / name).stat().st_size > 0, name
    single = fed.train_single(tmp_path / "single")
    d = compare_runs(out, tmp_path / "single")
    print(f"federated vs single process: max abs diff context {d['ctx']:.3g}, test metrics {d['test']:.3g}, "
          f"per-epoch metrics {d['epochs']:.3g}; steps {final['step']} vs {single['steps']}")
    assert final["step"] == single["steps"]
    assert d["ctx"] <= 1e-5
    assert d["test"] <= 1e-6 and d["epochs"] <= 1e-6
    # The test metrics the watch printed are the run directory's.
    test = json.loads((out / "test_metrics.json").read_text())
    assert abs(final["test_auc"] - test["auc"]) < 1e-6 and abs(final["test_acc"] - test["acc"]) < 1e-6


def test_status_lists_parties_with_certificate_expiry(fed):
    s = fed.status()
    roles = sorted((p["role"], p["name"]) for p in s["parties"])
    assert roles == sorted([("knowledge-party", "derm")] + [("image-party", h) for h in HOSPITALS])
    now = datetime.datetime.now(datetime.timezone.utc)
    for p in s["parties"]:
        kit = fed.fed / f"{p['role']}-{p['name']}"
        cert = x509.load_pem_x509_certificate((kit / "cert.pem").read_bytes())
        days = (cert.not_valid_after_utc - now).total_seconds() / 86400
        assert p["cert_serial"] == format(cert.serial_number, "X")
        assert abs(p["cert_days_left"] - days) < 0.1, (p, days)
    agg = x509.load_pem_x509_certificate((fed.fed / "aggregator-localhost" / "cert.pem").read_bytes())
    assert abs(s["cert_days_left"] - (agg.not_valid_after_utc - now).total_seconds() / 86400) < 0.1
    human = fed.cli("status").stdout
    assert "knowledge-party" in human and "hosp-b" in human and "certificate expires in" in human


def test_party_with_another_model_is_refused_by_name(fed, tmp_path):
    other = tmp_path / "other-model"
    run([fed.vflclip, "make-model", "--like", "tiny", "--seed", "4", "--out", other])
    x = fed.image_party("hosp-x", fed.root / "hosp-a.npz", other).start()
    try:
        fed.wait_parties(5)
        p = fed.cli("run", "start", "--epochs", "1", "--run-id", "mismatch", check=False)
        print(p.stderr.strip())
        assert p.returncode != 0
        assert "image party 'hosp-x'" in p.stderr and "same checkpoint" in p.stderr
        # Naming the good parties only, the run starts.
        p = fed.cli("run", "start", "--epochs", "1", "--n-ctx", "2", "--image-parties", ",".join(HOSPITALS),
                    "--run-id", "without-x", "--watch")
        assert json.loads(p.stdout.splitlines()[-1])["state"] == "done"
    finally:
        x.stop()
    fed.wait_state(lambda s: s["parties_connected"] == 4, what="hosp-x to leave")
    # Same weights, other normalisation: the embeddings would not be comparable.
    same = tmp_path / "same-weights"
    shutil.copytree(fed.model, same)
    pp = json.loads((same / "preprocessor_config.json").read_text())
    pp["image_mean"] = [0.5, 0.5, 0.5]
    (same / "preprocessor_config.json").write_text(json.dumps(pp))
    x = fed.image_party("hosp-x", fed.root / "hosp-a.npz", same).start()
    try:
        fed.wait_parties(5)
        p = fed.cli("run", "start", "--epochs", "1", "--run-id", "mismatch-pp", check=False)
        print(p.stderr.strip())
        assert p.returncode != 0 and "image party 'hosp-x' preprocesses its images differently" in p.stderr
    finally:
        x.stop()
    fed.wait_state(lambda s: s["parties_connected"] == 4, what="hosp-x to leave")


def test_abort_is_audited_with_the_admin_certificate(fed):
    fed.cli("run", "start", "--epochs", "500", "--batch-size", "8", "--run-id", "to-abort")
    fed.wait_state(lambda s: s["state"].startswith("training") and s["step"] > 2, what="training")
    p = fed.cli("run", "abort", "--reason", "test says stop")
    assert "state=aborted" in p.stdout
    p = fed.cli("run", "watch", "--run-id", "to-abort", check=False)
    assert p.returncode == 1 and "aborted" in p.stderr
    ops = x509.load_pem_x509_certificate((fed.fed / "admin-ops" / "cert.pem").read_bytes())
    serial = format(ops.serial_number, "X")
    lines = (fed.fed / "aggregator-localhost" / "state" / "audit.log").read_text().splitlines()
    starts = [l for l in lines if "event=run_start " in l and "run=to-abort" in l]
    aborts = [l for l in lines if "event=run_abort " in l and "run=to-abort" in l]
    print(starts[-1], aborts[-1], sep="\n")
    for l in (starts[-1], aborts[-1]):
        assert "role=admin name=ops" in l and f"serial={serial}" in l
    assert 'reason="test says stop"' in aborts[-1]
    # The next run can start once this one is over.
    assert fed.status()["state"] == "aborted"


def test_run_config_errors_are_clear(fed, tmp_path):
    bad = tmp_path / "run.ini"
    bad.write_text("[run]\nepochs = 2\nbatchsize = 8\n")
    p = fed.cli("run", "start", "--config", bad, check=False)
    assert p.returncode == 2 and "run.ini:3: unknown key [run] batchsize" in p.stderr, p.stderr
    p = fed.cli("run", "start", "--epochs", "zero", check=False)
    assert p.returncode == 2 and "[run] epochs = 'zero' is not an integer" in p.stderr, p.stderr


def test_a_stated_n_ctx_that_disagrees_with_the_init_words_fails_the_run_at_the_knowledge_party(fed):
    """[run] n_ctx travels with whether it was stated (RunSetup.n_ctx_given):
    the knowledge party, which alone can count the init words' tokens,
    refuses a contradiction instead of silently taking the words' count."""
    fed.wait_parties(4)
    fed.cli("run", "start", "--epochs", "1", "--n-ctx", "5", "--init-words", "a photo of a", "--image-parties",
            ",".join(HOSPITALS), "--run-id", "nctx-clash")
    s = fed.wait_state(lambda s: s["run_id"] == "nctx-clash" and s["state"] in ("failed", "done"), what="the run to end")
    assert s["state"] == "failed", s
    line = [l for l in fed.aggregator.text().splitlines() if "event=run_failed run=nctx-clash" in l][-1]
    assert "n_ctx 5 disagrees with init words 'a photo of a'" in line, line


def test_daemon_config_errors_are_clear(fed, tmp_path):
    kit = tmp_path / "kit"
    shutil.copytree(fed.fed / "image-party-hosp-a", kit, ignore=shutil.ignore_patterns("state"))
    ini = kit / "image-party.ini"
    text = ini.read_text()
    ini.write_text(text + "\n[data]\nlabel_column = dx\n")
    p = run([BUILD / "vflclip-image-party", "--config", ini, "--check-config"], check=False, env=ENV)
    print(p.stderr.strip())
    assert p.returncode == 1 and "unknown key [data] label_column" in p.stderr
    ini.write_text(text.replace(str(fed.model), str(tmp_path / "no-such-model")))
    p = run([BUILD / "vflclip-image-party", "--config", ini, "--check-config"], check=False, env=ENV)
    print(p.stderr.strip())
    assert p.returncode == 1 and "[model] dir" in p.stderr and "no-such-model" in p.stderr
    p = run([BUILD / "vflclip-knowledge-party", "--config", tmp_path / "missing.ini"], check=False, env=ENV)
    assert p.returncode == 1 and "missing.ini" in p.stderr


def test_a_new_run_warm_started_from_an_earlier_one_equals_train_from_its_context(fed, tmp_path):
    """`run start --warm-start ID`: the knowledge party starts the new run
    from ID's best context (its own checkpoint of ID) with a fresh
    optimizer; the reference is `vflclip train --init-ctx` with ID's exported
    context file."""
    flags = ["--epochs", "2", "--batch-size", "16", "--lr", "0.01", "--n-ctx", "4", "--template", "a photo of {ctx} {class}.",
             "--image-parties", ",".join(HOSPITALS)]
    fed.wait_parties(4)
    p = fed.cli("run", "start", *flags, "--seed", "5", "--run-id", "warm-src", "--watch")
    assert json.loads(p.stdout.splitlines()[-1])["state"] == "done", p.stderr
    src = fed.results("warm-src", tmp_path / "src")
    p = fed.cli("run", "start", *flags, "--seed", "9", "--warm-start", "warm-src", "--run-id", "warm-dst", "--watch")
    assert json.loads(p.stdout.splitlines()[-1])["state"] == "done", p.stderr
    dst = fed.results("warm-dst", tmp_path / "dst")
    single_flags = [f for f in flags[:-2]] + ["--seed", "9", "--init-ctx", str(src / "context.safetensors")]
    fed.train_single(tmp_path / "single", *single_flags)
    d = compare_runs(dst, tmp_path / "single")
    print(f"warm-started run vs train --init-ctx: context {d['ctx']:.3g}, test {d['test']:.3g}, epochs {d['epochs']:.3g}")
    assert d["ctx"] <= 1e-5 and d["test"] <= 1e-6 and d["epochs"] <= 1e-6
    assert "event=warm_start run=warm-dst from_run=warm-src" in fed.kp.text()
    settings = json.loads((dst / "run_settings.json").read_text())
    assert settings["run"]["warm_start"] == "warm-src", settings
    p = fed.cli("run", "start", *flags, "--warm-start", "no-such-run", "--run-id", "warm-missing", "--watch", check=False)
    line = [l for l in fed.aggregator.text().splitlines() if "event=run_failed run=warm-missing" in l][-1]
    assert "no checkpoint of it" in line, line
