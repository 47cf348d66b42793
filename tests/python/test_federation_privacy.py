"""What an image party sends, recorded by an independent peer: a Python grpcio
server with the aggregator's kit stands in for the aggregator, asks a real
`vflclip-image-party` for its three splits, and keeps the raw bytes of every
message the party sends.  Each message must decode as a PartyMessage with no
unknown field (re-encoding it gives the same bytes), carry only a Hello,
EmbeddingsChunks, EncodingProgress (counts and rates) or an Error, use no field but embeddings, labels, ids and
their bookkeeping, and be no bigger than its embeddings need.  The
embeddings must be transformers' CLIPModel image features of the party's
images (so they are what they claim, not pixels), and a tensor sent TO the
image party (a TextBackward) is refused."""
import threading

import numpy as np
import pytest
import torch

from test_federation_support import Federation, set_key
from test_grpc_support import stand_in_aggregator, stubs  # noqa: F401  (fixture)

CHUNK = 7
HELLO_FIELDS = {"role", "name", "model_fingerprint", "protocol_version", "software_version", "splits", "embed_dim",
                "preprocessing_fingerprint",
                "embed_clip", "embed_noise_multiplier", "dp_delta",   # the party's embedding-DP settings (test_privacy.py)
                "mask_public_key", "mask_key_signature", "certificate"}   # its secure-aggregation key (test_secure_share.py)
CHUNK_FIELDS = {"split", "view", "offset", "count", "dim", "data", "labels", "ids", "last", "total"}
PROGRESS_FIELDS = {"done", "total", "split", "images_per_s", "eta_s"}


class Recorder:
    def __init__(self, fed_pb):
        self.pb = fed_pb
        self.raw, self.done, self.release = [], threading.Event(), threading.Event()

    def deserialize(self, data):
        self.raw.append(bytes(data))
        return self.pb.PartyMessage.FromString(data)

    def join(self, requests, context):
        pb = self.pb
        next(requests)  # the Hello
        yield pb.AggregatorMessage(welcome=pb.Welcome(aggregator_name="python-recorder", protocol_version=1))
        for task, split in enumerate(["train", "val", "test"], start=1):
            yield pb.AggregatorMessage(task_id=task, encode_split=pb.EncodeSplit(split=split, chunk_size=CHUNK))
            for m in requests:
                if m.HasField("error") or (m.HasField("embeddings") and m.embeddings.last):
                    break
        grad = pb.Tensor(shape=[2, 2], data=[1, 2, 3, 4])
        yield pb.AggregatorMessage(task_id=10, text_backward=pb.TextBackward(step=0, grad_text_features=grad))
        next(requests)
        self.done.set()
        self.release.wait(30)


def serve_recorder(stubs, kit):
    """A grpcio Federation server holding the aggregator's certificate (kit) whose
    Join records what the party sends; returns (recorder, server, port)."""
    rec = Recorder(stubs.fed)
    server, port = stand_in_aggregator(kit, rec.join, rec.deserialize)
    return rec, server, port


def record_party(stubs, kit, party):
    """Points a real image party at a recording aggregator, lets it answer
    every encode task, stops both and returns the recorder."""
    rec, server, port = serve_recorder(stubs, kit)
    set_key(party.ini, "aggregator", "host", "127.0.0.1")
    set_key(party.ini, "aggregator", "port", port)
    party.start()
    try:
        assert rec.done.wait(60), party.text()[-3000:]
    finally:
        rec.release.set()
        party.stop()
        server.stop(1)
    return rec


@pytest.fixture(scope="module")
def recorded(vflclip, stubs, tmp_path_factory):  # noqa: F811
    fed = Federation(vflclip, tmp_path_factory.mktemp("privacy"))
    fed.env["VFLCLIP_PROGRESS_INTERVAL_S"] = "0.001"   # so its EncodingProgress messages are recorded too
    kit = fed.fed / "aggregator-localhost"
    rec = record_party(stubs, kit, fed.images["hosp-b"])
    return fed, rec, fed.parts[1], stubs.fed


def test_every_message_is_hello_embeddings_or_error_with_known_fields_only(recorded):
    fed, rec, part, pb = recorded
    kinds = []
    for raw in rec.raw:
        m = pb.PartyMessage.FromString(raw)
        clean = pb.PartyMessage()
        clean.CopyFrom(m)
        clean.DiscardUnknownFields()
        assert clean.SerializeToString() == raw, "a message carries fields the schema does not know"
        kind = m.WhichOneof("body")
        kinds.append(kind)
        if kind == "hello":
            assert {f.name for f, _ in m.hello.ListFields()} <= HELLO_FIELDS
        elif kind == "embeddings":
            e = m.embeddings
            assert {f.name for f, _ in e.ListFields()} <= CHUNK_FIELDS
            id_bytes = sum(len(i) + 2 for i in e.ids)
            bound = e.count * (4 * e.dim + 6) + id_bytes + 64
            assert len(raw) <= bound, (len(raw), bound)
            assert len(e.data) == e.count * e.dim and len(e.labels) == e.count == len(e.ids)
        elif kind == "encoding_progress":   # counts and timing only, no larger than that needs
            assert {f.name for f, _ in m.encoding_progress.ListFields()} <= PROGRESS_FIELDS
            assert len(raw) <= 64
    assert kinds[0] == "hello" and kinds[-1] == "error"
    assert "embeddings" in kinds and set(kinds[1:-1]) <= {"embeddings", "encoding_progress"}
    pixels = sum(part[f"{s}_images"].nbytes for s in ("train", "val", "test"))
    sent = sum(len(r) for r in rec.raw)
    print(f"{len(rec.raw)} messages ({kinds.count('encoding_progress')} progress), {sent} bytes sent; the party's images are {pixels} bytes of pixels")


def test_a_tensor_sent_to_the_image_party_is_refused(recorded):
    fed, rec, part, pb = recorded
    m = pb.PartyMessage.FromString(rec.raw[-1])
    assert m.task_id == 10 and m.error.code == 12 and "only EncodeSplit" in m.error.message


def test_embeddings_are_clip_image_features_of_the_party_images(recorded):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel
    fed, rec, part, pb = recorded
    hf = CLIPModel.from_pretrained(fed.model).eval()
    proc = CLIPImageProcessor.from_pretrained(fed.model)
    chunks = [pb.PartyMessage.FromString(r).embeddings for r in rec.raw]
    worst = 0.0
    for split in ("train", "val", "test"):
        mine = [c for c in chunks if c.split == split]
        assert [c.offset for c in mine] == list(range(0, len(part[f"{split}_labels"]), CHUNK))
        emb = np.concatenate([np.asarray(c.data, np.float32).reshape(c.count, c.dim) for c in mine])
        labels = np.concatenate([np.asarray(c.labels) for c in mine])
        ids = [i for c in mine for i in c.ids]
        assert len(set(ids)) == len(ids) == len(labels)
        np.testing.assert_array_equal(labels, part[f"{split}_labels"][:, 0])
        px = proc(images=[Image.fromarray(x) for x in part[f"{split}_images"]], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            ref = hf.get_image_features(pixel_values=px).numpy()
        d = float(np.abs(emb - ref).max())
        worst = max(worst, d)
        assert d <= 1e-4 * max(1.0, float(np.abs(ref).max())), (split, d)
    print(f"embeddings vs transformers CLIPModel.get_image_features: max abs diff {worst:.3g}")
