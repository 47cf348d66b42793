"""Interop of the C gRPC transport (common/rpc) with Python grpcio, both ways,
over mutual TLS with certificates from `vflclip provision`:
  - a grpcio client calls `vflclip rpc-test serve` (unary, server-stream,
    bidi, status codes, deadlines, cancellation, the real Admin/Federation
    services);
  - `vflclip rpc-test call` (our client) calls a grpcio server.
Payloads are checked byte for byte against what the other side must have
sent (pattern() re-derived here, crc32 from zlib)."""
import concurrent.futures
import json
import os
import queue
import threading
import time
import zlib

import grpc
import pytest

from conftest import run
from test_grpc_support import GRPC_OPTS, RpcServer, channel, pattern, pki, stubs  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def server(vflclip, pki):
    s = RpcServer(vflclip, pki.server)
    yield s
    assert s.stop() == 0


# ---- grpcio client -> our server ------------------------------------------------


def test_grpcio_unary_to_our_server(stubs, pki, server):
    payload = os.urandom(200_000)
    with channel(pki.hosp1, server.port) as ch:
        st = stubs.pbg.RpcTestStub(ch)
        r = st.Unary(stubs.pb.EchoRequest(payload=payload, text="héllo ✓"), timeout=10)
        assert r.payload == payload and r.text == "héllo ✓"
        # the server read role and name from the client certificate
        assert (r.peer_role, r.peer_name) == ("image-party", "hosp1")
        msg = "précondition ✗ 100% failed"
        with pytest.raises(grpc.RpcError) as e:
            st.Unary(stubs.pb.EchoRequest(fail_code=9, fail_message=msg), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and e.value.details() == msg
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/vflclip.v1.test.RpcTest/NoSuchMethod")(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpcio_server_stream_from_our_server(stubs, pki, server):
    n, size = 40, 70_000
    with channel(pki.hosp2, server.port) as ch:
        got = list(stubs.pbg.RpcTestStub(ch).ServerStream(stubs.pb.StreamRequest(count=n, size=size), timeout=30))
    assert [m.seq for m in got] == list(range(n))
    bad = [m.seq for m in got if m.payload != pattern(m.seq, size)]
    assert not bad, f"payload mismatch in messages {bad}"
    print(f"server-stream: {n} x {size} bytes, all equal")


def test_grpcio_bidi_ping_pong_with_our_server(stubs, pki, server):
    """Each request is sent only after the previous reply arrived, so the
    stream really is interactive (nothing is batched until half-close)."""
    q = queue.Queue()

    def requests():
        while True:
            item = q.get()
            if item is None:
                return
            yield item

    with channel(pki.kp, server.port) as ch:
        replies = stubs.pbg.RpcTestStub(ch).Bidi(requests(), timeout=30)
        for i in range(6):
            body = os.urandom(1000 * i)
            q.put(stubs.pb.EchoRequest(payload=body, text=f"m{i}"))
            r = next(replies)
            assert (r.seq, r.text, r.payload, r.peer_role) == (i, f"m{i}", body, "knowledge-party")
        q.put(None)
        assert list(replies) == []
    assert replies.code() == grpc.StatusCode.OK


def test_grpcio_deadline_and_cancel_reach_our_handler(stubs, pki, server):
    with channel(pki.hosp1, server.port) as ch:
        st = stubs.pbg.RpcTestStub(ch)
        t = time.time()
        with pytest.raises(grpc.RpcError) as e:
            st.Unary(stubs.pb.EchoRequest(delay_ms=3000), timeout=0.3)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.time() - t < 2.5
        # the handler was told: its call ended with a deadline or cancel status
        assert server.wait_log("method=/vflclip.v1.test.RpcTest/Unary status=DEADLINE_EXCEEDED") or server.wait_log(
            "method=/vflclip.v1.test.RpcTest/Unary status=CANCELLED"), server.log()[-2000:]
        it = st.ServerStream(stubs.pb.StreamRequest(count=100000, size=10, interval_ms=20), timeout=30)
        assert next(it).seq == 0 and next(it).seq == 1
        it.cancel()
        assert server.wait_log("method=/vflclip.v1.test.RpcTest/ServerStream status=CANCELLED"), server.log()[-2000:]


def test_grpcio_calls_the_real_services_by_role(stubs, pki, server):
    with channel(pki.admin, server.port) as ch:
        r = stubs.admin_grpc.AdminStub(ch).Status(stubs.admin.StatusRequest(), timeout=10)
    assert r.state == "rpc-test"
    hello = stubs.fed.PartyMessage(hello=stubs.fed.Hello(role=stubs.fed.ROLE_KNOWLEDGE_PARTY, name="kp"))
    with channel(pki.kp, server.port) as ch:
        replies = list(stubs.fed_grpc.FederationStub(ch).Join(iter([hello]), timeout=10))
    assert len(replies) == 1 and replies[0].WhichOneof("body") == "welcome"


# ---- our client -> grpcio server --------------------------------------------------


@pytest.fixture(scope="module")
def grpcio_server(stubs, pki):
    pb, pbg = stubs.pb, stubs.pbg
    codes = {c.value[0]: c for c in grpc.StatusCode}

    def peer(context):
        a = context.auth_context()
        return a.get("x509_common_name", [b"?"])[0].decode()

    class Servicer(pbg.RpcTestServicer):
        def Unary(self, req, context):
            if req.delay_ms:
                time.sleep(req.delay_ms / 1000)
            if req.fail_code:
                context.abort(codes[req.fail_code], req.fail_message)
            return pb.EchoReply(payload=req.payload, text=req.text, peer_name=peer(context))

        def ServerStream(self, req, context):
            for i in range(req.count):
                yield pb.EchoReply(seq=i, payload=pattern(i, req.size))

        def Bidi(self, reqs, context):
            for i, r in enumerate(reqs):
                yield pb.EchoReply(seq=i, payload=r.payload, text=r.text, peer_name=peer(context))

    srv = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4), options=GRPC_OPTS)
    pbg.add_RpcTestServicer_to_server(Servicer(), srv)
    creds = grpc.ssl_server_credentials(
        [(pki.server.key.read_bytes(), pki.server.cert.read_bytes())],
        root_certificates=pki.server.ca.read_bytes(),
        require_client_auth=True,
    )
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    yield port
    srv.stop(grace=1).wait()


def c_call(vflclip, kit, port, *args, host="localhost"):
    p = run([vflclip, "rpc-test", "call", "--target", f"{host}:{port}", *kit.args(), *args], check=False, timeout=60)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p, lines


def test_our_unary_to_grpcio(vflclip, pki, grpcio_server):
    p, lines = c_call(vflclip, pki.hosp1, grpcio_server, "--method", "unary", "--size", "50000", "--text", "hello")
    assert p.returncode == 0, p.stderr
    assert lines[-1]["status"] == 0, lines
    (r,) = lines[:-1]
    # grpcio read the client's CN from our certificate; the payload came back intact
    assert (r["len"], r["crc32"], r["text"], r["peer_name"]) == (50000, zlib.crc32(pattern(0, 50000)), "hello", "hosp1")
    # also dialled by IP: the server certificate's IP SAN is checked
    p, lines = c_call(vflclip, pki.hosp1, grpcio_server, "--method", "unary", host="127.0.0.1")
    assert lines[-1]["status"] == 0, p.stderr


def test_our_server_stream_and_bidi_from_grpcio(vflclip, pki, grpcio_server):
    n, size = 25, 100_000
    p, lines = c_call(vflclip, pki.hosp1, grpcio_server, "--method", "server-stream", "--count", str(n), "--size",
                      str(size))
    assert lines[-1]["status"] == 0, p.stderr
    assert [(m["seq"], m["len"], m["crc32"]) for m in lines[:-1]] == [
        (i, size, zlib.crc32(pattern(i, size))) for i in range(n)]
    p, lines = c_call(vflclip, pki.kp, grpcio_server, "--method", "bidi", "--count", "7", "--size", "3000",
                      "--text", "b")
    assert lines[-1]["status"] == 0, p.stderr
    assert [(m["seq"], m["crc32"], m["peer_name"]) for m in lines[:-1]] == [
        (i, zlib.crc32(pattern(i, 3000)), "kp") for i in range(7)]


def test_our_client_gets_status_and_deadline_from_grpcio(vflclip, pki, grpcio_server):
    msg = "nicht gefunden ✗ 50%"
    p, lines = c_call(vflclip, pki.hosp1, grpcio_server, "--method", "unary", "--fail-code", "5", "--fail-message", msg)
    assert (lines[-1]["status"], lines[-1]["message"]) == (5, msg), p.stdout
    t = time.time()
    p, lines = c_call(vflclip, pki.hosp1, grpcio_server, "--method", "unary", "--delay-ms", "3000", "--timeout-ms",
                      "300")
    assert lines[-1]["code"] == "DEADLINE_EXCEEDED" and time.time() - t < 2.5, p.stdout


def test_our_client_rejects_a_server_of_the_wrong_name(vflclip, pki, grpcio_server):
    p, lines = c_call(vflclip, pki.hosp1, grpcio_server, "--server-name", "aggregator.example.org")
    assert p.returncode == 3 and "connect_error" in lines[0], p.stdout + p.stderr
    print("refused:", lines[0]["connect_error"])


def test_our_client_flow_control_bounds_what_a_paused_call_holds(vflclip, pki, grpcio_server):
    """grpcio streams 40 MiB while our call stops taking messages for 1.5 s:
    what we hold stays within the 4 MiB stream window (grpcio stops sending
    because we do not acknowledge), then everything arrives intact."""
    n, size, window = 40, 1 << 20, 4 << 20
    p, lines = c_call(vflclip, pki.hosp1, grpcio_server, "--method", "server-stream", "--count", str(n), "--size",
                      str(size), "--pause-ms", "1500")
    assert lines and lines[-1]["status"] == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (pause,) = [m for m in lines if "max_held" in m]
    replies = [m for m in lines if "seq" in m]
    assert [(m["seq"], m["crc32"]) for m in replies] == [(i, zlib.crc32(pattern(i, size))) for i in range(n)]
    print(f"held at most {pause['max_held']} bytes while paused (window {window}, stream {n * size})")
    assert 0 < pause["max_held"] <= window


def test_our_client_refuses_a_server_that_is_not_the_aggregator(vflclip, stubs, pki, tmp_path):
    """Only the aggregator may serve.  A certificate from the federation CA for
    an image party, even one usable by a server (made here: serverAuth, CN
    localhost), is refused on its role."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from test_grpc_support import _issue, _write_kit

    ca_key = serialization.load_pem_private_key((pki.dir / "ca" / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate(pki.server.ca.read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert, key = _issue(ca.subject, ca_key, "localhost", "image-party", now - datetime.timedelta(days=1),
                       now + datetime.timedelta(days=1))
    kit = _write_kit(tmp_path / "party-as-server", pki.server.ca.read_bytes(), cert, key)
    srv = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2), options=GRPC_OPTS)
    stubs.pbg.add_RpcTestServicer_to_server(stubs.pbg.RpcTestServicer(), srv)
    creds = grpc.ssl_server_credentials([(kit.key.read_bytes(), kit.cert.read_bytes())],
                                        root_certificates=kit.ca.read_bytes(), require_client_auth=True)
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    try:
        p, lines = c_call(vflclip, pki.hosp1, port)
    finally:
        srv.stop(grace=0).wait()
    assert p.returncode == 3 and "not for the aggregator" in lines[0].get("connect_error", ""), p.stdout + p.stderr
    print("refused:", lines[0]["connect_error"])
