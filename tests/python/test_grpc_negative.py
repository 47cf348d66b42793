"""Negative tests of the C gRPC server (`vflclip rpc-test serve`): bad
certificates, forbidden roles, non-TLS and garbage input, malformed gRPC
framing (hand-made HTTP/2 frames with the independent `h2` library), stalled
and idle connections, keepalive, CRL reload and graceful shutdown.  Each test
ends with a good client's round trip: the server still serves."""
import os
import signal
import socket
import ssl
import time
import urllib.parse

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from conftest import run
from test_grpc_support import Kit, RpcServer, channel, pki, stubs, unary_ok  # noqa: F401 (fixtures)

HANDSHAKE_MS, MAX_CONN, KEEPALIVE_MS = 1500, 8, 700
MAX_MESSAGE = 1 << 20


@pytest.fixture(scope="module")
def server(vflclip, pki):
    s = RpcServer(vflclip, pki.server, "--handshake-timeout-ms", HANDSHAKE_MS, "--max-connections", MAX_CONN,
                  "--keepalive-ms", KEEPALIVE_MS, "--keepalive-timeout-ms", KEEPALIVE_MS, "--max-message", MAX_MESSAGE)
    yield s
    assert s.stop() == 0


def expect_rejected(stubs, kit_creds, port, log_server, log_text):
    with grpc.secure_channel(f"localhost:{port}", kit_creds, options=[("grpc.enable_http_proxy", 0)]) as ch:
        with pytest.raises(grpc.RpcError) as e:
            stubs.pbg.RpcTestStub(ch).Unary(stubs.pb.EchoRequest(text="x"), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    assert log_server.wait_log(log_text), f"{log_text!r} not in the server log:\n{log_server.log()[-3000:]}"


def closed_by_peer(sock, timeout):
    """True when the peer closes (EOF or reset) within timeout seconds."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (socket.timeout, TimeoutError):
        return False
    except ssl.SSLError:
        return True


# ---- certificates -----------------------------------------------------------------


def test_no_client_certificate(stubs, pki, server):
    creds = grpc.ssl_channel_credentials(pki.hosp1.ca.read_bytes())
    expect_rejected(stubs, creds, server.port, server, "TLS handshake failed")
    unary_ok(stubs, pki.hosp1, server.port)


def test_certificate_from_another_ca(stubs, pki, server):
    expect_rejected(stubs, pki.foreign.creds(), server.port, server, "not correctly signed by the trusted CA")
    unary_ok(stubs, pki.hosp1, server.port)


def test_expired_certificate(stubs, pki, server):
    expect_rejected(stubs, pki.expired.creds(), server.port, server, "certificate validity has expired")
    unary_ok(stubs, pki.hosp1, server.port)


def test_revoked_certificate(stubs, pki, server):
    expect_rejected(stubs, pki.revoked.creds(), server.port, server, "has been revoked")
    unary_ok(stubs, pki.hosp2, server.port)


def test_revocation_list_reloaded_on_change_and_on_sighup(vflclip, stubs, tmp_path):
    d = tmp_path / "fed"
    run([vflclip, "provision", "--out", d, "--aggregator", "localhost", "--image-party", "a", "--image-party", "b",
         "--image-party", "c"])
    s = RpcServer(vflclip, Kit(d / "aggregator-localhost"))
    try:
        a, b, c = Kit(d / "image-party-a"), Kit(d / "image-party-b"), Kit(d / "image-party-c")
        ch_b = channel(b, s.port)
        st_b = stubs.pbg.RpcTestStub(ch_b)
        assert st_b.Unary(stubs.pb.EchoRequest(text="before"), timeout=10).peer_name == "b"
        unary_ok(stubs, a, s.port)
        # 1. the list file changes (every kit's crl.pem is rewritten): the next connection sees it
        run([vflclip, "cert", "revoke", "--ca", d / "ca", "--cert", a.cert])
        expect_rejected(stubs, a.creds(), s.port, s, "has been revoked")
        assert "event=rpc_crl_reloaded" in s.log() and "reason=changed" in s.log()
        # 2. SIGHUP reloads at once and cuts the open connection of a newly revoked peer
        run([vflclip, "cert", "revoke", "--ca", d / "ca", "--cert", b.cert])
        s.proc.send_signal(signal.SIGHUP)
        assert s.wait_log("is now revoked"), s.log()[-2000:]
        with pytest.raises(grpc.RpcError) as e:
            st_b.Unary(stubs.pb.EchoRequest(text="after"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        ch_b.close()
        unary_ok(stubs, c, s.port)
    finally:
        assert s.stop() == 0


def test_deleted_revocation_list_keeps_the_last_good_one(vflclip, stubs, tmp_path):
    """Deleting (or spoiling) the server's CRL must not un-revoke anyone: the
    last good list stays, with an ERROR at every reload while it is missing."""
    d = tmp_path / "fed"
    run([vflclip, "provision", "--out", d, "--aggregator", "localhost", "--image-party", "a", "--image-party", "b"])
    a, b = Kit(d / "image-party-a"), Kit(d / "image-party-b")
    run([vflclip, "cert", "revoke", "--ca", d / "ca", "--cert", a.cert])
    kit = Kit(d / "aggregator-localhost")
    s = RpcServer(vflclip, kit)
    try:
        expect_rejected(stubs, a.creds(), s.port, s, "has been revoked")
        kit.crl.unlink()
        # 1. the change is seen at the next connection: a is still refused
        expect_rejected(stubs, a.creds(), s.port, s, "event=rpc_crl_unusable")
        assert "the revocation list file is missing" in s.log() and "keeping the last good list" in s.log()
        assert s.log().count("has been revoked") >= 2, s.log()[-3000:]
        # 2. every SIGHUP while it is missing alarms again and keeps the list
        for i in range(2):
            s.proc.send_signal(signal.SIGHUP)
            assert s.wait_log_count("event=rpc_crl_unusable", 2 + i), s.log()[-3000:]
        assert "when=sighup" in s.log()
        expect_rejected(stubs, a.creds(), s.port, s, "has been revoked")
        # 3. a file that is not a list is no better than none
        kit.crl.write_text("not a revocation list\n")
        expect_rejected(stubs, a.creds(), s.port, s, "not a valid DER revocation list")
        assert s.log().count("has been revoked") >= 4, s.log()[-3000:]
        unary_ok(stubs, b, s.port)
        # 4. the good list back: used again
        kit.crl.write_bytes((d / "ca" / "crl.pem").read_bytes())
        unary_ok(stubs, b, s.port)
        assert s.wait_log("the list is usable again"), s.log()[-3000:]
        expect_rejected(stubs, a.creds(), s.port, s, "has been revoked")
    finally:
        assert s.stop() == 0


def test_unusable_revocation_list_can_refuse_everyone(vflclip, stubs, tmp_path):
    """crl_missing = refuse-all: while the list is missing nobody gets in and
    open connections are cut; a good list back restores service."""
    d = tmp_path / "fed"
    run([vflclip, "provision", "--out", d, "--aggregator", "localhost", "--image-party", "a", "--image-party", "b"])
    a, b = Kit(d / "image-party-a"), Kit(d / "image-party-b")
    run([vflclip, "cert", "revoke", "--ca", d / "ca", "--cert", a.cert])
    kit = Kit(d / "aggregator-localhost")
    s = RpcServer(vflclip, kit, "--crl-missing", "refuse-all")
    try:
        ch_b = channel(b, s.port)
        st_b = stubs.pbg.RpcTestStub(ch_b)
        assert st_b.Unary(stubs.pb.EchoRequest(text="before"), timeout=10).peer_name == "b"
        kit.crl.unlink()
        s.proc.send_signal(signal.SIGHUP)
        assert s.wait_log("crl_missing = refuse-all closes every connection"), s.log()[-3000:]
        with pytest.raises(grpc.RpcError) as e:
            st_b.Unary(stubs.pb.EchoRequest(text="after"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        ch_b.close()
        expect_rejected(stubs, b.creds(), s.port, s, "refused: the revocation list")
        kit.crl.write_bytes((d / "ca" / "crl.pem").read_bytes())
        unary_ok(stubs, b, s.port)
        expect_rejected(stubs, a.creds(), s.port, s, "has been revoked")
    finally:
        assert s.stop() == 0


# ---- authorization -----------------------------------------------------------------


def test_roles_decide_which_rpcs_a_peer_may_call(stubs, pki, server):
    def denied(kit, call):
        with channel(kit, server.port) as ch:
            with pytest.raises(grpc.RpcError) as e:
                call(ch)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value
        return e.value.details()

    status = lambda ch: stubs.admin_grpc.AdminStub(ch).Status(stubs.admin.StatusRequest(), timeout=10)  # noqa: E731
    join = lambda ch: list(stubs.fed_grpc.FederationStub(ch).Join(  # noqa: E731
        iter([stubs.fed.PartyMessage(hello=stubs.fed.Hello(name="x"))]), timeout=10))
    admin_only = lambda ch: stubs.pbg.RpcTestStub(ch).AdminOnly(stubs.pb.EchoRequest(), timeout=10)  # noqa: E731
    assert "role image-party (hosp1) may not call /vflclip.v1.Admin/Status" in denied(pki.hosp1, status)
    assert "knowledge-party" in denied(pki.kp, status)
    assert "role admin (ops) may not call /vflclip.v1.Federation/Join" in denied(pki.admin, join)
    denied(pki.hosp1, admin_only)
    with channel(pki.admin, server.port) as ch:  # the admin may
        assert stubs.pbg.RpcTestStub(ch).AdminOnly(stubs.pb.EchoRequest(text="a"), timeout=10).peer_role == "admin"
    unary_ok(stubs, pki.hosp1, server.port)


# ---- not TLS, garbage ---------------------------------------------------------------


def test_plaintext_http2_and_random_bytes(stubs, pki, server):
    with grpc.insecure_channel(f"localhost:{server.port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
        with pytest.raises(grpc.RpcError) as e:
            stubs.pbg.RpcTestStub(ch).Unary(stubs.pb.EchoRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    for i in range(6):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" if i == 0 else os.urandom(4096))
            assert closed_by_peer(s, 5), "the server kept a connection that sent garbage"
    unary_ok(stubs, pki.hosp1, server.port)


# ---- malformed gRPC over a good TLS connection (hand-made HTTP/2) -----------------


class RawH2:
    """A TLS connection with ALPN h2 and a client certificate, speaking HTTP/2
    through the `h2` library (which knows nothing of gRPC)."""

    def __init__(self, kit, port):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(kit.ca)
        ctx.load_cert_chain(kit.cert, kit.key)
        ctx.set_alpn_protocols(["h2"])
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.flush()

    def flush(self):
        self.sock.sendall(self.h2.data_to_send())

    def request(self, path, content_type="application/grpc"):
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":path", path),
                                   (":authority", "localhost"), ("content-type", content_type), ("te", "trailers")])
        return sid

    def response(self, sid, timeout=10):
        """All header fields the server sent on stream sid until it ended."""
        fields, t = {}, time.time() + timeout
        self.sock.settimeout(timeout)
        while time.time() < t:
            data = self.sock.recv(65536)
            if not data:
                break
            for ev in self.h2.receive_data(data):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and ev.stream_id == sid:
                    fields.update(dict(ev.headers))
                if isinstance(ev, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid:
                    self.flush()
                    return fields
            self.flush()
        return fields

    def close(self):
        self.sock.close()


def test_truncated_message_and_bad_requests(stubs, pki, server):
    c = RawH2(pki.hosp1, server.port)
    sid = c.request("/vflclip.v1.test.RpcTest/Unary")
    c.h2.send_data(sid, b"\x00\x00\x00\x00\x64" + b"only 15 bytes!!", end_stream=True)  # says 100 bytes
    c.flush()
    r = c.response(sid)
    assert r.get(":status") == "200" and r.get("grpc-status") == "13", r
    print("truncated ->", r.get("grpc-message"))
    sid = c.request("/vflclip.v1.test.RpcTest/Unary")
    c.h2.send_data(sid, b"\x01\x00\x00\x00\x03abc", end_stream=True)  # compressed flag, no grpc-encoding
    c.flush()
    assert c.response(sid).get("grpc-status") == "13"
    sid = c.request("/vflclip.v1.test.RpcTest/Unary", content_type="text/plain")
    c.h2.end_stream(sid)
    c.flush()
    assert c.response(sid).get(":status") == "415"
    c.close()
    unary_ok(stubs, pki.hosp1, server.port)


def test_oversized_message_is_refused_before_its_body(stubs, pki, server):
    with channel(pki.hosp1, server.port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            stubs.pbg.RpcTestStub(ch).Unary(stubs.pb.EchoRequest(payload=b"z" * (2 * MAX_MESSAGE)), timeout=20)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    # Only the 5-byte prefix announcing 100 MiB: the status comes before any body is sent
    c = RawH2(pki.hosp1, server.port)
    sid = c.request("/vflclip.v1.test.RpcTest/Unary")
    c.h2.send_data(sid, (100 << 20).to_bytes(5, "big"))
    c.flush()
    r = c.response(sid)
    assert r.get("grpc-status") == "8", r
    print("oversized ->", r.get("grpc-message"))
    c.close()
    unary_ok(stubs, pki.hosp1, server.port)


# ---- stalled, idle and silent peers ----------------------------------------------------


def test_stalled_handshake_is_timed_out(stubs, pki, server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(bytes.fromhex("160301020001"))  # the start of a ClientHello, then nothing
        t = time.time()
        assert closed_by_peer(s, 15)
        waited = time.time() - t
    print(f"stalled client closed after {waited:.2f} s (timeout {HANDSHAKE_MS} ms)")
    assert waited > HANDSHAKE_MS / 1000 * 0.8
    assert server.wait_log("TLS handshake not completed in time")
    unary_ok(stubs, pki.hosp1, server.port)


def test_many_idle_connections_are_bounded(stubs, pki, server):
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3 * MAX_CONN)]
    try:
        refused = sum(closed_by_peer(s, 0.5 * HANDSHAKE_MS / 1000) for s in socks)
        assert refused >= 2 * MAX_CONN - 1, f"only {refused} of {len(socks)} idle connections were refused at once"
        assert server.wait_log(f"connection limit ({MAX_CONN}) reached")
        assert all(closed_by_peer(s, 15) for s in socks)  # the rest by the handshake timeout
    finally:
        for s in socks:
            s.close()
    unary_ok(stubs, pki.hosp1, server.port)


def test_idle_sockets_from_one_source_do_not_lock_others_out(vflclip, stubs, pki):
    """Idle unauthenticated sockets from one address hit the per-source cap,
    not the server's: an admin (and a party) from another address still get
    in, and the idle sockets go at the handshake deadline.  (127.0.0.0/8 is
    all local on Linux: the idle sockets come from 127.0.0.2.)"""
    per_source, handshake_ms = 3, 1500
    s = RpcServer(vflclip, pki.server, "--max-connections", 12, "--max-per-source", per_source, "--admin-reserve", 2,
                  "--handshake-timeout-ms", handshake_ms)
    socks = []
    try:
        t0 = time.time()
        socks = [socket.create_connection(("127.0.0.1", s.port), source_address=("127.0.0.2", 0))
                 for _ in range(per_source)]
        extra = socket.create_connection(("127.0.0.1", s.port), source_address=("127.0.0.2", 0))
        assert closed_by_peer(extra, 1.0), "a connection beyond the per-source limit was kept"
        extra.close()
        assert s.wait_log(f"per-source connection limit ({per_source} from 127.0.0.2) reached"), s.log()[-3000:]
        assert time.time() - t0 < handshake_ms / 1000 * 0.8  # the idle ones are all still held
        with channel(pki.admin, s.port) as ch:  # from 127.0.0.1
            assert stubs.pbg.RpcTestStub(ch).AdminOnly(stubs.pb.EchoRequest(text="a"), timeout=10).peer_role == "admin"
        unary_ok(stubs, pki.hosp1, s.port)
        assert not any(closed_by_peer(k, 0.05) for k in socks), "an idle socket went before the handshake deadline"
        # a socket that never sends a byte goes at the handshake deadline
        for k in socks:
            assert closed_by_peer(k, 10)
        waited = time.time() - t0
        print(f"idle sockets closed after {waited:.2f} s (handshake timeout {handshake_ms} ms)")
        assert handshake_ms / 1000 * 0.8 < waited < handshake_ms / 1000 + 5
        assert s.log().count("TLS handshake not completed in time") >= per_source
        # the source may connect again
        unary_ok(stubs, pki.hosp2, s.port)
    finally:
        for k in socks:
            k.close()
        assert s.stop() == 0


def test_admin_reserve_keeps_room_for_admins(vflclip, stubs, pki):
    """With max_connections 4 and admin_reserve 2, authenticated parties may
    hold 2 connections; a third party is closed after its handshake, while an
    admin still gets in."""
    s = RpcServer(vflclip, pki.server, "--max-connections", 4, "--admin-reserve", 2)
    own = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
    chans = []
    try:
        for kit in (pki.hosp1, pki.hosp2):
            ch = grpc.secure_channel(f"localhost:{s.port}", kit.creds(), options=[*own, ("grpc.enable_http_proxy", 0)])
            chans.append(ch)
            stubs.pbg.RpcTestStub(ch).Unary(stubs.pb.EchoRequest(text="hold"), timeout=10)
        with grpc.secure_channel(f"localhost:{s.port}", pki.kp.creds(), options=[*own, ("grpc.enable_http_proxy", 0)]) as ch:
            with pytest.raises(grpc.RpcError) as e:
                stubs.pbg.RpcTestStub(ch).Unary(stubs.pb.EchoRequest(text="third"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert s.wait_log("the rest is kept for admins"), s.log()[-3000:]
        assert "event=rpc_conn_refused" in s.log() and "name=kp" in s.log()
        with grpc.secure_channel(f"localhost:{s.port}", pki.admin.creds(), options=[*own, ("grpc.enable_http_proxy", 0)]) as ch:
            assert stubs.pbg.RpcTestStub(ch).AdminOnly(stubs.pb.EchoRequest(text="a"), timeout=10).peer_role == "admin"
        for ch in chans:  # the parties held on
            stubs.pbg.RpcTestStub(ch).Unary(stubs.pb.EchoRequest(text="still"), timeout=10)
        chans.pop().close()
        time.sleep(0.3)
        unary_ok(stubs, pki.kp, s.port)  # a party slot is free again
    finally:
        for ch in chans:
            ch.close()
        assert s.stop() == 0


def test_keepalive_closes_a_peer_that_does_not_answer_pings(stubs, pki, server):
    c = RawH2(pki.hosp2, server.port)
    t = time.time()
    assert closed_by_peer(c.sock, 15)  # never reads, so never acknowledges the PING
    print(f"silent peer closed after {time.time() - t:.2f} s")
    assert server.wait_log("keepalive ping not acknowledged")
    c.close()
    unary_ok(stubs, pki.hosp1, server.port)


# ---- memory a peer can pin ------------------------------------------------------------------


def test_partial_messages_are_bounded_across_all_streams(vflclip, stubs, pki):
    """Each stream announces a 512 KiB message and sends 1000 bytes of it: the
    server reserves the message's buffer.  With max_recv_buffered 2 MiB the
    fifth such stream (and then a grpcio client's large message) is refused
    with RESOURCE_EXHAUSTED; once those streams are gone the memory is back."""
    announced = 512 << 10
    s = RpcServer(vflclip, pki.server, "--max-message", 1 << 20, "--max-recv-buffered", 4 * announced)
    try:
        c = RawH2(pki.hosp2, s.port)
        sids = []
        for _ in range(5):
            sid = c.request("/vflclip.v1.test.RpcTest/Unary")
            c.h2.send_data(sid, announced.to_bytes(5, "big") + b"\x0a" * 1000)  # no END_STREAM: a partial message
            c.flush()
            sids.append(sid)
        r = c.response(sids[-1])
        assert r.get("grpc-status") == "8", r
        assert "receive buffers full" in urllib.parse.unquote(r.get("grpc-message", "")), r
        assert s.wait_log("event=rpc_call_refused"), s.log()[-3000:]
        refused = [ln for ln in s.log().splitlines() if "event=rpc_call_refused" in ln]
        assert len(refused) == 1 and "name=hosp2" in refused[0] and "limit 2097152" in refused[0], refused
        # the pool is full: a grpcio client's large message is refused too, a small one still goes
        with channel(pki.hosp1, s.port) as ch:
            with pytest.raises(grpc.RpcError) as e:
                stubs.pbg.RpcTestStub(ch).Unary(stubs.pb.EchoRequest(payload=b"p" * 600_000), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        assert "receive buffers full" in e.value.details()
        unary_ok(stubs, pki.hosp1, s.port)
        c.close()  # the four partial messages go with their connection
        time.sleep(0.3)
        with channel(pki.hosp1, s.port) as ch:
            r = stubs.pbg.RpcTestStub(ch).Unary(stubs.pb.EchoRequest(payload=b"p" * 600_000), timeout=10)
        assert r.payload == b"p" * 600_000
    finally:
        assert s.stop() == 0


def test_send_queue_cap_refuses_a_stream_its_client_does_not_read(vflclip, stubs, pki):
    """A results stream whose client stops reading: once the connection's send
    queue would pass max_send_queued the call ends RESOURCE_EXHAUSTED, logged;
    a client that reads the same stream gets all of it."""
    s = RpcServer(vflclip, pki.server, "--max-send-queued", 256 << 10)
    req = stubs.pb.StreamRequest(count=40, size=100_000, interval_ms=5)
    try:
        with channel(pki.hosp1, s.port) as ch:  # reads as it comes: 4 MB, never more than ~100 kB queued
            got = list(stubs.pbg.RpcTestStub(ch).ServerStream(req, timeout=30))
        assert [m.seq for m in got] == list(range(40))
        with channel(pki.hosp2, s.port) as ch:
            # 30 MB: more than grpcio buffers for an application that does not read
            it = stubs.pbg.RpcTestStub(ch).ServerStream(stubs.pb.StreamRequest(count=300, size=100_000, interval_ms=5),
                                                         timeout=30)
            next(it)
            time.sleep(2)  # stops reading
            with pytest.raises(grpc.RpcError) as e:
                for _ in it:
                    pass
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        assert s.wait_log("status=RESOURCE_EXHAUSTED"), s.log()[-3000:]
        refused = [ln for ln in s.log().splitlines() if "event=rpc_call_refused" in ln]
        assert len(refused) == 1 and "name=hosp2" in refused[0] and "send queue to 127.0.0.1:" in refused[0], refused
        unary_ok(stubs, pki.hosp2, s.port)
    finally:
        assert s.stop() == 0


def test_client_that_stops_reading_is_closed_after_the_write_timeout(vflclip, stubs, pki):
    """The server has output for a client that takes none of it: the
    connection is closed once nothing has been sent for write_timeout_ms."""
    write_ms = 1000
    s = RpcServer(vflclip, pki.server, "--write-timeout-ms", write_ms)
    try:
        with channel(pki.hosp1, s.port) as ch:
            it = stubs.pbg.RpcTestStub(ch).ServerStream(stubs.pb.StreamRequest(count=1000, size=100_000), timeout=60)
            next(it)
            t = time.time()
            assert s.wait_log("the peer stopped reading", timeout=15), s.log()[-3000:]
            waited = time.time() - t
            with pytest.raises(grpc.RpcError) as e:
                for _ in it:
                    pass
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        print(f"closed {waited:.2f} s after the client stopped reading (write timeout {write_ms} ms)")
        assert write_ms / 1000 * 0.8 < waited < write_ms / 1000 + 8
        assert "(write timeout)" in s.log() and "name=hosp1" in s.log()
        unary_ok(stubs, pki.hosp1, s.port)
    finally:
        assert s.stop() == 0


# ---- graceful shutdown -------------------------------------------------------------------


def test_graceful_shutdown_lets_calls_finish(vflclip, stubs, pki):
    s = RpcServer(vflclip, pki.server)
    with channel(pki.hosp1, s.port) as ch:
        it = stubs.pbg.RpcTestStub(ch).ServerStream(stubs.pb.StreamRequest(count=10, size=100, interval_ms=100),
                                                     timeout=30)
        first = next(it)
        s.proc.send_signal(signal.SIGTERM)  # GOAWAY: no new calls, the stream goes on
        rest = list(it)
        assert [first.seq] + [m.seq for m in rest] == list(range(10)) and it.code() == grpc.StatusCode.OK
    assert s.proc.wait(15) == 0
    assert "event=rpc_shutdown" in s.log()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port)).close()
    s.stop()


def test_shutdown_grace_period_cuts_calls_that_run_too_long(vflclip, stubs, pki):
    s = RpcServer(vflclip, pki.server, "--grace-ms", "500")
    with channel(pki.hosp1, s.port) as ch:
        it = stubs.pbg.RpcTestStub(ch).ServerStream(stubs.pb.StreamRequest(count=1000, size=10, interval_ms=50),
                                                     timeout=60)
        next(it)
        t = time.time()
        s.proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as e:
            for _ in it:
                pass
        waited = time.time() - t
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    print(f"cut after {waited:.2f} s (grace 0.5 s)")
    assert 0.3 < waited < 10
    assert s.proc.wait(15) == 0
    assert "shutdown grace period over" in s.log()
    s.stop()


def test_revocation_list_missing_at_start_refuses_everyone(vflclip, stubs, tmp_path):
    """A configured list that is missing when the server starts: there is no
    good list to keep, so (even under crl_missing = keep) nobody gets in until
    one appears; then the revoked peer stays out and the others are back."""
    d = tmp_path / "fed"
    run([vflclip, "provision", "--out", d, "--aggregator", "localhost", "--image-party", "a", "--image-party", "b"])
    a, b = Kit(d / "image-party-a"), Kit(d / "image-party-b")
    run([vflclip, "cert", "revoke", "--ca", d / "ca", "--cert", a.cert])
    kit = Kit(d / "aggregator-localhost")
    good = kit.crl.read_bytes()
    kit.crl.unlink()
    s = RpcServer(vflclip, kit)
    try:
        expect_rejected(stubs, a.creds(), s.port, s, "no good list was ever loaded")
        expect_rejected(stubs, b.creds(), s.port, s, "no good list was ever loaded")
        kit.crl.write_bytes(good)
        unary_ok(stubs, b, s.port)
        expect_rejected(stubs, a.creds(), s.port, s, "has been revoked")
    finally:
        assert s.stop() == 0
