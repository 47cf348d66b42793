"""Revocation and wrong certificates are visible (issue 14 item 5).

- `vflclip cert revoke` cuts the revoked party's open connection within
  seconds with no SIGHUP and no new connection (the RPC server polls the list
  file), and the audit log names who was cut (the handshakes refused after
  it are audited with the reason);
- the refused party logs one clear line ("certificate revoked by the
  federation CA"), stops redialling and stays up idle;
- `vflclip status` (text and --json) names the refused party with the reason;
- a daemon refuses a certificate of another role ("certificate role
  knowledge-party cannot join as image party"), at --check-config and at
  start, and --check-config refuses a key readable by others."""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import BUILD, run
from test_federation_support import Federation, set_key


def wait_for(pred, timeout, step=0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time() - t0
        time.sleep(step)
    return None


@pytest.fixture
def fed(vflclip, tmp_path):
    f = Federation(vflclip, tmp_path)
    yield f
    f.stop()


def variant_ini(fed, kit, name, **tls):
    """A copy of a kit's INI (same directory, so relative paths hold) with [tls] keys changed."""
    src = fed.images["hosp-a"].ini if kit == "image-party-hosp-a" else None
    dst = src.parent / name
    shutil.copy(src, dst)
    for k, v in tls.items():
        set_key(dst, "tls", k, v)
    return dst


def test_wrong_role_certificate_and_open_key_are_refused(fed):
    exe = str(BUILD / "vflclip-image-party")
    ok = run([exe, "--config", fed.images["hosp-a"].ini, "--check-config"], check=False, env=fed.env)
    assert ok.returncode == 0, ok.stderr
    kp_kit = fed.fed / "knowledge-party-derm"
    wrong = variant_ini(fed, "image-party-hosp-a", "wrong-role.ini", cert=kp_kit / "cert.pem", key=kp_kit / "key.pem")
    msg = "certificate role knowledge-party cannot join as image party"
    p = run([exe, "--config", wrong, "--check-config"], check=False, env=fed.env)
    assert p.returncode == 1 and msg in p.stderr, p.stderr
    p = run([exe, "--config", wrong], check=False, env=fed.env, timeout=60)   # a plain start refuses it too
    assert p.returncode == 1 and msg in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1, p.stderr                                  # one line
    key = fed.images["hosp-a"].ini.parent / "key.pem"
    open_key = key.parent / "key-open.pem"
    shutil.copy(key, open_key)
    os.chmod(open_key, 0o644)
    loose = variant_ini(fed, "image-party-hosp-a", "open-key.ini", key=open_key)
    p = run([exe, "--config", loose, "--check-config"], check=False, env=fed.env)
    assert p.returncode == 1 and "mode 644" in p.stderr and "group or others can read the private key" in p.stderr, \
        p.stderr
    os.chmod(open_key, 0o600)
    assert run([exe, "--config", loose, "--check-config"], check=False, env=fed.env).returncode == 0


def test_revocation_cuts_open_connection_and_is_visible(fed, vflclip):
    hosp = fed.images["hosp-a"]
    fed.aggregator.start()
    fed.kp.start()
    hosp.start()
    fed.wait_parties(2)
    assert wait_for(lambda: "event=welcome" in hosp.text(), 30), hosp.text()[-2000:]
    run([vflclip, "cert", "revoke", "--ca", fed.fed / "ca", "--cert", hosp.ini.parent / "cert.pem"])
    # no status call, no SIGHUP, no new connection: the server's own poll must find the new list
    took = wait_for(lambda: "is now revoked" in fed.aggregator.text(), 10)
    assert took is not None and took < 8, fed.aggregator.text()[-3000:]
    # the party: one clear line, then no more dialling, and still up (idle)
    line = "certificate revoked by the federation CA"
    assert wait_for(lambda: "event=refused_by_aggregator" in hosp.text(), 30), hosp.text()[-3000:]
    log = hosp.text()
    refusal = [l for l in log.splitlines() if "event=refused_by_aggregator" in l]
    assert len(refusal) == 1 and line in refusal[0] and "name=hosp-a" in refusal[0], refusal
    dials = log.count("event=redial_in")
    time.sleep(3)
    assert hosp.text().count("event=redial_in") == dials, hosp.text()[-2000:]
    assert hosp.text().count("event=refused_by_aggregator") == 1
    assert hosp.proc.poll() is None, "the refused party must stay up, idle"
    # status names it, with the reason
    s = fed.status()
    assert s["parties_connected"] == 1
    ref = {r["name"]: r for r in s["refused"]}
    assert "hosp-a" in ref and ref["hosp-a"]["role"] == "image-party" and line in ref["hosp-a"]["reason"], s["refused"]
    text = fed.cli("status").stdout
    assert "refused" in text and any("hosp-a" in l and line in l for l in text.splitlines()), text
    # the audit log: who was cut, and the refused handshakes naming the certificate
    audit = "\n".join(p.read_text() for p in fed.fed.rglob("audit.log"))
    assert "revoked_disconnected" in audit and "hosp-a" in audit, audit[-3000:]
    cut = [l for l in audit.splitlines() if "event=revoked_disconnected" in l]
    assert len(cut) == 1 and "name=hosp-a" in cut[0] and "role=image-party" in cut[0], audit[-3000:]
    assert any("handshake_refused" in l and "has been revoked" in l for l in audit.splitlines()), audit[-3000:]


def test_a_revoked_party_dialling_in_is_named_though_its_handshake_fails(fed, vflclip):
    """A party revoked while it was away never gets a connection: its
    handshake fails, and mbedTLS 2.28 keeps no refused certificate.  The
    aggregator reads the name while verifying it (only from a certificate
    the federation CA signed), so status and the audit log name hosp-b and
    say why; a self-signed certificate claiming a name is not named."""
    hosp = fed.images["hosp-b"]
    fed.aggregator.start()
    fed.kp.start()
    fed.wait_parties(1)
    reloads = fed.aggregator.text().count("event=rpc_crl_reloaded")
    run([vflclip, "cert", "revoke", "--ca", fed.fed / "ca", "--cert", hosp.ini.parent / "cert.pem"])
    assert wait_for(lambda: fed.aggregator.text().count("event=rpc_crl_reloaded") > reloads, 10), fed.aggregator.text()[-3000:]
    hosp.start()
    assert wait_for(lambda: any(r["name"] == "hosp-b" for r in fed.status()["refused"]), 30), fed.aggregator.text()[-3000:]
    ref = {r["name"]: r for r in fed.status()["refused"]}["hosp-b"]
    assert ref["role"] == "image-party" and "certificate revoked by the federation CA (handshake refused)" in ref["reason"], ref
    audit = "\n".join(p.read_text() for p in fed.fed.rglob("audit.log"))
    lines = [l for l in audit.splitlines() if "event=handshake_refused" in l and "name=hosp-b" in l]
    assert lines and "has been revoked" in lines[0], audit[-3000:]
    # hosp-c's name on a certificate of another CA: refused, and not named
    other = fed.root / "other"
    run([vflclip, "provision", "--out", other, "--aggregator", "localhost", "--image-party", "hosp-c"])
    impostor = fed.images["hosp-c"]
    for f in ("cert.pem", "key.pem"):
        shutil.copy(other / "image-party-hosp-c" / f, impostor.ini.parent / f)
    (impostor.ini.parent / "key.pem").chmod(0o600)
    impostor.start()
    assert wait_for(lambda: "not correctly signed by the trusted CA" in fed.aggregator.text(), 30), fed.aggregator.text()[-3000:]
    assert "hosp-c" not in {r["name"] for r in fed.status()["refused"]}
