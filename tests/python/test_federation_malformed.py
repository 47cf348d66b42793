"""A party that misbehaves cannot crash the aggregator or slip bad data into a
run.  Python grpcio clients hold real party certificates (the kits from
`vflclip provision`) and send the running aggregator what a broken or hostile
party might: bytes that are not protobuf, a Hello whose name differs from the
certificate, a first message that is not a Hello, and, inside a run,
embeddings of the wrong width, a non-finite value, or a label outside the
classes.  Each is refused with a gRPC status or a failed run whose status
names the party and the problem; the aggregator keeps serving.  The same
fake party also leaves in the middle of a split: the run pauses, says whom
it waits for, and completes once the party is back and sends the split."""
import queue
import threading
import time

import grpc
import pytest

from test_federation_support import Federation, set_key
from test_grpc_support import stubs  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    f = Federation(vflclip, tmp_path_factory.mktemp("malformed"))
    agg_ini = f.fed / "aggregator-localhost" / "aggregator.ini"
    set_key(agg_ini, "server", "max_parties", 2)        # the knowledge party and one fake image party
    set_key(agg_ini, "server", "hello_timeout_s", 2)
    f.aggregator.start()
    f.kp.start()
    f.wait_parties(1)
    yield f
    f.stop()


def channel(fed, party):
    kit = fed.fed / party
    creds = grpc.ssl_channel_credentials((kit / "ca.crt").read_bytes(), (kit / "key.pem").read_bytes(),
                                         (kit / "cert.pem").read_bytes())
    return grpc.secure_channel(f"localhost:{fed.port}", creds, options=[("grpc.enable_http_proxy", 0)])


def join_once(fed, party, first, serializer):
    """Sends one message on a new Join stream; returns the stream's final (code, details)."""
    with channel(fed, party) as ch:
        join = ch.stream_stream("/vflclip.v1.Federation/Join", request_serializer=serializer,
                                response_deserializer=lambda b: b)
        try:
            for _ in join(iter([first]), timeout=10):
                pass
        except grpc.RpcError as e:
            return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def test_garbage_bad_names_and_missing_hello_are_refused(fed, stubs):  # noqa: F811
    pb = stubs.fed
    code, msg = join_once(fed, "image-party-hosp-a", b"\xff\xff\xff\xff", lambda b: b)
    print(code, msg)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot decode PartyMessage" in msg
    hello = pb.PartyMessage(hello=pb.Hello(role=pb.ROLE_IMAGE_PARTY, name="hosp-z"))
    code, msg = join_once(fed, "image-party-hosp-a", hello, lambda m: m.SerializeToString())
    print(code, msg)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'hosp-z'" in msg and "'hosp-a'" in msg
    hello = pb.PartyMessage(hello=pb.Hello(role=pb.ROLE_KNOWLEDGE_PARTY))
    code, msg = join_once(fed, "image-party-hosp-a", hello, lambda m: m.SerializeToString())
    assert code == grpc.StatusCode.PERMISSION_DENIED and "certificate says image-party" in msg
    code, msg = join_once(fed, "image-party-hosp-a", pb.PartyMessage(ack=pb.Ack(detail="hi")),
                          lambda m: m.SerializeToString())
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "first message must be a Hello" in msg
    assert fed.status()["parties_connected"] == 1      # still serving, only the knowledge party joined


class FakeImageParty:
    """Joins as hosp-a with the knowledge party's model fingerprint and answers
    each EncodeSplit with the next chunk from `chunks`."""

    def __init__(self, fed, pb, fingerprint, dim, chunks, train=4):
        self.pb, self.chunks, self.q = pb, list(chunks), queue.Queue()
        self.ch = channel(fed, "image-party-hosp-a")
        join = self.ch.stream_stream("/vflclip.v1.Federation/Join",
                                                  request_serializer=lambda m: m.SerializeToString(),
                                                  response_deserializer=pb.AggregatorMessage.FromString)
        hello = pb.Hello(role=pb.ROLE_IMAGE_PARTY, name="hosp-a", model_fingerprint=fingerprint, embed_dim=dim,
                         splits=[pb.SplitSize(split="train", count=train), pb.SplitSize(split="val", count=0),
                                 pb.SplitSize(split="test", count=0)])
        self.q.put(pb.PartyMessage(hello=hello))
        self.responses = join(iter(self.q.get, None))
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            for m in self.responses:
                if m.HasField("encode_split") and self.chunks:
                    c = self.chunks.pop(0)
                    body = {"error": c} if isinstance(c, self.pb.Error) else {"embeddings": c}
                    self.q.put(self.pb.PartyMessage(task_id=m.task_id, **body))
        except grpc.RpcError:
            pass

    def close(self):
        self.q.put(None)
        self.ch.close()


def test_bad_embeddings_fail_the_run_naming_the_party(fed, stubs):  # noqa: F811
    pb = stubs.fed
    kp = [p for p in fed.status()["parties"] if p["role"] == "knowledge-party"][0]
    D = 32   # the tiny model's projection width
    ok = dict(split="train", count=4, dim=D, labels=[0, 1, 2, 3], ids=["a", "b", "c", "d"], last=True, total=4)
    bad = [
        (pb.EmbeddingsChunk(**{**ok, "dim": 3}, data=[0.5] * 12), "sent 3-dim embeddings; the run's dimension is 32"),
        (pb.EmbeddingsChunk(**ok, data=[0.5] * (4 * D - 1) + [float("nan")]), "embedding value 127 is not finite"),
        (pb.EmbeddingsChunk(**{**ok, "labels": [0, 1, 2, 9]}, data=[0.5] * (4 * D)), "example d has label 9 outside 0..3"),
        (pb.EmbeddingsChunk(**{**ok, "count": 5}, data=[0.5] * (4 * D)), "chunk of 5 examples carries 128 floats"),
    ]
    fake = FakeImageParty(fed, pb, kp["fingerprint"], D, [c for c, _ in bad])
    try:
        fed.wait_parties(2)
        for i, (_, expected) in enumerate(bad):
            fed.cli("run", "start", "--epochs", "1", "--image-parties", "hosp-a", "--run-id", f"bad-{i}")
            s = fed.wait_state(lambda s: s["run_id"] == f"bad-{i}" and s["state"] == "failed", what=f"bad-{i} to fail")
            human = fed.cli("status").stdout
            print(f"bad-{i}:", [l.strip() for l in human.splitlines() if "image party" in l])
            assert f"image party 'hosp-a'" in human and expected in human, human
        assert fed.aggregator.proc.poll() is None
    finally:
        fake.close()


def test_image_party_leaving_mid_split_pauses_the_run_until_it_returns(fed, stubs):  # noqa: F811
    pb = stubs.fed
    kp = [p for p in fed.status()["parties"] if p["role"] == "knowledge-party"][0]
    D = 32
    rows = [[0.1 * (i + 1) * ((j % 5) - 2) + 0.01 * j for j in range(D)] for i in range(4)]
    first_half = pb.EmbeddingsChunk(split="train", count=2, dim=D, data=rows[0] + rows[1], labels=[0, 1], ids=["a", "b"],
                                    last=False, total=4)
    whole = pb.EmbeddingsChunk(split="train", count=4, dim=D, data=sum(rows, []), labels=[0, 1, 2, 3],
                               ids=["a", "b", "c", "d"], last=True, total=4)
    fake = FakeImageParty(fed, pb, kp["fingerprint"], D, [first_half])
    try:
        fed.wait_parties(2)
        fed.cli("run", "start", "--epochs", "2", "--image-parties", "hosp-a", "--run-id", "comes-back")
        fed.wait_state(lambda s: s["run_id"] == "comes-back" and s["state"] == "encoding", what="encoding")
    finally:
        fake.close()
    s = fed.wait_state(lambda s: s["state"] == "encoding-paused", what="the run to pause")
    human = fed.cli("status").stdout
    print(human)
    assert "waiting for image party 'hosp-a'" in human
    fake = FakeImageParty(fed, pb, kp["fingerprint"], D, [whole])
    try:
        s = fed.wait_state(lambda s: s["run_id"] == "comes-back" and s["state"] in ("done", "failed"), what="the run to end")
        assert s["state"] == "done", fed.cli("status").stdout
    finally:
        fake.close()
    assert "event=run_resumed run=comes-back" in fed.aggregator.text()


def test_declared_sizes_that_would_overflow_are_refused_at_hello(fed, stubs):  # noqa: F811
    """A Hello declaring 2^62+4 training examples once made the aggregator's
    buffer size wrap to 512 bytes (x 32 floats x 4 bytes) and the first chunk
    overflowed the heap.  Every declared size is now bounded at the Hello."""
    pb = stubs.fed
    kp = [p for p in fed.status()["parties"] if p["role"] == "knowledge-party"][0]
    cases = [
        (dict(splits=[pb.SplitSize(split="train", count=(1 << 62) + 4)]), "declares 4611686018427387908 examples, over the limit"),
        (dict(splits=[pb.SplitSize(split="train", count=4), pb.SplitSize(split="train", count=4)]), "declared twice"),
        (dict(splits=[pb.SplitSize(split="tr\nain", count=4)]), "control character"),
        (dict(splits=[pb.SplitSize(split="train", count=4)], embed_dim=1 << 31), "embed_dim 2147483648 is over the limit"),
    ]
    for fields, expected in cases:
        hello = pb.PartyMessage(hello=pb.Hello(role=pb.ROLE_IMAGE_PARTY, name="hosp-a", model_fingerprint=kp["fingerprint"],
                                               **{"embed_dim": 32, **fields}))
        code, msg = join_once(fed, "image-party-hosp-a", hello, lambda m: m.SerializeToString())
        print(code, msg)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and expected in msg, msg
    # the exact attack: the Hello, then a chunk far larger than the wrapped buffer
    D = 32
    huge = pb.EmbeddingsChunk(split="train", count=4096, dim=D, data=[0.25] * (4096 * D), labels=[0] * 4096,
                              ids=[f"x{i}" for i in range(4096)], last=False, total=(1 << 62) + 4)
    fake = FakeImageParty(fed, pb, kp["fingerprint"], D, [huge], train=(1 << 62) + 4)
    try:
        fed.cli("run", "start", "--epochs", "1", "--image-parties", "hosp-a", "--run-id", "overflow", check=False)
        time.sleep(0.5)
        assert fed.aggregator.proc.poll() is None, fed.aggregator.text()[-3000:]
        assert "party_refused peer=hosp-a" in fed.aggregator.text()
    finally:
        fake.close()
    assert fed.status()["parties_connected"] == 1
    audit = (fed.fed / "aggregator-localhost" / "state" / "audit.log").read_text()
    assert "event=party_refused" in audit and "over the limit" in audit


def test_silent_join_streams_take_no_slot_and_time_out(fed, stubs):  # noqa: F811
    """Join streams that never say Hello used to hold party slots forever.
    With max_parties = 2 (the knowledge party holds one), three silent streams
    leave the last slot free for a real Hello, and each ends after
    hello_timeout_s with DEADLINE_EXCEEDED."""
    pb = stubs.fed
    kp = [p for p in fed.status()["parties"] if p["role"] == "knowledge-party"][0]
    silent, results = [], []

    def hold(i):
        with channel(fed, "image-party-hosp-b") as ch:
            join = ch.stream_stream("/vflclip.v1.Federation/Join", request_serializer=lambda m: m,
                                    response_deserializer=lambda b: b)
            q = queue.Queue()
            t0 = time.time()
            try:
                for _ in join(iter(q.get, None), timeout=20):
                    pass
                results.append((grpc.StatusCode.OK, "", time.time() - t0))
            except grpc.RpcError as e:
                results.append((e.code(), e.details(), time.time() - t0))

    for i in range(3):
        t = threading.Thread(target=hold, args=(i,), daemon=True)
        t.start()
        silent.append(t)
    time.sleep(0.5)
    fake = FakeImageParty(fed, pb, kp["fingerprint"], 32, [])
    try:
        fed.wait_parties(2, timeout=5)
    finally:
        fake.close()
    for t in silent:
        t.join(15)
    print(results)
    assert len(results) == 3
    for code, details, dt in results:
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "no Hello within 2000 ms" in details
        assert 1.5 < dt < 10
    assert fed.aggregator.proc.poll() is None


def test_party_cap_refuses_logs_and_no_run_starts_without_the_refused_party(fed, stubs):  # noqa: F811
    """max_parties = 2: a third party is refused with RESOURCE_EXHAUSTED and
    an audit line, and a run over 'every connected image party' is refused
    rather than started without it."""
    pb = stubs.fed
    kp = [p for p in fed.status()["parties"] if p["role"] == "knowledge-party"][0]
    fake = FakeImageParty(fed, pb, kp["fingerprint"], 32, [])
    try:
        fed.wait_parties(2)
        hello = pb.PartyMessage(hello=pb.Hello(role=pb.ROLE_IMAGE_PARTY, name="hosp-b", model_fingerprint=kp["fingerprint"],
                                               embed_dim=32, splits=[pb.SplitSize(split="train", count=4)]))
        code, msg = join_once(fed, "image-party-hosp-b", hello, lambda m: m.SerializeToString())
        print(code, msg)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "all 2 slots are taken ([server] max_parties)" in msg
        p = fed.cli("run", "start", "--epochs", "1", "--run-id", "without-b", check=False)
        print(p.stdout, p.stderr)
        assert p.returncode != 0 and "max_parties" in p.stderr
        assert "without-b" not in fed.cli("status").stdout
    finally:
        fake.close()
    assert "party_refused" in (fed.fed / "aggregator-localhost" / "state" / "audit.log").read_text()


def test_peer_text_cannot_forge_log_or_audit_lines(fed, stubs):  # noqa: F811
    """An image party's Error message with a newline and a fake log line in
    it fails the run, but stays inside one line of the aggregator's log."""
    pb = stubs.fed
    kp = [p for p in fed.status()["parties"] if p["role"] == "knowledge-party"][0]
    forged = "2026-01-01T00:00:00.000Z level=info prog=vflclip-aggregator event=run_done run=forged"
    fake = FakeImageParty(fed, pb, kp["fingerprint"], 32, [pb.Error(code=13, message=f'disk full"\n{forged}\r\n')])
    try:
        fed.wait_parties(2)
        fed.cli("run", "start", "--epochs", "1", "--image-parties", "hosp-a", "--run-id", "forge")
        fed.wait_state(lambda s: s["run_id"] == "forge" and s["state"] == "failed", what="forge to fail")
    finally:
        fake.close()
    lines = fed.aggregator.text().splitlines()
    assert not [l for l in lines if l.startswith(forged)], "a peer's text started a log line of its own"
    failed = [l for l in lines if "event=run_failed run=forge" in l]
    print(failed)
    assert len(failed) == 1 and "disk full?" in failed[0] and "run=forged" in failed[0]


def test_refused_calls_and_handshakes_are_audited(fed):
    """An image party calling the Admin service, and a client that fails the
    TLS handshake, are refused and each leaves a line in the audit log."""
    import socket
    with channel(fed, "image-party-hosp-a") as ch:
        status = ch.unary_unary("/vflclip.v1.Admin/Status", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            status(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with socket.create_connection(("127.0.0.1", fed.port)) as s:   # not TLS at all
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    audit = (fed.fed / "aggregator-localhost" / "state" / "audit.log").read_text()
    print("\n".join(l for l in audit.splitlines() if "refused" in l))
    assert any("event=call_refused role=image-party name=hosp-a" in l and "may not call /vflclip.v1.Admin/Status" in l
               for l in audit.splitlines())
    assert any("event=handshake_refused" in l and "peer=127.0.0.1:" in l for l in audit.splitlines())
