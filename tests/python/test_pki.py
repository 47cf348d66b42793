"""test_pki: `vflclip provision` and `vflclip cert show|revoke|crl`, checked
with tools that share no code with ours: the openssl command line and Python
cryptography (its own X.509 parser, its own key-identifier computation).

One federation is provisioned per module and only read; tests that change a
federation (re-running provision, revoking) make their own."""
import datetime
import ipaddress
import math
import os
import re
import shutil
import socket
import stat
import subprocess
import time
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from conftest import run

OPENSSL = shutil.which("openssl")
if OPENSSL is None:
    pytest.skip("SKIP: the openssl command is absent; these tests compare against it", allow_module_level=True)

AGGREGATOR = "localhost,agg.example,127.0.0.1,::1"
KITS = [("aggregator", "localhost"), ("image-party", "hosp-a"), ("image-party", "hosp-b"),
        ("knowledge-party", "derm"), ("admin", "alice")]
DAY = 86400


def provision(vflclip, out, *args):
    return run([vflclip, "provision", "--out", out, *args])


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    out = tmp_path_factory.mktemp("pki") / "fed"
    provision(vflclip, out, "--aggregator", AGGREGATOR, "--image-party", "hosp-a", "hosp-b",
              "--knowledge-party", "derm", "--admin", "alice")
    return out


def kit(fed, role, name):
    return fed / f"{role}-{name}"


def load_cert(path):
    """Parses with cryptography, turning its warnings (e.g. the RFC 5758
    NULL-parameter one) into failures."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return x509.load_pem_x509_certificate(path.read_bytes())


def openssl(*args, check=True):
    return run([OPENSSL, *args], check=check)


def only(name, oid):
    attrs = name.get_attributes_for_oid(oid)
    assert len(attrs) == 1, f"{name.rfc4514_string()}: {len(attrs)} attributes {oid._name}"
    return attrs[0].value


def test_chain_and_purpose_validate_with_openssl(fed):
    ca = fed / "ca" / "ca.crt"
    for role, name in KITS:
        cert = kit(fed, role, name) / "cert.pem"
        purpose = "sslserver" if role == "aggregator" else "sslclient"
        p = openssl("verify", "-CAfile", ca, "-purpose", purpose, cert)
        assert p.stdout.strip() == f"{cert}: OK"
        # The other purpose must fail: a party cannot serve, the aggregator cannot be a client.
        other = "sslclient" if role == "aggregator" else "sslserver"
        p = openssl("verify", "-CAfile", ca, "-purpose", other, cert, check=False)
        assert p.returncode != 0 and "unsuitable certificate purpose" in p.stdout + p.stderr
        assert (kit(fed, role, name) / "ca.crt").read_bytes() == ca.read_bytes()


def test_ca_certificate(fed):
    ca = load_cert(fed / "ca" / "ca.crt")
    ca.verify_directly_issued_by(ca)
    assert ca.subject == ca.issuer
    assert only(ca.subject, NameOID.ORGANIZATION_NAME) == "vflclip federation"
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    assert ca.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    lifetime = ca.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert abs(lifetime.total_seconds() - 3650 * DAY) < 3600, lifetime
    key = serialization.load_pem_private_key((fed / "ca" / "ca.key").read_bytes(), None)
    assert key.public_key().public_numbers() == ca.public_key().public_numbers()


def test_participant_certificates(fed):
    ca = load_cert(fed / "ca" / "ca.crt")
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    serials = set()
    now = datetime.datetime.now(datetime.timezone.utc)
    for role, name in KITS:
        d = kit(fed, role, name)
        c = load_cert(d / "cert.pem")
        c.verify_directly_issued_by(ca)
        assert only(c.subject, NameOID.COMMON_NAME) == name
        assert only(c.subject, NameOID.ORGANIZATIONAL_UNIT_NAME) == role
        assert only(c.subject, NameOID.ORGANIZATION_NAME) == "vflclip federation"
        assert c.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        assert c.version == x509.Version.v3
        assert c.serial_number.bit_length() >= 64
        serials.add(c.serial_number)
        assert abs((c.not_valid_after_utc - now).total_seconds() - 825 * DAY) < 3600
        assert c.not_valid_before_utc <= now

        bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and not bc.value.ca
        ku = c.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature
        assert not (ku.value.key_cert_sign or ku.value.crl_sign or ku.value.key_encipherment)
        eku = list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert eku == ([ExtendedKeyUsageOID.SERVER_AUTH] if role == "aggregator" else [ExtendedKeyUsageOID.CLIENT_AUTH])
        aki = c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ca_ski
        ski = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(c.public_key()).digest

        if role == "aggregator":
            san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.DNSName) == ["localhost", "agg.example"]
            assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
            text = openssl("x509", "-in", d / "cert.pem", "-noout", "-text").stdout
            assert "TLS Web Server Authentication" in text and "IP Address:127.0.0.1" in text
        else:
            with pytest.raises(x509.ExtensionNotFound):
                c.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
            assert "TLS Web Client Authentication" in openssl("x509", "-in", d / "cert.pem", "-noout", "-text").stdout

        key = serialization.load_pem_private_key((d / "key.pem").read_bytes(), None)
        assert key.public_key().public_numbers() == c.public_key().public_numbers()
    assert len(serials) == len(KITS)


def test_key_files_are_private(fed):
    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)
    assert mode(fed / "ca" / "ca.key") == 0o600
    assert mode(fed / "ca") == 0o700
    for role, name in KITS:
        d = kit(fed, role, name)
        assert mode(d / "key.pem") == 0o600, d
        assert mode(d) == 0o700, d
    leftovers = [p for p in fed.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def read_ini(path):
    import configparser
    cp = configparser.ConfigParser(inline_comment_prefixes=None, comment_prefixes=(";",))
    cp.read(path)
    return cp


def test_starter_configs(fed):
    for role, name in KITS:
        d = kit(fed, role, name)
        cp = read_ini(d / f"{role}.ini")
        for k in ("cert", "key", "ca", "crl"):
            assert (d / cp["tls"][k]).is_file(), (d, k)
        if role == "aggregator":
            assert cp["server"]["port"] == "50051"
        else:
            agg = cp["aggregator"]
            assert (agg["host"], agg["port"], agg["server_name"]) == ("localhost", "50051", "localhost")
        if role == "image-party":
            assert "path" in cp["data"] and "dir" in cp["model"]
        if role == "knowledge-party":
            assert "dir" in cp["model"]


def test_rerun_adds_participants_with_the_same_ca(vflclip, tmp_path):
    out = tmp_path / "fed"
    provision(vflclip, out, "--aggregator", "localhost,127.0.0.1", "--image-party", "hosp-a")
    before = {p: p.read_bytes() for p in [out / "ca" / "ca.crt", out / "ca" / "ca.key",
                                          out / "image-party-hosp-a" / "key.pem", out / "image-party-hosp-a" / "cert.pem"]}
    p = provision(vflclip, out, "--image-party", "hosp-a", "hosp-c", "--admin", "bob")
    assert "kept" in p.stdout and "image-party-hosp-a" in p.stdout
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path} changed on re-run"
    assert sorted(x.name for x in out.iterdir()) == ["admin-bob", "aggregator-localhost", "ca", "federation.ini",
                                                   "image-party-hosp-a", "image-party-hosp-c"]
    ca = load_cert(out / "ca" / "ca.crt")
    for d in ("image-party-hosp-c", "admin-bob"):
        assert openssl("verify", "-CAfile", out / "ca" / "ca.crt", out / d / "cert.pem").stdout.strip().endswith(": OK")
        load_cert(out / d / "cert.pem").verify_directly_issued_by(ca)
        assert (out / d / "ca.crt").read_bytes() == before[out / "ca" / "ca.crt"]
    cp = read_ini(out / "image-party-hosp-c" / "image-party.ini")
    assert cp["aggregator"]["host"] == "localhost"


def test_provision_refuses_bad_requests(vflclip, tmp_path):
    out = tmp_path / "fed"
    p = run([vflclip, "provision", "--out", out, "--image-party", "hosp-a"], check=False)
    assert p.returncode == 1 and "--aggregator" in p.stderr
    assert not (out / "ca").exists()
    for bad in (["--aggregator", "10.0.0.1,agg"], ["--aggregator", "agg", "--admin", "../x"],
                ["--aggregator", "agg", "--image-party", "a", "a"], ["--aggregator", "agg", "--days", "0"]):
        p = run([vflclip, "provision", "--out", out, *bad], check=False)
        assert p.returncode == 2, (bad, p.stderr)
        assert p.stderr.strip().splitlines()[0].startswith("vflclip provision: ")
    assert not out.exists()


def parse_show(text):
    """`cert show` prints "key:  value" lines; returns a dict of the first block."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z ]+):\s+(.*)$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def openssl_time(s):
    return datetime.datetime.strptime(s.strip(), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=datetime.timezone.utc)


def show_time(s):
    return datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=datetime.timezone.utc)


def test_cert_show_agrees_with_openssl(vflclip, fed):
    for path in [kit(fed, "aggregator", "localhost") / "cert.pem", kit(fed, "image-party", "hosp-b") / "cert.pem",
                 fed / "ca" / "ca.crt"]:
        t0 = time.time()
        shown = parse_show(run([vflclip, "cert", "show", path]).stdout)
        t1 = time.time()
        o = openssl("x509", "-in", path, "-noout", "-serial", "-startdate", "-enddate", "-subject", "-issuer").stdout
        ref = dict(line.split("=", 1) for line in o.strip().splitlines())
        assert shown["serial"] == ref["serial"]
        assert show_time(shown["not before"]) == openssl_time(ref["notBefore"])
        assert show_time(shown["not after"]) == openssl_time(ref["notAfter"])
        assert shown["subject"] == ref["subject"].replace(" = ", "=")
        assert shown["issuer"] == ref["issuer"].replace(" = ", "=")
        c = load_cert(path)
        end = c.not_valid_after_utc.timestamp()
        # The tool counts whole seconds (time(NULL)), as the certificate does.
        assert int(shown["days left"]) in {math.floor((end - math.floor(t)) / DAY) for t in (t0, t1)}
        if c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            assert shown["role"].startswith("none") and shown["ca"] == "yes"
            continue
        assert shown["role"] == only(c.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
        assert shown["name"] == only(c.subject, NameOID.COMMON_NAME)
        try:
            san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            assert "alt names" not in shown
            continue
        want = [f"DNS:{v}" for v in san.get_values_for_type(x509.DNSName)] + \
               [f"IP:{v}" for v in san.get_values_for_type(x509.IPAddress)]
        got = []
        for item in shown["alt names"].split(", "):
            kind, value = item.split(":", 1)
            got.append(f"IP:{ipaddress.ip_address(value)}" if kind == "IP" else item)
        assert got == want
    p = run([vflclip, "cert", "show", fed / "federation.ini"], check=False)
    assert p.returncode == 1 and "federation.ini" in p.stderr and "neither a certificate nor a revocation list" in p.stderr


def crl_number(crl):
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def openssl_crl_check(fed, cert):
    return openssl("verify", "-crl_check", "-CAfile", fed / "ca" / "ca.crt", "-CRLfile", fed / "ca" / "crl.pem", cert,
                   check=False)


def test_revocation(vflclip, tmp_path):
    out = tmp_path / "fed"
    provision(vflclip, out, "--aggregator", "localhost", "--image-party", "hosp-a", "hosp-b", "--admin", "alice")
    ca = load_cert(out / "ca" / "ca.crt")
    certs = {d: out / d / "cert.pem" for d in ("aggregator-localhost", "image-party-hosp-a", "image-party-hosp-b", "admin-alice")}
    for cert in certs.values():  # the initial, empty list is valid and revokes nothing
        assert openssl_crl_check(out, cert).returncode == 0
    first = x509.load_pem_x509_crl((out / "ca" / "crl.pem").read_bytes())
    assert first.is_signature_valid(ca.public_key()) and len(list(first)) == 0

    p = run([vflclip, "cert", "revoke", "--ca", out / "ca", "--cert", certs["image-party-hosp-a"]])
    assert "revoked serial" in p.stdout
    alice_serial = openssl("x509", "-in", certs["admin-alice"], "-noout", "-serial").stdout.strip().split("=")[1]
    run([vflclip, "cert", "revoke", "--ca", out / "ca", "--serial", alice_serial.lower()])
    p = run([vflclip, "cert", "revoke", "--ca", out / "ca", "--cert", certs["image-party-hosp-a"]])
    assert "already revoked" in p.stdout

    for d, cert in certs.items():
        r = openssl_crl_check(out, cert)
        if d in ("image-party-hosp-a", "admin-alice"):
            assert r.returncode != 0 and "certificate revoked" in r.stdout + r.stderr, (d, r.stdout, r.stderr)
        else:
            assert r.returncode == 0, (d, r.stdout, r.stderr)

    crl_bytes = (out / "ca" / "crl.pem").read_bytes()
    crl = x509.load_pem_x509_crl(crl_bytes)
    assert crl.is_signature_valid(ca.public_key())
    assert crl.issuer == ca.subject
    assert crl.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert crl_number(crl) > crl_number(first)
    revoked = {r.serial_number for r in crl}
    assert revoked == {load_cert(certs["image-party-hosp-a"]).serial_number, load_cert(certs["admin-alice"]).serial_number}
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((crl.next_update_utc - now).total_seconds() - 365 * DAY) < 3600
    for d in certs:  # every kit got the new list
        assert (out / d / "crl.pem").read_bytes() == crl_bytes, d

    shown = run([vflclip, "cert", "show", out / "ca" / "crl.pem"]).stdout
    shown_serials = set(re.findall(r"serial ([0-9A-F]+)\s+revoked", shown))
    ref_serials = set(re.findall(r"Serial Number: ([0-9A-F]+)", openssl("crl", "-in", out / "ca" / "crl.pem", "-noout", "-text").stdout))
    assert shown_serials == ref_serials and len(ref_serials) == 2

    # Re-signing keeps the entries and moves next-update.
    run([vflclip, "cert", "crl", "--ca", out / "ca", "--crl-days", "5"])
    resigned = x509.load_pem_x509_crl((out / "ca" / "crl.pem").read_bytes())
    assert resigned.is_signature_valid(ca.public_key())
    assert {r.serial_number for r in resigned} == revoked
    assert crl_number(resigned) > crl_number(crl)
    assert abs((resigned.next_update_utc - now).total_seconds() - 5 * DAY) < 3600
    assert openssl_crl_check(out, certs["image-party-hosp-a"]).returncode != 0

    # A certificate from another federation's CA is refused.
    other = tmp_path / "other"
    provision(vflclip, other, "--aggregator", "localhost", "--admin", "mallory")
    p = run([vflclip, "cert", "revoke", "--ca", out / "ca", "--cert", other / "admin-mallory" / "cert.pem"], check=False)
    assert p.returncode == 1 and "different CA" in p.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def handshake(server_kit, client_kit, ca, extra=()):
    """openssl s_server with server_kit's certificate, requiring a client
    certificate from the CA; s_client with client_kit (None: no certificate).
    Returns (client returncode, client output)."""
    port = free_port()
    server = subprocess.Popen([OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", server_kit / "cert.pem",
                               "-key", server_kit / "key.pem", "-CAfile", ca, "-Verify", "1", "-verify_return_error",
                               "-naccept", "1", *extra],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 10
        while True:
            line = server.stdout.readline()
            if "ACCEPT" in line:
                break
            assert line and time.time() < deadline, "s_server did not start"
        cmd = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", ca, "-verify_return_error",
               "-verify_hostname", "localhost", "-brief", *extra]
        if client_kit is not None:
            cmd += ["-cert", client_kit / "cert.pem", "-key", client_kit / "key.pem"]
        c = subprocess.run([str(x) for x in cmd], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
        return c.returncode, c.stdout + c.stderr
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_tls_handshake_with_openssl(fed, tls):
    extra = ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"] if tls == "1.2" else ["-tls1_3"]
    ca = fed / "ca" / "ca.crt"
    agg = kit(fed, "aggregator", "localhost")
    rc, out = handshake(agg, kit(fed, "image-party", "hosp-b"), ca, extra)
    assert rc == 0 and "Verification: OK" in out and "CONNECTION ESTABLISHED" in out, out
    assert f"TLSv{tls}" in out, out


def test_tls_handshake_refusals(vflclip, fed, tmp_path):
    ca = fed / "ca" / "ca.crt"
    agg = kit(fed, "aggregator", "localhost")
    # TLS 1.2 so that the server's refusal of the client lands inside the handshake.
    tls12 = ["-tls1_2"]
    rc, out = handshake(agg, None, ca, tls12)
    assert rc != 0 and "alert handshake failure" in out, out
    # A client certificate from another federation's CA.
    other = tmp_path / "other"
    provision(vflclip, other, "--aggregator", "localhost", "--admin", "mallory")
    rc, out = handshake(agg, other / "admin-mallory", ca, tls12)
    assert rc != 0 and "alert unknown ca" in out, out
    # A party's certificate (clientAuth only) cannot pose as the aggregator.
    rc, out = handshake(kit(fed, "image-party", "hosp-a"), kit(fed, "image-party", "hosp-b"), ca, tls12)
    assert rc != 0 and "unsuitable certificate purpose" in out, out
