"""Seed corpora of the libFuzzer targets: tests/fuzz/corpus/<target>/, a few
small valid inputs each, written by independent tools (numpy, PIL, h2, json)
or by the project's own writers where the input must carry our signature.
The files are committed; run this again only to change them:

    .venv/bin/python tests/fuzz/make_corpus.py [BUILD]

BUILD (default build-fuzz) must hold BUILD/vflclip (or set VFLCLIP; for the
fixture PKI and revocation lists) and BUILD/fuzz/fuzz_transcript, fuzz_aggregator,
fuzz_admin, fuzz_knowledge_party and fuzz_image_party (which write their seeds
with VF_FUZZ_WRITE_SEEDS, with the real protobuf-c message types; the message
handlers' targets keep task ids and shapes in step with the state they drive).
The image party's data set tests/fuzz/fixtures/image-party.npz is written here.  The fixture PKI in
tests/fuzz/fixtures/pki (a test CA and an aggregator certificate valid for a
century, with its private key: test material only) is made once and kept."""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, sys.argv[1] if len(sys.argv) > 1 else "build-fuzz")
CORPUS = os.path.join(HERE, "corpus")
PKI = os.path.join(HERE, "fixtures", "pki")


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def fresh(target):
    shutil.rmtree(os.path.join(CORPUS, target), ignore_errors=True)


# ---- safetensors (the format by hand, as the safetensors library writes it) --
def safetensors(tensors, meta=None):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = arr.tobytes()
        dt = {"float32": "F32", "float16": "F16", "float64": "F64", "int64": "I64", "uint8": "U8"}[str(arr.dtype)]
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


fresh("safetensors")
rng = np.random.default_rng(0)
out("safetensors", "f32", safetensors({"a.weight": rng.standard_normal((4, 3), dtype=np.float32),
                                       "b.bias": np.arange(5, dtype=np.float32)}, {"format": "pt"}))
out("safetensors", "mixed", safetensors({"h": np.ones((2, 2), np.float16), "ids": np.arange(7, dtype=np.int64).reshape(1, 7),
                                         "d": np.array([1.5, -2], np.float64), "u": np.zeros((3,), np.uint8)}))
out("safetensors", "bf16", struct.pack("<Q", 72) + b'{"x":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}'.ljust(72)
    + bytes([0x80, 0x3f, 0, 0x40, 0x40, 0x40, 0x80, 0xbf]))
out("safetensors", "empty", safetensors({}))

# ---- npy --------------------------------------------------------------------
def npy(arr, **kw):
    b = io.BytesIO()
    np.save(b, arr, **kw)
    return b.getvalue()


fresh("npy")
out("npy", "f4", npy(rng.standard_normal((3, 4)).astype("<f4")))
out("npy", "f8-fortran", npy(np.asfortranarray(rng.standard_normal((2, 3)))))
out("npy", "i2-big", npy(np.arange(6, dtype=">i2").reshape(2, 3)))
out("npy", "u1", npy(np.arange(12, dtype=np.uint8).reshape(2, 2, 3)))
out("npy", "bool-scalar", npy(np.array(True)))
b = io.BytesIO()
np.lib.format.write_array(b, np.array([1.5, -2], "<f2"), version=(2, 0))
out("npy", "f2-v2", b.getvalue())

# ---- npz (numpy.savez, stored and deflated) ---------------------------------
fresh("npz")
def npz(compressed, n=(3, 1, 2), side=4):
    parts = {}
    for split, k in zip(("train", "val", "test"), n):
        parts[f"{split}_images"] = rng.integers(0, 255, (k, side, side, 3), dtype=np.uint8)
        parts[f"{split}_labels"] = rng.integers(0, 7, (k, 1), dtype=np.uint8)
    b = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(b, **parts)
    return b.getvalue()


out("npz", "stored", npz(False))
out("npz", "deflated", npz(True))
out("npz", "flat-labels", npz(False, (2, 2, 2), 2).replace(b"(2, 1)", b"(2,)  ", 1))

# ---- the image party's data set (tests/fuzz/fixtures/image-party.npz) -------
# fuzz_image_party encodes it once at start-up: 6/2/2 images of 8x8, labels
# 0..6, as numpy.savez writes DermaMNIST (its own generator: the seeds below
# stay as they were).
def image_party_npz():
    g = np.random.default_rng(13)
    parts = {}
    for split, k in (("train", 6), ("val", 2), ("test", 2)):
        parts[f"{split}_images"] = g.integers(0, 255, (k, 8, 8, 3), dtype=np.uint8)
        parts[f"{split}_labels"] = (np.arange(k, dtype=np.uint8) % 7).reshape(k, 1)
    b = io.BytesIO()
    np.savez(b, **parts)
    return b.getvalue()


os.makedirs(os.path.join(HERE, "fixtures"), exist_ok=True)
with open(os.path.join(HERE, "fixtures", "image-party.npz"), "wb") as f:
    f.write(image_party_npz())

# ---- PNG and JPEG (PIL); the fuzz targets prepend the signature --------------
def img_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


fresh("png")
fresh("jpeg")
base = Image.fromarray(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8))
for mode in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
    out("png", mode.replace(";", ""), img_bytes(base.convert(mode), "PNG")[8:])
for mode in ("RGB", "L", "CMYK"):
    out("jpeg", mode, img_bytes(base.convert(mode), "JPEG", quality=80)[3:])
out("jpeg", "progressive", img_bytes(base, "JPEG", progressive=True)[3:])
out("jpeg", "subsampled", img_bytes(base.resize((16, 16)), "JPEG", subsampling=2)[3:])

# ---- labels CSV (HAM10000's layout; the target puts these images beside it) --
fresh("labels_csv")
out("labels_csv", "ham", "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
    "HAM_0000118,ISIC_0000000,bkl,histo,80.0,male,scalp\nHAM_0000118,ISIC_0000001,bkl,histo,80.0,male,scalp\n"
    "HAM_0002730,ISIC_0000002,nv,histo,80.0,male,scalp\n")
out("labels_csv", "split", "image_id,dx,split\r\na,mel,train\r\nb,nv,val\r\nc,\"bcc\",test\r\n")
out("labels_csv", "quoted-cr", "image_id,dx,note\r\"a\",akiec,\"two\rlines\"\rb.png,vasc,\"x,y\"\r")

# ---- INI: a party config and a run config ----------------------------------
fresh("ini")
out("ini", "party", "[tls]\ncert = cert.pem\nkey = key.pem\nca = ca.crt\n\n[aggregator]\nhost = agg.example\nport = 50051\n"
    "[model]\ndir = ${VF_FUZZ_HOME}/model\nname = \"hospital a\"\n[data]\nmax_pixels = 1000\n[privacy]\nclip = 0.5\non = yes\n"
    "[state]\ndir = state\n[log]\nlevel = debug\n")
out("ini", "run", "; a run\n[run]\nepochs = 3\nbatch_size = 16\noptimizer = sgd\nlr = 0.002\nwarmup_epochs = 1\nwarmup = linear\n"
    "n_ctx = 4\ncsc = true\nclass_pos = middle\nimage_parties = h1,h2\ntext_grad_clip = 1\ntext_grad_noise = 0.5\n"
    "epsilon_budget = 8\ntemplate = a photo of {ctx} {class}.\n")
out("ini", "errors", "[run]\nepochs = ten\nepochs = 2\n[nope]\nx=1\n")

# ---- model configs (transformers' and open_clip's JSON layouts) -------------
fresh("model_config")
out("model_config", "hf-tiny", json.dumps({
    "architectures": ["CLIPModel"], "projection_dim": 32, "logit_scale_init_value": 2.6592,
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "vocab_size": 600, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "image_size": 32, "patch_size": 8, "hidden_act": "gelu"}}))
out("model_config", "hf-old-dict", json.dumps({"projection_dim": 16, "text_config_dict": {"hidden_size": 16, "num_attention_heads": 2},
                                               "vision_config_dict": {"hidden_size": 16, "num_attention_heads": 2, "image_size": 16,
                                                                      "patch_size": 4}, "vflclip_random_weights": True}))
out("model_config", "oc-vit", json.dumps({"model_cfg": {"embed_dim": 32, "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 600, "width": 32, "heads": 4, "layers": 2}},
    "preprocess_cfg": {"mean": [0.48, 0.45, 0.40], "std": [0.26, 0.26, 0.27], "interpolation": "bicubic", "resize_mode": "shortest"}}))
out("model_config", "oc-resnet-bare", json.dumps({"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
                                                  "text_cfg": {"context_length": 77, "vocab_size": 600, "width": 32, "heads": 4, "layers": 1}}))
# regression: found by this fuzzer, a ResNet layer count past int (UB in the cast before the bound check)
out("model_config", "regress-resnet-layer-1e79", '{"embed_dim": 64, "vision_cfg": {"image_size": 76, "layers": [1, 1, '
    + "4" * 78 + '1, 1], "width": 16}, "text_cfg":{"co": 300, "width": 32, "heads": 4, "layers": 1}}')
for sub in ("hf", "open_clip"):   # the real configs, when ../shared/data is there (small JSON files)
    d = os.path.join(ROOT, "..", "shared", "data", "clip-configs", sub)
    if os.path.isdir(d):
        for i, name in enumerate(sorted(os.listdir(d))[:3]):
            p = os.path.join(d, name)
            if os.path.isfile(p) and os.path.getsize(p) < 8192:
                with open(p, "rb") as f:
                    out("model_config", f"shared-{sub}-{i}", f.read())

# ---- tokenizer text (byte 0: vocabulary and length budget) -------------------
fresh("tokenizer")
for i, t in enumerate(["a photo of a melanoma.", "A  DERMOSCOPY\timage of Basal-Cell carcinoma, it's 5mm!",
                       "<|startoftext|>caf\u00e9 na\u00efve \u00c5ngstr\u00f6m<|endoftext|>", "\u65e5\u672c\u8a9e \U0001f600 e\u0301",
                       "word " * 40]):
    out("tokenizer", f"text{i}", bytes([(i * 37) & 0xff]) + t.encode())

# ---- the rest need the project's builds ------------------------------------
vflclip = os.environ.get("VFLCLIP", os.path.join(BUILD, "vflclip"))
tmp = tempfile.mkdtemp()
try:
    if not os.path.exists(os.path.join(PKI, "ca.crt")):
        subprocess.run([vflclip, "provision", "--out", f"{tmp}/prov", "--aggregator", "agg.fuzz", "--image-party", "h1",
                        "--knowledge-party", "kp", "--days", "36500", "--ca-days", "36500", "--crl-days", "36500"], check=True)
        os.makedirs(PKI, exist_ok=True)
        shutil.copy(f"{tmp}/prov/ca/ca.crt", f"{PKI}/ca.crt")
        shutil.copy(f"{tmp}/prov/aggregator-agg.fuzz/cert.pem", f"{PKI}/aggregator-cert.pem")
        shutil.copy(f"{tmp}/prov/aggregator-agg.fuzz/key.pem", f"{PKI}/aggregator-key.pem")
        print("new fixture PKI: update the serials in fuzz_transcript.c and fuzz_aggregator.c")
    # CRLs: a fresh empty list, and one with two revoked certificates (PEM and DER)
    fresh("crl")
    subprocess.run([vflclip, "provision", "--out", f"{tmp}/crl", "--aggregator", "a", "--image-party", "x", "y"], check=True,
                   stdout=subprocess.DEVNULL)
    with open(f"{tmp}/crl/ca/crl.pem", "rb") as f:
        out("crl", "empty.pem", f.read())
    for who in ("x", "y"):
        subprocess.run([vflclip, "cert", "revoke", "--ca", f"{tmp}/crl/ca", "--cert", f"{tmp}/crl/image-party-{who}/cert.pem"],
                       check=True, stdout=subprocess.DEVNULL)
    with open(f"{tmp}/crl/ca/crl.pem", "rb") as f:
        pem = f.read()
    out("crl", "two.pem", pem)
    import base64
    body = b"".join(l for l in pem.splitlines() if l and not l.startswith(b"-----"))
    out("crl", "two.der", base64.b64decode(body))
    out("crl", "serial", b"0x7A:15:70:05:3F:41:A1:8E")
    # transcripts, the aggregator's message streams, the Admin calls and the parties'
    # AggregatorMessage streams: written by the targets themselves
    for target in ("transcript", "aggregator", "admin", "knowledge_party", "image_party"):
        fresh(target)
        d = os.path.join(CORPUS, target)
        os.makedirs(d)
        env = dict(os.environ, VF_FUZZ_WRITE_SEEDS=d, VF_FUZZ_FIXTURES=os.path.join(HERE, "fixtures"),
                   LSAN_OPTIONS="suppressions=" + os.path.join(HERE, "lsan.supp"))
        subprocess.run([os.path.join(BUILD, "fuzz", "fuzz_" + target)], check=True, env=env)
finally:
    shutil.rmtree(tmp)

# ---- the gRPC server: requests made with the independent h2 library ---------
# (byte 0 = role, byte 1 = chunk size, then frames without the connection
# preface, which the target prepends)
import h2.config
import h2.connection

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def request(path, messages, end=True, extra=()):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":path", path), (":authority", "x"),
                         ("content-type", "application/grpc"), ("te", "trailers"), *extra])
    for i, m in enumerate(messages):
        c.send_data(sid, b"\x00" + len(m).to_bytes(4, "big") + m, end_stream=end and i == len(messages) - 1)
    if not messages and end:
        c.end_stream(sid)
    c.ping(b"12345678")
    data = c.data_to_send()
    assert data.startswith(PREFACE)
    return data[len(PREFACE):]


fresh("rpc_server")
seeds = [
    (2, 255, request("/vflclip.v1.test.RpcTest/Unary", [b"hello"])),
    (2, 7, request("/vflclip.v1.test.RpcTest/Bidi", [b"P1", b"xx", b"R2", b"yy"], extra=[("grpc-timeout", "100m")])),
    (4, 255, request("/vflclip.v1.test.RpcTest/AdminOnly", [b"F"])),
    (3, 255, request("/vflclip.v1.test.RpcTest/AdminOnly", [b"denied"])),
    (1, 3, request("/a/b", [b"z" * 5000])),
    (2, 255, request("/no/such", [], extra=[("grpc-encoding", "gzip")])),
    (2, 255, request("/vflclip.v1.test.RpcTest/Unary", [b"q" * 3000, b"r" * 3000], end=False)),
]
for i, (role, chunk, frames) in enumerate(seeds):
    out("rpc_server", f"seed{i}", bytes([role, chunk - 1]) + frames)

total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(CORPUS) for f in fs)
print(f"seed corpora in {CORPUS}: {total} bytes")
