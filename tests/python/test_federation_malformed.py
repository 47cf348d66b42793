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

import grpc
import pytest

from test_federation_support import Federation
from test_grpc_support import stubs  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def fed(vflclip, tmp_path_factory):
    f = Federation(vflclip, tmp_path_factory.mktemp("malformed"))
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

    def __init__(self, fed, pb, fingerprint, dim, chunks):
        self.pb, self.chunks, self.q = pb, list(chunks), queue.Queue()
        self.ch = channel(fed, "image-party-hosp-a")
        join = self.ch.stream_stream("/vflclip.v1.Federation/Join",
                                                  request_serializer=lambda m: m.SerializeToString(),
                                                  response_deserializer=pb.AggregatorMessage.FromString)
        hello = pb.Hello(role=pb.ROLE_IMAGE_PARTY, name="hosp-a", model_fingerprint=fingerprint, embed_dim=dim,
                         splits=[pb.SplitSize(split="train", count=4), pb.SplitSize(split="val", count=0),
                                 pb.SplitSize(split="test", count=0)])
        self.q.put(pb.PartyMessage(hello=hello))
        self.responses = join(iter(self.q.get, None))
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            for m in self.responses:
                if m.HasField("encode_split") and self.chunks:
                    self.q.put(self.pb.PartyMessage(task_id=m.task_id, embeddings=self.chunks.pop(0)))
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
