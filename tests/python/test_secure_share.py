"""What an image party sends with [run] loss_at = image-parties, seen by an
honest-but-curious aggregator: a Python grpcio server with the aggregator's
kit stands in for the aggregator and asks a real `vflclip-image-party`
(hosp-b) for secure-sum shares, with a second participant (hosp-c) played
here: its X25519 key is made with Python `cryptography` and signed with
hosp-c's certificate key from its kit.

- The aggregator alone cannot read the share: decoded as it arrives, it is
  nowhere near hosp-b's true share (computed with PyTorch autograd from the
  party's embeddings, which this test asked for in the pooled way first).
- hosp-c can remove its pair's mask: the masks are rebuilt here from the
  specification (X25519 + HKDF-SHA256 + ChaCha20 in `cryptography`,
  secagg/masked_sum.h), and the unmasked share equals PyTorch's loss and
  dL/dT share, also with per-example clipping; an evaluation share's counts
  equal scikit-learn's confusion matrix, and the site's own metrics equal
  scikit-learn's AUC and accuracy.
- A reused sum_id, a peer key that its certificate did not sign, and a
  relayed key for hosp-b that is not its own are refused."""
import hashlib
import json
import re
import struct
import threading

import numpy as np
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from conftest import ROOT
from test_federation_support import Federation, set_key
from test_grpc_support import stand_in_aggregator, stubs  # noqa: F401  (fixture)

FRAC = 40
RUN_ID = "secure-test"
C = 4


def mask_words(seed, run_id, purpose, sum_id, n):
    """The mask stream of a pair (secagg/masked_sum.h), as uint64 words."""
    h = hashlib.sha256(b"vflclip mask nonce v1" + run_id.encode() + b"\0" + struct.pack("<IQI", purpose, sum_id, 0)).digest()
    enc = Cipher(algorithms.ChaCha20(seed, struct.pack("<I", 0) + h[:12]), mode=None).encryptor()
    return np.frombuffer(enc.update(b"\0" * (8 * n)), dtype="<u8").astype(np.uint64)


def pair_seed(own_priv, own_name, own_pub, peer_name, peer_pub):
    shared = own_priv.exchange(X25519PublicKey.from_public_bytes(peer_pub))
    (lo_n, lo_p), (hi_n, hi_p) = sorted([(own_name, own_pub), (peer_name, peer_pub)])
    info = lo_n.encode() + b"\0" + lo_p + hi_n.encode() + b"\0" + hi_p
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"vflclip mask seed v1", info=info).derive(shared)


def fixed_to_float(words):
    return words.astype(np.uint64).view(np.int64).astype(np.float64) / 2.0 ** FRAC


class FakeAggregator:
    """Asks for the train and val embeddings (the reference needs them), then
    runs the secure-sum tasks the test queues, recording every answer."""

    def __init__(self, pb):
        self.pb = pb
        self.hello, self.chunks, self.answers = None, [], []
        self.tasks, self.got = [], threading.Condition()
        self.ready, self.release = threading.Event(), threading.Event()

    def join(self, requests, context):
        pb = self.pb
        self.hello = next(requests).hello
        yield pb.AggregatorMessage(welcome=pb.Welcome(aggregator_name="python", protocol_version=1, run_id=RUN_ID))
        for task, split in enumerate(["train", "val"], start=1):
            yield pb.AggregatorMessage(task_id=task, encode_split=pb.EncodeSplit(split=split, chunk_size=1000))
            for m in requests:
                if m.HasField("embeddings"):
                    self.chunks.append(m.embeddings)
                    if m.embeddings.last:
                        break
        self.ready.set()
        while not self.release.is_set():
            with self.got:
                while not self.tasks and not self.release.is_set():
                    self.got.wait(0.1)
                if not self.tasks:
                    break
                task = self.tasks.pop(0)
            yield task
            for m in requests:
                if m.WhichOneof("body") in ("masked_share", "error"):
                    with self.got:
                        self.answers.append(m)
                        self.got.notify_all()
                    break

    def ask(self, task, timeout=30):
        with self.got:
            n = len(self.answers)
            self.tasks.append(task)
            self.got.notify_all()
            assert self.got.wait_for(lambda: len(self.answers) > n, timeout), "the party did not answer"
            return self.answers[-1]


@pytest.fixture(scope="module")
def session(vflclip, stubs, tmp_path_factory):  # noqa: F811
    fed = Federation(vflclip, tmp_path_factory.mktemp("secure-share"))
    kit = fed.fed / "aggregator-localhost"
    pb = stubs.fed
    agg = FakeAggregator(pb)
    server, port = stand_in_aggregator(kit, agg.join, pb.PartyMessage.FromString)
    party = fed.images["hosp-b"]
    set_key(party.ini, "aggregator", "host", "127.0.0.1")
    set_key(party.ini, "aggregator", "port", port)
    party.start()
    try:
        assert agg.ready.wait(60), party.text()[-3000:]
        # hosp-c, played here: a fresh X25519 key signed with hosp-c's certificate key
        ckit = fed.fed / "image-party-hosp-c"
        ckey = serialization.load_pem_private_key((ckit / "key.pem").read_bytes(), None)
        cpriv = X25519PrivateKey.generate()
        cpub = cpriv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        csig = ckey.sign(b"vflclip mask key v1\0hosp-c\0" + cpub, ec.ECDSA(hashes.SHA256()))
        ccert = x509.load_pem_x509_certificate((ckit / "cert.pem").read_bytes()).public_bytes(serialization.Encoding.DER)
        peer_c = pb.MaskPeer(name="hosp-c", public_key=cpub, signature=csig, certificate=ccert)
        h = agg.hello
        peer_b = pb.MaskPeer(name="hosp-b", public_key=h.mask_public_key, signature=h.mask_key_signature,
                             certificate=h.certificate)
        seed = pair_seed(cpriv, "hosp-c", cpub, "hosp-b", bytes(h.mask_public_key))
        emb = {s: (np.concatenate([np.array(c.data, np.float32).reshape(c.count, c.dim) for c in agg.chunks if c.split == s]),
                   np.concatenate([np.array(c.labels) for c in agg.chunks if c.split == s])) for s in ("train", "val")}
        yield dict(fed=fed, pb=pb, agg=agg, party=party, peers=[peer_b, peer_c], seed=seed, emb=emb,
                   ckey=ckey, cpub=cpub, ccert=ccert)
    finally:
        agg.release.set()
        party.stop()
        server.stop(1)


def text_features(D, seed=1):
    return np.random.default_rng(seed).normal(size=(C, D)).astype(np.float32)


def step_task(s, sum_id, idx, B, T, logit_scale, clip=0.0, peers=None):
    pb = s["pb"]
    return pb.AggregatorMessage(task_id=100 + sum_id, secure_sum=pb.SecureSumTask(
        kind=pb.SECURE_SUM_STEP, sum_id=sum_id, step=sum_id, run_id=RUN_ID, participants=peers or s["peers"],
        text_features=pb.Tensor(shape=list(T.shape), data=T.ravel().tolist()), logit_scale=logit_scale,
        indices=idx, batch_size=B, clip=clip))


def torch_share(z, y, T, logit_scale, B, clip):
    """PyTorch autograd: sum of the examples' CoOp losses / B and its dL/dT, or
    with clip the sum of the per-example gradients clipped to L2 norm <= clip."""
    z = torch.tensor(z, dtype=torch.float64)
    y = torch.tensor(y, dtype=torch.int64)
    grads, losses, clipped = [], [], 0
    for i in range(len(y)):
        Tt = torch.tensor(T, dtype=torch.float64, requires_grad=True)
        logits = np.exp(logit_scale) * torch.nn.functional.normalize(z[i:i + 1], dim=1) @ \
            torch.nn.functional.normalize(Tt, dim=1).T
        loss = torch.nn.functional.cross_entropy(logits, y[i:i + 1], reduction="sum")
        loss.backward()
        g = Tt.grad.numpy()
        if clip > 0 and np.linalg.norm(g) > clip:
            g = g * (clip / np.linalg.norm(g))
            clipped += 1
        grads.append(g)
        losses.append(loss.item())
    g = np.sum(grads, axis=0)
    return sum(losses) / B, (g if clip > 0 else g / B), clipped


@pytest.mark.parametrize("clipping", [False, True])
def test_aggregator_cannot_read_a_share_but_the_sum_partner_unmasks_pytorchs_gradient(session, clipping):
    s = session
    z, y = s["emb"]["train"]
    D = z.shape[1]
    T, logit_scale = text_features(D), float(np.log(20.0))
    idx, B = [5, 0, 17, 3, 9], 8
    sum_id = 2 if clipping else 1
    clip = 0.0
    if clipping:   # between the examples' gradient norms, so some are clipped and some not
        norms = [np.linalg.norm(torch_share(z[[i]], y[[i]], T, logit_scale, 1, 0)[1]) for i in idx]
        clip = float(np.median(norms)) * 1.01
    m = s["agg"].ask(step_task(s, sum_id, idx, B, T, logit_scale, clip))
    assert m.HasField("masked_share"), m
    v = np.array(m.masked_share.values, dtype=np.uint64)
    assert v.size == 2 + C * D
    loss_ref, grad_ref, clipped = torch_share(z[idx], y[idx], T, logit_scale, B, clip)
    assert (clipped > 0) == (clip > 0) and clipped < len(idx), clipped   # the clip test clips some, not all
    # what the aggregator sees, read as the plain vector would be
    seen = fixed_to_float(v)
    seen_err = np.abs(seen[1:1 + C * D] - grad_ref.ravel()).max() / np.abs(grad_ref).max()
    corr = np.corrcoef(seen[1:1 + C * D], grad_ref.ravel())[0, 1]
    # hosp-c removes its pair's mask (hosp-b < hosp-c, so hosp-b added it)
    plain = fixed_to_float(v - mask_words(s["seed"], RUN_ID, 1, sum_id, v.size))
    loss, grad = plain[0], plain[1:1 + C * D].reshape(C, D)
    rel = np.abs(grad - grad_ref).max() / np.abs(grad_ref).max()
    print(f"clip {clip}: aggregator's reading off by {seen_err:.3g} x the gradient's scale (correlation {corr:.3f}); "
          f"unmasked vs PyTorch: loss {abs(loss - loss_ref):.3g}, dL/dT rel {rel:.3g}")
    assert seen_err > 1e3 and abs(corr) < 0.5
    assert int(v[-1] - mask_words(s["seed"], RUN_ID, 1, sum_id, v.size)[-1]) == clipped   # the share's clipped count
    assert abs(loss - loss_ref) < 1e-5 * max(1.0, abs(loss_ref)) and rel < 1e-5


def auc_bins():
    """VF_AUC_BINS as metrics/eval_counts.h defines it."""
    text = (ROOT / "common" / "metrics" / "eval_counts.h").read_text()
    return int(re.search(r"#define VF_AUC_BINS (\d+)", text).group(1))


def mann_whitney(pos, neg):
    """AUC of two histograms over the same bins, pairs in one bin counted half."""
    below = np.concatenate([[0], np.cumsum(neg)[:-1]])
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def test_evaluation_shares_unmask_to_numpys_range_and_sklearns_counts_and_auc(session):
    """The two sums of an evaluation: where the scores lie (count, sum and sum
    of squares of each class's log-odds), then the confusion matrix and the
    per-class histograms on equal-probability bins of their normal fit;
    and the site's own metrics, computed at the site."""
    from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score
    s = session
    pb = s["pb"]
    z, y = s["emb"]["val"]
    D = z.shape[1]
    T, logit_scale = text_features(D, 2), float(np.log(30.0))
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
    p = torch.softmax(torch.tensor(np.exp(logit_scale) * zn @ Tn.T), 1).numpy()
    lo_odds = np.log(p) - np.log1p(-p)
    tensor = pb.Tensor(shape=[C, D], data=T.ravel().tolist())
    m = s["agg"].ask(pb.AggregatorMessage(task_id=300, secure_sum=pb.SecureSumTask(
        kind=pb.SECURE_SUM_EVAL_RANGE, sum_id=3, run_id=RUN_ID, participants=s["peers"], text_features=tensor,
        logit_scale=logit_scale, split="val")))
    assert m.HasField("masked_share"), m
    v = np.array(m.masked_share.values, dtype=np.uint64)
    r = v - mask_words(s["seed"], RUN_ID, 3 | (1 << 8), 3, v.size)
    count = r[0::3].astype(np.int64)
    mean = fixed_to_float(r[1::3]) * 128 / count
    sq = fixed_to_float(r[2::3]) * 128 ** 2 / count
    assert (count == len(y)).all()
    assert np.allclose(mean, lo_odds.mean(0), rtol=1e-5, atol=1e-6) and np.allclose(sq, (lo_odds ** 2).mean(0), rtol=1e-5, atol=1e-6)
    sd = np.sqrt(sq - mean ** 2)
    m = s["agg"].ask(pb.AggregatorMessage(task_id=301, secure_sum=pb.SecureSumTask(
        kind=pb.SECURE_SUM_EVAL, sum_id=4, run_id=RUN_ID, participants=s["peers"], text_features=tensor,
        logit_scale=logit_scale, split="val", site_metrics=True, grid_mean=mean.tolist(), grid_sd=sd.tolist())))
    assert m.HasField("masked_share"), m
    v = np.array(m.masked_share.values, dtype=np.uint64)
    counts = v - mask_words(s["seed"], RUN_ID, 2 | (1 << 8), 4, v.size)
    assert int(counts[0]) == len(y)
    cm = counts[1:1 + C * C].astype(np.int64).reshape(C, C)
    assert (cm == confusion_matrix(y, p.argmax(1), labels=range(C))).all()
    bins = auc_bins()
    pos = counts[1 + C * C:1 + C * C + C * bins].astype(np.int64).reshape(C, bins)
    neg = counts[1 + C * C + C * bins:1 + C * C + 2 * C * bins].astype(np.int64).reshape(C, bins)
    present = [c for c in range(C) if 0 < (y == c).sum() < len(y)]
    auc_hist = np.mean([mann_whitney(pos[c], neg[c]) for c in present])
    auc = np.mean([roc_auc_score(y == c, p[:, c]) for c in present])
    site = json.loads(m.masked_share.site_metrics_json)
    print(f"histogram AUC {auc_hist:.6f} vs sklearn {auc:.6f}; site metrics: ACC {site['acc']:.4f} "
          f"(sklearn {accuracy_score(y, p.argmax(1)):.4f}), AUC {site['auc']:.6f}")
    assert abs(auc_hist - auc) < 1e-4
    # the bins are those of the normal fit: each score's bin, computed here
    from scipy.special import erfc
    for c in range(C):
        want = 1 + np.floor(0.5 * erfc(-(lo_odds[:, c] - mean[c]) / (sd[c] * np.sqrt(2))) * (bins - 2)).astype(np.int64)
        got = np.repeat(np.arange(bins), pos[c] + neg[c])
        # the same bins up to float32 rounding: the party's scores are float32 softmax outputs, these
        # float64, and where a class's scores crowd the bins are finer than a float32 step
        assert np.abs(np.sort(want) - got).max() <= bins // 100, (c, np.abs(np.sort(want) - got).max())
    assert abs(site["acc"] - accuracy_score(y, p.argmax(1))) < 1e-9 and abs(site["auc"] - auc) < 1e-6


def test_reused_sum_id_and_swapped_or_unsigned_keys_are_refused(session):
    s = session
    pb = s["pb"]
    z, _ = s["emb"]["train"]
    T = text_features(z.shape[1])
    m = s["agg"].ask(step_task(s, 4, [1, 2], 4, T, 1.0))   # sum 4 was answered: its masks are spent
    assert m.HasField("error") and m.error.code == 9 and "never used twice" in m.error.message, m
    b, c = s["peers"]
    forged = pb.MaskPeer(name="hosp-c", public_key=bytes(32 * [7]), signature=c.signature, certificate=c.certificate)
    m = s["agg"].ask(step_task(s, 10, [1, 2], 4, T, 1.0, peers=[b, forged]))
    assert m.HasField("error") and m.error.code == 7 and "hosp-c" in m.error.message, m
    swapped = pb.MaskPeer(name="hosp-b", public_key=c.public_key, signature=b.signature, certificate=b.certificate)
    m = s["agg"].ask(step_task(s, 11, [1, 2], 4, T, 1.0, peers=[swapped, c]))
    assert m.HasField("error") and m.error.code == 7 and "not this connection's" in m.error.message, m
    # hosp-c's key signed by hosp-c but relayed under hosp-a's name and certificate
    akit = s["fed"].fed / "image-party-hosp-a"
    acert = x509.load_pem_x509_certificate((akit / "cert.pem").read_bytes()).public_bytes(serialization.Encoding.DER)
    posing = pb.MaskPeer(name="hosp-a", public_key=c.public_key, signature=c.signature, certificate=acert)
    m = s["agg"].ask(step_task(s, 12, [1, 2], 4, T, 1.0, peers=[b, posing]))
    assert m.HasField("error") and m.error.code == 7 and "hosp-a" in m.error.message, m
