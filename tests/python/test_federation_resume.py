"""Durable state: each daemon is killed with SIGKILL in the middle of a run
and started again; the run carries on from the last step both the aggregator
and the knowledge party committed, and its final context and metrics equal
those of an uninterrupted run (`vflclip train` in one process, which
test_federation.py shows the federation reproduces).  A party that stays
away fails the run after party_timeout_s with a status naming it."""
import json
import time

import pytest

from test_federation_support import Federation, compare_runs

FLAGS = ["--epochs", "16", "--batch-size", "8", "--lr", "0.01", "--n-ctx", "4", "--seed", "7",
         "--template", "a photo of {ctx} {class}."]
KILL_AT = 30          # steps; 12 steps per epoch, 192 in all


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    f = Federation(vflclip, tmp_path_factory.mktemp("resume"))
    f.start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def reference(fed, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "single"
    fed.train_single(out, *FLAGS)
    return out


def start_and_kill(fed, run_id, victim):
    fed.cli("run", "start", *FLAGS, "--checkpoint-every", "5", "--run-id", run_id)
    s = fed.wait_state(lambda s: s["run_id"] == run_id and s["step"] >= KILL_AT, what=f"step {KILL_AT}")
    assert s["state"].startswith("training"), f"the run got past training before the kill: {s}"
    victim.kill9()
    print(f"{run_id}: killed {victim.role} {victim.name} at step >= {s['step']} of {s['total_steps']}")
    return s["step"]


def finish_and_compare(fed, run_id, reference, tmp_path):
    s = fed.wait_state(lambda s: s["run_id"] == run_id and s["state"] in ("done", "failed", "aborted"),
                       what=f"{run_id} to end")
    assert s["state"] == "done", s
    out = fed.results(run_id, tmp_path / run_id)
    d = compare_runs(out, reference)
    print(f"{run_id} vs uninterrupted: max abs diff context {d['ctx']:.3g}, test {d['test']:.3g}, epochs {d['epochs']:.3g}")
    assert d["ctx"] <= 1e-5 and d["test"] <= 1e-6 and d["epochs"] <= 1e-6


def test_knowledge_party_killed_mid_run(fed, reference, tmp_path):
    start_and_kill(fed, "kill-kp", fed.kp)
    fed.wait_state(lambda s: s["state"] == "training-paused", what="the run to pause")
    fed.kp.start()
    finish_and_compare(fed, "kill-kp", reference, tmp_path)
    agg = fed.aggregator.text()
    assert "event=rolled_back run=kill-kp" in agg and "event=run_resumed run=kill-kp" in agg
    setups = [l for l in fed.kp.text().splitlines() if "event=run_setup run=kill-kp" in l]
    assert setups and "step=0" not in setups[-1], setups


def test_aggregator_killed_mid_run(fed, reference, tmp_path):
    start_and_kill(fed, "kill-agg", fed.aggregator)
    time.sleep(0.5)
    fed.aggregator.start()
    finish_and_compare(fed, "kill-agg", reference, tmp_path)
    assert "event=run_resuming run=kill-agg" in fed.aggregator.text()


def test_image_party_killed_mid_run(fed, reference, tmp_path):
    party = fed.images["hosp-b"]
    start_and_kill(fed, "kill-image", party)
    party.start()
    finish_and_compare(fed, "kill-image", reference, tmp_path)
    assert "event=image_party_left run=kill-image peer=hosp-b" in fed.aggregator.text()


def test_party_that_stays_away_fails_the_run_after_the_timeout(fed):
    fed.wait_parties(4)
    fed.cli("run", "start", *FLAGS, "--party-timeout-s", "2", "--run-id", "timeout")
    fed.wait_state(lambda s: s["run_id"] == "timeout" and s["step"] >= 5, what="training")
    fed.kp.kill9()
    t0 = time.time()
    p = fed.cli("run", "watch", "--run-id", "timeout", check=False)
    waited = time.time() - t0
    s = fed.status()
    print(f"failed after {waited:.1f} s: {s}")
    assert p.returncode == 1 and s["state"] == "failed"
    st = json.loads(fed.cli("status", "--json").stdout)
    assert st["state"] == "failed"
    human = fed.cli("status").stdout
    assert "knowledge party 'derm'" in human and "party_timeout_s" in human
    fed.kp.start()
