"""Privacy beyond TLS, on real federated traffic (docs/threat-model.md).

The real aggregator runs; the knowledge party and the image party are Python
grpcio peers holding real party certificates, so the test sees every byte
each of them receives.  The image party sends synthetic CLIP-like embeddings
(8 classes, shared direction + class direction + noise) and the knowledge
party answers every step with fixed text features, recording each dL/dT it
is sent.  Checked:
- receive-nothing: over all runs, the image party's seat receives only
  Welcome, EncodeSplit and Shutdown, and no float anywhere;
- dL/dT as sent equals PyTorch autograd's gradient of the CoOp loss of the
  batch (batches rebuilt from the seed), the per-example clipped mean with
  text_grad_clip, the mean over k batches with text_grad_accumulate, and the
  noise added with text_grad_noise has standard deviation noise * clip;
- the label-leak attack (infer each batch's class set from dL/dT) succeeds
  unprotected and falls to chance with noise; accumulation weakens it;
- epsilon in `vflclip status`, the watch result and privacy.json equals
  Google's dp-accounting RdpAccountant with the same integer orders
  (relative 1e-9), over a grid through `vflclip dp-epsilon` too; an
  epsilon budget stops the run cleanly after the number of steps
  dp-accounting allows.
Two more use the real daemons: `vflclip train` in one process and the
federation agree with accumulation + clipping + noise on, and a real image
party with [privacy] embed_clip/embed_noise sends transformers' CLIP
features clipped plus noise of the configured size."""
import json
import queue
import threading

import dp_accounting as dp
import grpc
import numpy as np
import pytest
import torch

from conftest import run
from test_federation_support import RUN_FLAGS, Federation, compare_runs, set_key
from test_grpc_support import stubs  # noqa: F401  (fixture)

D, C, B, SEED = 32, 8, 3, 7
SIZES = {"train": 240, "val": 16, "test": 16}
LOGIT_SCALE = float(np.log(100.0))
ORDERS = list(range(2, 65)) + [128, 256, 512, 1024]
FP = "ab" * 32


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic(seed=0):
    rng = np.random.default_rng(seed)
    m_img, m_txt, cls = unit(rng.normal(size=D)), unit(rng.normal(size=D)), unit(rng.normal(size=(C, D)))
    data = {}
    for split, n in SIZES.items():
        y = rng.integers(0, C, n)
        data[split] = ((2.5 * (m_img + 0.6 * cls[y] + 0.2 * rng.normal(size=(n, D)))).astype(np.float32), y)
    text = (3 * unit(m_txt + 0.3 * cls + 0.05 * rng.normal(size=(C, D)))).astype(np.float32)
    return data, text


# ---- the batch order, rebuilt from the seed (common/data/shuffle.c) ----------------
M64 = (1 << 64) - 1


def splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def epoch_order(seed, epoch, n):
    _, z = splitmix(seed)
    st = z ^ (((epoch + 1) * 0xD1B54A32D192ED03) & M64)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        limit = M64 - M64 % (i + 1)
        while True:
            st, x = splitmix(st)
            if x < limit:
                break
        j = x % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def batches(epochs, n=SIZES["train"]):
    return [epoch_order(SEED, e, n)[k * B:(k + 1) * B] for e in range(epochs) for k in range(n // B)]


# ---- references: PyTorch autograd ---------------------------------------------------
def per_example_grads(x, y, text):
    """(n, C, D): d/dT of each example's -log softmax_y(s cos(x, T))."""
    out = []
    for i in range(len(y)):
        t = torch.tensor(text, dtype=torch.float64, requires_grad=True)
        xi = torch.tensor(x[i:i + 1], dtype=torch.float64)
        logits = np.exp(LOGIT_SCALE) * torch.nn.functional.normalize(xi, dim=1) @ torch.nn.functional.normalize(t, dim=1).T
        torch.nn.functional.cross_entropy(logits, torch.tensor(y[i:i + 1])).backward()
        out.append(t.grad.numpy())
    return np.array(out)


def clipped(g, clip):
    norms = np.linalg.norm(g.reshape(len(g), -1), axis=1)
    return g * np.minimum(1.0, clip / norms)[:, None, None]


def rdp_epsilon(q, sigma, steps, delta=1e-5):
    acc = dp.rdp.RdpAccountant(orders=ORDERS)
    acc.compose(dp.PoissonSampledDpEvent(q, dp.GaussianDpEvent(sigma)), steps)
    return acc.get_epsilon(delta)


# ---- the attack ------------------------------------------------------------------------
def attack(grads, expected_present):
    """Predicts, per release and class, whether the class was in it.  Rows of
    classes absent from a batch are positive mixes of the batch's image
    directions, rows of present classes carry a negative own-image term, so
    each class's rows over the run split along one direction (its first
    principal component); the side whose share matches the expected share of
    present classes (known from the batch size and the class prior) is
    'present'."""
    grads = np.asarray(grads)
    pred = np.zeros(grads.shape[:2], bool)
    for c in range(grads.shape[1]):
        rows = unit(grads[:, c].astype(np.float64))
        proj = rows @ np.linalg.svd(rows - rows.mean(0), full_matrices=False)[2][0]
        if abs((proj < 0).mean() - expected_present) > abs((proj > 0).mean() - expected_present):
            proj = -proj
        pred[:, c] = proj < 0
    return pred


def balanced_accuracy(pred, truth):
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    return 0.5 * ((pred & truth).sum() / truth.sum() + (~pred & ~truth).sum() / (~truth).sum())


# ---- Python peers with real certificates --------------------------------------------------
class Peer:
    """Joins the aggregator with a kit's certificate, records every message it
    receives (raw bytes) and answers through `answer(message) -> [PartyMessage]`."""

    def __init__(self, fed, pb, kit, hello, answer):
        self.pb, self.answer, self.q, self.raw = pb, answer, queue.Queue(), []
        k = fed.fed / kit
        creds = grpc.ssl_channel_credentials((k / "ca.crt").read_bytes(), (k / "key.pem").read_bytes(),
                                             (k / "cert.pem").read_bytes())
        self.ch = grpc.secure_channel(f"localhost:{fed.port}", creds, options=[("grpc.enable_http_proxy", 0)])
        join = self.ch.stream_stream("/vflclip.v1.Federation/Join", request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=lambda b: bytes(b))
        self.q.put(pb.PartyMessage(hello=hello))
        self.responses = join(iter(self.q.get, None))
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            for raw in self.responses:
                self.raw.append(raw)
                for reply in self.answer(self.pb.AggregatorMessage.FromString(raw)):
                    self.q.put(reply)
        except grpc.RpcError:
            pass

    def close(self):
        self.q.put(None)
        self.ch.close()


class KnowledgeParty:
    def __init__(self, pb, text):
        self.pb, self.text, self.grads = pb, text, {}
        self.run = None

    def features(self, task, step):
        pb = self.pb
        t = pb.Tensor(shape=[C, D], data=self.text.ravel().tolist())
        return pb.PartyMessage(task_id=task, text_features=pb.TextFeatures(step=step, features=t, logit_scale=LOGIT_SCALE))

    def __call__(self, m):
        pb, kind = self.pb, m.WhichOneof("body")
        if kind == "run_setup":
            self.run = m.run_setup.run_id
            self.grads[self.run] = []
            ready = pb.TextReady(n_classes=C, dim=D, ctx_rows=4, ctx_width=16, class_names=[f"class {c}" for c in range(C)],
                                 model_fingerprint=FP, template="{ctx} {class}.", n_ctx=4)
            return [pb.PartyMessage(task_id=m.task_id, text_ready=ready), self.features(m.task_id, 0)]
        if kind == "text_backward":
            g = m.text_backward.grad_text_features
            self.grads[self.run].append(np.asarray(g.data, np.float32).reshape(tuple(g.shape)))
            return [self.features(m.task_id, m.text_backward.step + 1)]
        if kind == "checkpoint":
            action = m.checkpoint.action
            if action in (pb.CHECKPOINT_SAVE, pb.CHECKPOINT_MARK_BEST):
                return [pb.PartyMessage(task_id=m.task_id, ack=pb.Ack(detail=str(action)))]
            if action == pb.CHECKPOINT_RESTORE_BEST:
                return [self.features(m.task_id, m.checkpoint.step)]
            return [pb.PartyMessage(task_id=m.task_id, context_file=pb.ContextFile(data=b"python test peer"))]
        return []


class ImageParty:
    def __init__(self, pb, data):
        self.pb, self.data = pb, data

    def __call__(self, m):
        if m.WhichOneof("body") != "encode_split":
            return []
        pb, es = self.pb, m.encode_split
        x, y = self.data[es.split]
        n, size, out = len(y), es.chunk_size, []
        for off in range(0, n, size):
            k = min(size, n - off)
            out.append(pb.PartyMessage(task_id=m.task_id, embeddings=pb.EmbeddingsChunk(
                split=es.split, offset=off, count=k, dim=D, data=x[off:off + k].ravel().tolist(),
                labels=y[off:off + k].tolist(), ids=[f"{es.split}-{i}" for i in range(off, off + k)],
                last=off + k >= n, total=n)))
        return out


@pytest.fixture(scope="module")
def peers(vflclip, stubs, tmp_path_factory):  # noqa: F811
    pb = stubs.fed
    fed = Federation(vflclip, tmp_path_factory.mktemp("privacy"))
    data, text = synthetic()
    fed.aggregator.start()
    fed.wait_parties(0)   # listening
    kp = KnowledgeParty(pb, text)
    kp_peer = Peer(fed, pb, "knowledge-party-derm", pb.Hello(role=pb.ROLE_KNOWLEDGE_PARTY, name="derm", model_fingerprint=FP,
                                                             embed_dim=D, tokenizer_fingerprint="cd" * 32), kp)
    splits = [pb.SplitSize(split=s, count=n) for s, n in SIZES.items()]
    img_peer = Peer(fed, pb, "image-party-hosp-a", pb.Hello(role=pb.ROLE_IMAGE_PARTY, name="hosp-a", model_fingerprint=FP,
                                                           embed_dim=D, splits=splits, preprocessing_fingerprint="ef" * 32),
                    ImageParty(pb, data))
    fed.wait_parties(2)

    class P:
        pass
    p = P()
    p.fed, p.pb, p.data, p.text, p.kp, p.img_peer, p.runs = fed, pb, data, text, kp, img_peer, {}
    x, y = data["train"]
    p.per_example = per_example_grads(x, y, text)                 # (n, C, D) at the fixed text features
    p.clip = float(np.median(np.linalg.norm(p.per_example.reshape(len(y), -1), axis=1)))

    def start(run_id, *flags, epochs=2):
        out = fed.cli("run", "start", "--epochs", epochs, "--batch-size", B, "--seed", SEED, "--image-parties", "hosp-a",
                      "--run-id", run_id, *flags, "--watch", check=False, timeout=300)
        final = json.loads(out.stdout.splitlines()[-1])
        assert final["state"] == "done", out.stdout + out.stderr + fed.aggregator.text()[-3000:]
        p.runs[run_id] = final
        return final, [g.astype(np.float64) for g in kp.grads[run_id]]
    p.start = start
    try:
        yield p
    finally:
        kp_peer.close()
        img_peer.close()
        fed.stop()


def class_sets(batch_list, y):
    return np.array([np.isin(np.arange(C), y[b]) for b in batch_list])


EXPECTED_PRESENT = 1 - (1 - 1 / C) ** B


def test_plain_dldt_is_autograd_and_leaks_the_batch_classes(peers):
    final, grads = peers.start("plain")
    x, y = peers.data["train"]
    bl = batches(2)
    assert len(grads) == len(bl) == final["step"]
    ref = np.array([peers.per_example[b].mean(0) for b in bl])
    d = float(np.abs(np.array(grads) - ref).max())
    print(f"dL/dT sent vs autograd: max abs diff {d:.3g} (max |dL/dT| {np.abs(ref).max():.3g})")
    assert d <= 1e-5 * max(1.0, np.abs(ref).max())
    acc = balanced_accuracy(attack(grads, EXPECTED_PRESENT), class_sets(bl, y))
    peers.runs["attack_plain"] = acc
    print(f"label-leak attack, no protection: balanced accuracy {acc:.3f} (chance 0.5)")
    assert acc >= 0.75


def test_clipping_is_per_example(peers):
    _, grads = peers.start("clip", "--text-grad-clip", peers.clip)
    ref = np.array([clipped(peers.per_example[b], peers.clip).mean(0) for b in batches(2)])
    d = float(np.abs(np.array(grads) - ref).max())
    print(f"clipped dL/dT (clip {peers.clip:.4g}) vs autograd per-example clipping: max abs diff {d:.3g}")
    assert d <= 1e-5 * max(1.0, np.abs(ref).max())


def test_noise_defeats_the_attack_and_epsilon_matches_dp_accounting(peers):
    sigma = 1.0
    final, grads = peers.start("noise", "--text-grad-clip", peers.clip, "--text-grad-noise", sigma)
    x, y = peers.data["train"]
    bl = batches(2)
    clean = np.array([clipped(peers.per_example[b], peers.clip).sum(0) for b in bl])
    noise = np.array(grads) * B - clean
    std = float(noise.std()) / (sigma * peers.clip)
    print(f"noise on dL/dT: std {std:.4f} x (noise * clip), mean {noise.mean() / (sigma * peers.clip):+.4f}")
    assert abs(std - 1) < 0.03 and abs(noise.mean()) < 0.03 * sigma * peers.clip
    acc = balanced_accuracy(attack(grads, EXPECTED_PRESENT), class_sets(bl, y))
    print(f"label-leak attack: no protection {peers.runs.get('attack_plain', float('nan')):.3f}, "
          f"noise {sigma} x clip: {acc:.3f} (chance 0.5)")
    assert abs(acc - 0.5) < 0.08
    ref = rdp_epsilon(B / SIZES["train"], sigma, len(bl))
    status = peers.fed.status()
    results = peers.fed.results("noise", peers.fed.root / "noise-results")
    report = json.loads((results / "privacy.json").read_text())["text_grad"]
    print(f"epsilon after {len(bl)} steps: status {status['epsilon']:.6f}, watch {final['epsilon']:.6f}, "
          f"privacy.json {report['epsilon']:.6f}, dp-accounting {ref:.6f}")
    for e in (status["epsilon"], final["epsilon"], report["epsilon"]):
        assert abs(e - ref) <= 1e-5 * ref
    assert report["steps"] == len(bl) and report["sampling_rate"] == pytest.approx(B / SIZES["train"])


def test_accumulation_sends_the_mean_of_k_batches_and_blurs_batch_classes(peers):
    k = 4
    final, grads = peers.start("accumulate", "--text-grad-accumulate", k)
    x, y = peers.data["train"]
    bl = batches(2)
    per_epoch = SIZES["train"] // B
    groups = [list(range(e * per_epoch + s, min(e * per_epoch + s + k, (e + 1) * per_epoch)))
              for e in range(2) for s in range(0, per_epoch, k)]
    assert final["step"] == len(grads) == len(groups)
    ref = np.array([np.mean([peers.per_example[bl[i]].mean(0) for i in g], axis=0) for g in groups])
    d = float(np.abs(np.array(grads) - ref).max())
    print(f"accumulated dL/dT (k={k}) vs mean of autograd batch gradients: max abs diff {d:.3g}")
    assert d <= 1e-5 * max(1.0, np.abs(ref).max())
    # The attacker wants each batch's classes; it sees one release per k batches.
    pred = attack(grads, 1 - (1 - 1 / C) ** (B * k))
    per_batch_pred = np.array([pred[j] for j, g in enumerate(groups) for _ in g])
    acc = balanced_accuracy(per_batch_pred, class_sets(bl, y))
    print(f"label-leak attack on each batch with accumulation k={k}: balanced accuracy {acc:.3f} "
          f"(no protection {peers.runs.get('attack_plain', float('nan')):.3f})")
    assert acc < peers.runs.get("attack_plain", 1.0) - 0.1


def test_epsilon_budget_stops_the_run_cleanly(peers):
    sigma, q = 1.0, B / SIZES["train"]
    allowed = 50
    budget = 0.5 * (rdp_epsilon(q, sigma, allowed) + rdp_epsilon(q, sigma, allowed + 1))
    final, grads = peers.start("budget", "--text-grad-clip", peers.clip, "--text-grad-noise", sigma,
                               "--epsilon-budget", f"{budget:.9f}", epochs=3)
    status = peers.fed.status()
    print(f"budget {budget:.4f}: stopped after {final['step']} steps (dp-accounting allows {allowed}), "
          f"epsilon {final['epsilon']:.4f}; message: {final.get('message')}")
    assert final["step"] == len(grads) == allowed
    assert final["epsilon"] <= budget and status["epsilon"] <= budget and status["state"] == "done"
    assert "epsilon_budget" in final["message"]
    human = peers.fed.cli("status").stdout
    assert "epsilon" in human and "budget" in human


def test_an_image_party_receives_no_tensor(peers):
    """After all the runs above: every message the image party's seat received."""
    pb = peers.pb
    assert len(peers.runs) >= 2, "run after the other tests of this module"
    kinds = {}

    def floats_in(msg):
        n = 0
        for field, value in msg.ListFields():
            if field.type == field.TYPE_MESSAGE:
                for v in (value if field.label == field.LABEL_REPEATED else [value]):
                    n += floats_in(v)
            elif field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
                n += len(value) if field.label == field.LABEL_REPEATED else 1
            elif field.type == field.TYPE_BYTES:
                n += len(value)
        return n
    for raw in peers.img_peer.raw:
        m = pb.AggregatorMessage.FromString(raw)
        kind = m.WhichOneof("body")
        kinds[kind] = kinds.get(kind, 0) + 1
        assert kind in ("welcome", "encode_split", "shutdown"), kind
        assert floats_in(m) == 0, m
    print(f"the image party received {len(peers.img_peer.raw)} messages: {kinds}; no float, no bytes field")
    assert kinds.get("encode_split", 0) >= 3 * len([r for r in peers.runs if not r.startswith("attack")])


def test_accountant_matches_dp_accounting_over_a_grid(vflclip):
    worst = 0.0
    for q in (0.001, 0.01, 0.1, 1.0):
        for sigma in (0.7, 1.1, 4.0):
            for steps in (1, 100, 10000):
                for delta in (1e-5, 1e-8):
                    p = run([vflclip, "dp-epsilon", "--noise", sigma, "--sampling-rate", q, "--steps", steps, "--delta", delta])
                    mine = json.loads(p.stdout)["epsilon"]
                    ref = rdp_epsilon(q, sigma, steps, delta)
                    worst = max(worst, abs(mine - ref) / ref)
                    assert abs(mine - ref) <= 1e-9 * ref, (q, sigma, steps, delta, mine, ref)
    print(f"vflclip dp-epsilon vs dp-accounting RdpAccountant (same integer orders): max relative diff {worst:.3g}")


@pytest.fixture(scope="module")
def real_fed(vflclip, tmp_path_factory):
    f = Federation(vflclip, tmp_path_factory.mktemp("privacy-real"))
    f.start()
    yield f
    f.stop()


def test_federated_equals_one_process_with_privacy_on(real_fed, tmp_path):
    flags = [*RUN_FLAGS, "--text-grad-accumulate", "2", "--text-grad-clip", "0.05", "--text-grad-noise", "0.8"]
    p = real_fed.cli("run", "start", *flags, "--run-id", "private", "--watch")
    final = json.loads(p.stdout.splitlines()[-1])
    assert final["state"] == "done", p.stderr
    out = real_fed.results("private", tmp_path / "fed")
    single = real_fed.train_single(tmp_path / "single", *flags)
    d = compare_runs(out, tmp_path / "single")
    print(f"with accumulate 2, clip 0.05, noise 0.8: federated vs one process max abs diff context {d['ctx']:.3g}, "
          f"test {d['test']:.3g}, epochs {d['epochs']:.3g}; epsilon {final['epsilon']:.4f} vs {single['epsilon']:.4f}")
    assert final["step"] == single["steps"] and d["ctx"] <= 1e-5 and d["test"] <= 1e-6 and d["epochs"] <= 1e-6
    assert abs(final["epsilon"] - single["epsilon"]) <= 1e-9 * single["epsilon"]
    fed_report = json.loads((out / "privacy.json").read_text())["text_grad"]
    one_report = json.loads((tmp_path / "single" / "privacy.json").read_text())["text_grad"]
    assert fed_report == one_report


def test_image_party_embedding_dp_is_clip_plus_noise_of_clip_features(vflclip, stubs, tmp_path_factory):  # noqa: F811
    """A real image party with [privacy] embed_clip / embed_noise / seed, asked
    for its splits by the grpcio recorder of test_federation_privacy.py: what
    it sends minus transformers' CLIP features clipped to embed_clip is
    Gaussian noise of std embed_noise * embed_clip, its Hello says so, and
    the same seed gives the same noise after a restart."""
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel
    from test_federation_privacy import record_party
    fed = Federation(vflclip, tmp_path_factory.mktemp("embed-dp"))
    kit = fed.fed / "aggregator-localhost"
    clip, sigma = 0.3, 0.5
    party = fed.images["hosp-b"]
    for key, value in (("embed_clip", clip), ("embed_noise", sigma), ("seed", 11)):
        set_key(party.ini, "privacy", key, value)
    sent = []
    for attempt in range(2):
        rec = record_party(stubs, kit, party)
        msgs = [stubs.fed.PartyMessage.FromString(r) for r in rec.raw]
        hello = msgs[0].hello
        assert hello.embed_clip == pytest.approx(clip) and hello.embed_noise_multiplier == pytest.approx(sigma)
        chunks = [m.embeddings for m in msgs if m.WhichOneof("body") == "embeddings" and m.embeddings.split == "train"]
        sent.append(np.concatenate([np.asarray(c.data, np.float32).reshape(c.count, c.dim) for c in chunks]))
    part = fed.parts[1]
    hf = CLIPModel.from_pretrained(fed.model).eval()
    proc = CLIPImageProcessor.from_pretrained(fed.model)
    px = proc(images=[Image.fromarray(x) for x in part["train_images"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=px).numpy().astype(np.float64)
    norms = np.linalg.norm(ref, axis=1, keepdims=True)
    noise = sent[0] - ref * np.minimum(1.0, clip / norms)
    print(f"embedding DP: {len(ref)} rows, feature norms {norms.min():.3g}..{norms.max():.3g}, clip {clip}: "
          f"noise std {noise.std() / (sigma * clip):.4f} x (noise * clip), mean {noise.mean():+.2e}; "
          f"restart with the same seed: max abs diff {np.abs(sent[0] - sent[1]).max():.3g}")
    assert norms.min() > clip   # every row was clipped, so the reference is exact
    assert abs(noise.std() / (sigma * clip) - 1) < 0.08 and abs(noise.mean()) < 0.12 * sigma * clip
    np.testing.assert_array_equal(sent[0], sent[1])
