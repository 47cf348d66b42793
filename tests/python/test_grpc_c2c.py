"""Our client against our server with messages of many TLS records: our
sender puts one DATA frame (header and payload) in one TLS record, which
grpcio's does not, so these record and frame boundaries are seen only when
both ends are ours.  Payloads are checked against pattern() re-derived here,
crc32 from zlib; sizes are chosen so that messages start and end
mid-record."""
import json
import os
import re
import zlib

import pytest

from conftest import run
from test_grpc_support import RpcServer, pattern, pki  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def server(vflclip, pki):
    s = RpcServer(vflclip, pki.server, "--max-message", str(4 << 20))
    yield s
    assert s.stop() == 0


def c_call(vflclip, kit, port, *args):
    p = run([vflclip, "rpc-test", "call", "--target", f"localhost:{port}", *kit.args(), "--max-message",
             str(4 << 20), *args], check=False, timeout=60)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1].get("status") == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return lines


@pytest.mark.parametrize("size", [1 << 20, 1_000_003, 16_375 * 3])
def test_server_stream_of_many_records_arrives_intact(vflclip, pki, server, size):
    n = 12
    lines = c_call(vflclip, pki.hosp1, server.port, "--method", "server-stream", "--count", str(n), "--size", str(size))
    got = [(m["seq"], m["len"], m["crc32"]) for m in lines if "seq" in m]
    assert got == [(i, size, zlib.crc32(pattern(i, size))) for i in range(n)]
    print(f"{n} x {size} bytes, all equal")


def test_paused_stream_resumes_intact(vflclip, pki, server):
    """A pause mid-stream sends DATA to the held buffer instead (no in-place decryption), then back."""
    n, size = 20, 1_000_003
    lines = c_call(vflclip, pki.hosp1, server.port, "--method", "server-stream", "--count", str(n), "--size", str(size),
                   "--pause-ms", "300")
    (pause,) = [m for m in lines if "max_held" in m]
    got = [(m["seq"], m["crc32"]) for m in lines if "seq" in m]
    assert got == [(i, zlib.crc32(pattern(i, size))) for i in range(n)]
    print(f"held at most {pause['max_held']} bytes while paused")
    assert pause["max_held"] > 0


def test_bidi_echo_of_large_messages_both_ways(vflclip, pki, server):
    """Requests of many records reach our server and come back: both receive paths."""
    n, size = 6, 700_001
    lines = c_call(vflclip, pki.kp, server.port, "--method", "bidi", "--count", str(n), "--size", str(size))
    got = [(m["seq"], m["len"], m["crc32"]) for m in lines if "seq" in m]
    assert got == [(i, size, zlib.crc32(pattern(i, size))) for i in range(n)]


def test_records_are_sealed_by_mbedtls_alone(vflclip):
    """The transport keeps no record layer of its own (issue 13): nothing in
    the library refers to OpenSSL's libcrypto (EVP_*, OPENSSL_*), so every
    record these tests and the interop tests exchange went through mbedTLS."""
    lib = os.path.join(os.path.dirname(vflclip), "libvflclip.a")
    assert os.path.exists(lib), f"{lib} is missing: run `make` first"
    undefined = run(["nm", "-u", "-A", lib]).stdout.split("\n")
    crypto = sorted({ln.strip() for ln in undefined if re.search(r"\b(EVP_|OPENSSL_|CRYPTO_)\w+$", ln)})
    assert not crypto, "libcrypto symbols used by:\n" + "\n".join(crypto[:20])
    assert any(re.search(r":conn\.o:\s+U mbedtls_ssl_read$", ln) for ln in undefined), "conn.o does not read with mbedTLS"
