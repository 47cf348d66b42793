"""The run transcript (common/transcript): a real federation (three image
parties, knowledge party, aggregator) trains; `vflclip run results` brings
transcript.jsonl.  Checked independently in Python: the hash chain
recomputed with hashlib, the ECDSA P-256 signature of the head verified with
`cryptography` against the aggregator's certificate, and that certificate
issued by the federation CA; every party's own log holds exactly the
digests the transcript lists for it.  Then `vflclip transcript verify`
accepts the files and refuses each tampering with one byte: in an entry
(chain), in the signature, in a party's log (disagreement); and a signature
checked against another CA or another party's certificate.  It also refuses
a transcript that does not cover the whole run, even re-chained and
re-signed with the aggregator's own key (as by whoever holds it): cut at the
end (no run_end record; or a forged one, which the knowledge party's log
exposes), cut at the start (no run_start; or a forged one, exposed by the
party log), and a party log of another run."""
import base64
import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from conftest import run
from test_federation_support import HOSPITALS, RUN_FLAGS, Federation, set_key

MAGIC = "vflclip transcript v1|"


@pytest.fixture(scope="module")
def finished(vflclip, tmp_path_factory):
    root = tmp_path_factory.mktemp("transcript")
    fed = Federation(vflclip, root)
    for key, value in (("embed_clip", 10.0), ("embed_noise", 0.5)):   # one hospital with embedding DP
        set_key(fed.images["hosp-c"].ini, "privacy", key, value)
    fed.start()
    try:
        p = fed.cli("run", "start", *RUN_FLAGS, "--run-id", "signed", "--watch")
        assert json.loads(p.stdout.splitlines()[-1])["state"] == "done", p.stderr
        out = fed.results("signed", root / "results")
    finally:
        fed.stop()
    logs = {d.name: next((d.ini.parent).rglob("party-log.jsonl")) for d in [fed.kp, *fed.images.values()]}
    return fed, out / "transcript.jsonl", logs


def lines(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_chain_signature_and_party_logs_check_independently(finished):
    fed, tpath, logs = finished
    rows = lines(tpath)
    head_line, entries, end = rows[0], rows[1:-1], rows[-1]
    run_id = head_line["run"]
    agg_serial = entries[0]["sender"]
    assert entries[0]["kind"] == "run_start" and entries[0]["receiver"] == "-"
    assert entries[-1]["kind"] == "run_end" and entries[-1]["sender"] == agg_serial
    # every party's log names the run before its first message of the run
    for name, log in logs.items():
        assert {"run": run_id} in lines(log), name
    h = hashlib.sha256((MAGIC + run_id).encode()).digest()
    for i, e in enumerate(entries, start=1):
        assert e["seq"] == i
        text = f"{e['seq']}|{e['sender']}|{e['receiver']}|{e['task']}|{e['kind']}|{e['step']}|{e['sha256']}|{e['loss']}"
        h = hashlib.sha256(h + text.encode()).digest()
        assert e["chain"] == h.hex()
    assert end["head"] == h.hex() and end["entries"] == len(entries)
    cert = x509.load_der_x509_certificate(base64.b64decode(end["cert"]))
    agg = x509.load_pem_x509_certificate((fed.fed / "aggregator-localhost" / "cert.pem").read_bytes())
    assert cert == agg
    ca = x509.load_pem_x509_certificate((fed.fed / "aggregator-localhost" / "ca.crt").read_bytes())
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    signed = hashlib.sha256(f"{MAGIC}{run_id}|{len(entries)}|{end['head']}".encode()).digest()
    cert.public_key().verify(bytes.fromhex(end["signature"]), signed, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    kinds = {}
    for e in entries:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    steps = sum(e["steps"] for e in lines(tpath.parent / "metrics.jsonl"))
    # one TextBackward per step, each answered by TextFeatures, plus the set-up's and restore-best's
    assert kinds["text_backward"] == steps and kinds["text_features"] == steps + 2
    assert kinds["embeddings"] >= 3 * len(HOSPITALS) and kinds["encode_split"] == 3 * len(HOSPITALS)
    steps = [e for e in entries if e["kind"] == "text_backward"]
    assert steps and all(e["loss"] != "-" for e in steps)
    # every party's log holds, per direction, exactly the transcript's digests for it, in order
    for name, log in logs.items():
        rows_p = lines(log)
        serial = rows_p[0]["serial"]
        for direction, key in (("sent", "sender"), ("received", "receiver")):
            mine = [r["sha256"] for r in rows_p[1:] if r.get("dir") == direction]
            theirs = [e["sha256"] for e in entries if e[key] == serial]
            assert theirs, (name, direction)
            start = mine.index(theirs[0])
            assert mine[start:start + len(theirs)] == theirs, (name, direction)
    print(f"{len(entries)} messages {kinds}; chain, ECDSA signature (cryptography) and {len(logs)} party logs agree")


def verify(vflclip, *args):
    return run([vflclip, "transcript", "verify", *args], check=False)


def test_vflclip_verifies_and_refuses_one_byte_of_tampering(vflclip, finished, tmp_path):
    fed, tpath, logs = finished
    ca = fed.fed / "aggregator-localhost" / "ca.crt"
    all_logs = [a for log in logs.values() for a in ("--party-log", log)]
    p = verify(vflclip, tpath, "--ca", ca, "--cert", fed.fed / "aggregator-localhost" / "cert.pem", *all_logs)
    print(p.stdout.strip())
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("agrees with the transcript") == len(logs)

    def flip(src, dst, find_line, field):
        text = src.read_text().splitlines()
        i = next(k for k, l in enumerate(text) if find_line(l))
        row = json.loads(text[i])
        v = row[field]
        row[field] = v[:5] + ("0" if v[5] != "0" else "1") + v[6:]
        text[i] = json.dumps(row, separators=(",", ":"))
        dst.write_text("\n".join(text) + "\n")
        return i + 1

    chain = tmp_path / "chain.jsonl"
    line = flip(tpath, chain, lambda l: '"kind":"text_backward"' in l, "sha256")
    p = verify(vflclip, chain, "--ca", ca)
    print("chain:", p.stderr.strip())
    assert p.returncode == 1 and f"line {line}: the hash chain breaks" in p.stderr

    sig = tmp_path / "sig.jsonl"
    flip(tpath, sig, lambda l: '"end":true' in l, "signature")
    p = verify(vflclip, sig, "--ca", ca)
    print("signature:", p.stderr.strip())
    assert p.returncode == 1 and "signature does not verify" in p.stderr

    kp_log = tmp_path / "kp-log.jsonl"
    line = flip(logs["derm"], kp_log, lambda l: '"kind":"text_features"' in l, "sha256")
    p = verify(vflclip, tpath, "--ca", ca, "--party-log", kp_log)
    print("party log:", p.stderr.strip())
    assert p.returncode == 1 and str(kp_log) in p.stderr and ("disagrees" in p.stderr or "not in the party log" in p.stderr)

    other = tmp_path / "other-fed"
    run([vflclip, "provision", "--out", other, "--aggregator", "localhost", "--image-party", "x", "--knowledge-party", "k",
         "--admin", "a"])
    p = verify(vflclip, tpath, "--ca", other / "aggregator-localhost" / "ca.crt")
    print("other CA:", p.stderr.strip())
    assert p.returncode == 1 and "is not valid under" in p.stderr
    p = verify(vflclip, tpath, "--cert", fed.fed / "knowledge-party-derm" / "cert.pem")
    assert p.returncode == 1 and "not with the certificate" in p.stderr


def test_privacy_json_lists_each_image_partys_embedding_dp(finished):
    import dp_accounting as dp
    fed, tpath, logs = finished
    report = json.loads((tpath.parent / "privacy.json").read_text())
    embed = {e["party"]: e for e in report["embeddings"]}
    assert sorted(embed) == HOSPITALS
    acc = dp.rdp.RdpAccountant(orders=list(range(2, 65)) + [128, 256, 512, 1024])
    acc.compose(dp.GaussianDpEvent(0.5))
    ref = acc.get_epsilon(1e-5)
    print(f"hosp-c embeddings: clip {embed['hosp-c']['clip']}, noise {embed['hosp-c']['noise_multiplier']:.3g}, "
          f"epsilon {embed['hosp-c']['epsilon']:.6g} (dp-accounting {ref:.6g}); hosp-a/b: no embedding DP")
    assert embed["hosp-c"]["clip"] == 10.0 and abs(embed["hosp-c"]["epsilon"] - ref) <= 1e-9 * ref
    assert embed["hosp-a"]["clip"] == 0 and embed["hosp-a"]["epsilon"] == 0
    assert report["text_grad"]["epsilon"] is None and report["text_grad"]["steps"] > 0


def resign(fed, rows, entries, dst):
    """What the holder of the aggregator's key can do: renumber, re-chain
    and sign a transcript made of `entries`."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    run_id, end = rows[0]["run"], rows[-1]
    h = hashlib.sha256((MAGIC + run_id).encode()).digest()
    out = [json.dumps(rows[0], separators=(",", ":"))]
    for i, e in enumerate(entries, start=1):
        e = dict(e, seq=i)
        text = f"{e['seq']}|{e['sender']}|{e['receiver']}|{e['task']}|{e['kind']}|{e['step']}|{e['sha256']}|{e['loss']}"
        h = hashlib.sha256(h + text.encode()).digest()
        e["chain"] = h.hex()
        out.append(json.dumps(e, separators=(",", ":")))
    key = load_pem_private_key((fed.fed / "aggregator-localhost" / "key.pem").read_bytes(), None)
    signed = hashlib.sha256(f"{MAGIC}{run_id}|{len(entries)}|{h.hex()}".encode()).digest()
    sig = key.sign(signed, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    out.append(json.dumps(dict(end, entries=len(entries), head=h.hex(), signature=sig.hex()), separators=(",", ":")))
    dst.write_text("\n".join(out) + "\n")
    return dst


def own(entries, kind):
    return dict(entries[0], kind=kind, sha256="0" * 64)


def test_transcript_cut_at_the_end_is_refused_even_resigned(vflclip, finished, tmp_path):
    fed, tpath, logs = finished
    ca = fed.fed / "aggregator-localhost" / "ca.crt"
    rows = lines(tpath)
    entries = rows[1:-1]
    kp_serial = lines(logs["derm"])[0]["serial"]
    last_to_kp = max(i for i, e in enumerate(entries) if e["receiver"] == kp_serial)
    kept = entries[:last_to_kp]      # the knowledge party's last task and everything after it are gone
    p = verify(vflclip, resign(fed, rows, kept, tmp_path / "cut-end.jsonl"), "--ca", ca)
    print("cut at the end:", p.stderr.strip())
    assert p.returncode == 1 and "is not the run's end record" in p.stderr and "cut at the end" in p.stderr
    # with a forged run_end the transcript alone looks whole; the party's own log does not agree
    forged = resign(fed, rows, kept + [own(entries, "run_end")], tmp_path / "cut-end-forged.jsonl")
    p = verify(vflclip, forged, "--ca", ca)
    assert p.returncode == 0, p.stderr
    p = verify(vflclip, forged, "--ca", ca, "--party-log", logs["derm"])
    print("cut at the end, forged run_end:", p.stderr.strip())
    assert p.returncode == 1 and str(logs["derm"]) in p.stderr and "after the transcript's last message" in p.stderr


def test_transcript_cut_at_the_start_is_refused_even_resigned(vflclip, finished, tmp_path):
    fed, tpath, logs = finished
    ca = fed.fed / "aggregator-localhost" / "ca.crt"
    rows = lines(tpath)
    entries = rows[1:-1]
    kp_serial = lines(logs["derm"])[0]["serial"]
    first_to_kp = min(i for i, e in enumerate(entries) if e["receiver"] == kp_serial)
    kept = entries[first_to_kp + 1:]   # the start of the run, through the knowledge party's first message, is gone
    p = verify(vflclip, resign(fed, rows, kept, tmp_path / "cut-start.jsonl"), "--ca", ca)
    print("cut at the start:", p.stderr.strip())
    assert p.returncode == 1 and "does not start with the run's start record" in p.stderr
    forged = resign(fed, rows, [own(entries, "run_start")] + kept, tmp_path / "cut-start-forged.jsonl")
    assert verify(vflclip, forged, "--ca", ca).returncode == 0
    p = verify(vflclip, forged, "--ca", ca, "--party-log", logs["derm"])
    print("cut at the start, forged run_start:", p.stderr.strip())
    assert p.returncode == 1 and "lacks the start of the run" in p.stderr


def test_party_log_of_another_run_is_refused(vflclip, finished, tmp_path):
    fed, tpath, logs = finished
    ca = fed.fed / "aggregator-localhost" / "ca.crt"
    run_id = lines(tpath)[0]["run"]
    # the same party's log, as it would read had these messages belonged to another run
    other = tmp_path / "other-run-log.jsonl"
    other.write_text(logs["derm"].read_text().replace(json.dumps({"run": run_id}, separators=(",", ":")),
                                                      '{"run":"another-run"}'))
    assert other.read_text() != logs["derm"].read_text()
    p = verify(vflclip, tpath, "--ca", ca, "--party-log", other)
    print("another run's log:", p.stderr.strip())
    assert p.returncode == 1 and str(other) in p.stderr and f"names no message of run {run_id}" in p.stderr
    assert "another-run" in p.stderr


def test_aggregator_refuses_a_truncated_transcript_until_the_operator_decides(vflclip, tmp_path):
    """The aggregator is killed mid-run and its transcript loses its last
    lines (past the head mark of the last checkpoint).  Restarted, it refuses
    to go on, saying why and how to decide otherwise; with the operator's
    reason in <run>/transcript-continue it goes on, keeps the damaged file,
    audits the reason, and the finished transcript records the decision
    (verify names it; the party log of the knowledge party names the gap)."""
    fed = Federation(vflclip, tmp_path / "fed-root")
    fed.start()
    try:
        fed.cli("run", "start", "--epochs", "16", "--batch-size", "8", "--lr", "0.01", "--n-ctx", "4", "--seed", "7",
                "--checkpoint-every", "5", "--run-id", "cut")
        fed.wait_state(lambda s: s["run_id"] == "cut" and s["step"] >= 30, what="step 30")
        fed.aggregator.kill9()
        rundir = next(fed.fed.rglob("runs/cut"))
        tpath = rundir / "transcript.jsonl"
        text = tpath.read_text().splitlines(keepends=True)
        tpath.write_text("".join(text[:-25]))
        fed.aggregator.start()
        s = fed.wait_state(lambda s: s["run_id"] == "cut" and s["state"] == "failed", what="the refusal")
        shown = fed.cli("status").stdout      # the human status shows the run's message
        print("refused:", shown.strip())
        assert "cannot resume" in shown and "truncated" in shown and "transcript-continue" in shown
        assert "event=transcript_refused run=cut" in fed.aggregator.text()
        fed.aggregator.stop()
        (rundir / "transcript-continue").write_text("disk restored from the nightly backup; ticket 42\n")
        fed.aggregator.start()
        s = fed.wait_state(lambda s: s["run_id"] == "cut" and s["state"] in ("done", "failed", "aborted"), timeout=300,
                           what="the run to end")
        assert s["state"] == "done", s
        out = fed.results("cut", tmp_path / "results")
    finally:
        fed.stop()
    assert list(rundir.glob("transcript.jsonl.damaged-*")) and list(rundir.glob("transcript-continue.used-seq*"))
    assert not (rundir / "transcript-continue").exists()
    audit = "".join(p.read_text() for p in fed.fed.rglob("audit*.log"))
    assert "transcript_continue" in audit and "ticket 42" in audit
    rows = lines(out / "transcript.jsonl")
    decision = [r for r in rows if r.get("kind") == "operator_decision"]
    assert len(decision) == 1
    assert decision[0]["sha256"] == hashlib.sha256(b"disk restored from the nightly backup; ticket 42").hexdigest()
    ca = fed.fed / "aggregator-localhost" / "ca.crt"
    p = verify(vflclip, out / "transcript.jsonl", "--ca", ca)
    print(p.stdout.strip())
    assert p.returncode == 0 and f"operator decision(s) to go on over a truncated or damaged transcript, the first at seq " \
        f"{decision[0]['seq']}" in p.stdout
    kp_log = next((fed.fed / "knowledge-party-derm").rglob("party-log.jsonl"))
    p = verify(vflclip, out / "transcript.jsonl", "--ca", ca, "--party-log", kp_log)
    print("the gap, seen from the knowledge party:", p.stderr.strip())
    assert p.returncode == 1 and str(kp_log) in p.stderr
