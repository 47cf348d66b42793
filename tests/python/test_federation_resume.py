"""Durable state: each daemon is killed with SIGKILL in the middle of a run
and started again; the run carries on from the last step both the aggregator
and the knowledge party committed, and its final context and metrics equal
those of an uninterrupted run (`vflclip train` in one process, which
test_federation.py shows the federation reproduces).  A party that stays
away fails the run after party_timeout_s with a status naming it."""
import json
import time

import pytest

from test_federation_support import compare_runs, running, single_reference

FLAGS = ["--epochs", "16", "--batch-size", "8", "--lr", "0.01", "--n-ctx", "4", "--seed", "7",
         "--template", "a photo of {ctx} {class}."]
KILL_AT = 30          # steps; 12 steps per epoch, 192 in all


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    yield from running(vflclip, tmp_path_factory, "resume")


@pytest.fixture(scope="module")
def reference(fed, tmp_path_factory):
    return single_reference(fed, tmp_path_factory, FLAGS)


def start_and_kill(fed, run_id, victim):
    fed.wait_parties(4)                      # a party restarted by the test before may still be dialling
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


def flip_byte(path, where):
    """Damages one byte of a state file in place, as a torn write or a bad disk would."""
    b = bytearray(path.read_bytes())
    i = where if where >= 0 else len(b) + where
    b[i] ^= 0x5A
    path.write_bytes(bytes(b))


def test_damaged_progress_falls_back_to_the_commit_before(fed, reference, tmp_path):
    """A kill -9 of the aggregator, then its progress.json damaged: the run
    resumes from progress.json.prev (the commit before, whose knowledge-party
    checkpoint is still kept), says so, and ends as an uninterrupted run."""
    start_and_kill(fed, "bad-progress", fed.aggregator)
    progress = fed.fed / "aggregator-localhost" / "state" / "runs" / "bad-progress" / "progress.json"
    assert (progress.parent / "progress.json.prev").exists()
    text = progress.read_text()
    progress.write_text(text.replace('"global_step":\t', '"global_step":\t1', 1))   # still JSON, wrong number
    fed.aggregator.start()
    finish_and_compare(fed, "bad-progress", reference, tmp_path)
    agg = fed.aggregator.text()
    assert "event=progress_damaged" in agg and "does not match its sha256 checksum" in agg


def test_damaged_checkpoint_of_the_knowledge_party_falls_back_one_commit(fed, reference, tmp_path):
    """The knowledge party's newest checkpoint damaged while it is down: it
    refuses to restore it (checksum), the aggregator goes back one commit,
    and the run ends as an uninterrupted run."""
    start_and_kill(fed, "bad-ckpt", fed.kp)
    fed.wait_state(lambda s: s["state"] == "training-paused", what="the run to pause")
    progress = fed.fed / "aggregator-localhost" / "state" / "runs" / "bad-ckpt" / "progress.json"
    committed = json.loads(progress.read_text())["committed_step"]
    ckpt = fed.fed / "knowledge-party-derm" / "state" / "runs" / "bad-ckpt" / f"kp-{committed}.safetensors"
    print("damaging", ckpt.name, "of", sorted(p.name for p in ckpt.parent.glob("kp-*")))
    flip_byte(ckpt, -3)                      # inside the data section
    fed.kp.start()
    finish_and_compare(fed, "bad-ckpt", reference, tmp_path)
    assert "event=fell_back run=bad-ckpt" in fed.aggregator.text()
    assert "does not match the file's checksum" in fed.aggregator.text()


def test_unreadable_state_is_shown_as_needing_attention(fed, tmp_path):
    """Both copies of the progress damaged: the aggregator does not quietly
    forget the run; status names it, as failed, with the reason."""
    start_and_kill(fed, "bad-both", fed.aggregator)
    run_dir = fed.fed / "aggregator-localhost" / "state" / "runs" / "bad-both"
    for name in ("progress.json", "progress.json.prev"):
        flip_byte(run_dir / name, 10)
    fed.aggregator.start()
    s = fed.wait_state(lambda s: s["run_id"] == "bad-both", what="the damaged run in status")
    human = fed.cli("status").stdout
    print(human)
    assert s["state"] == "failed" and "needs attention: cannot resume" in human and "progress.json" in human
