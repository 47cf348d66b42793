"""Where the tokenizer comes from when the checkpoint has none.

OpenCLIP hub checkpoints (open_clip_config.json + open_clip_model.safetensors)
usually come without vocab.json/merges.txt: open_clip keeps OpenAI's
bpe_simple_vocab_16e6.txt.gz in its package.  A small random-weight OpenCLIP
checkpoint with the real 49,408-token vocabulary size is written by
`vflclip make-model`; its own (tiny) vocabulary files are removed, and:
- `embed --text` with --tokenizer FILE.gz, --tokenizer DIR, or the .gz copied
  into the model directory gives the same embeddings as with vocab.json +
  merges.txt in the model directory, and those match open_clip's encode_text
  on ids from open_clip's own SimpleTokenizer;
- without any tokenizer, embed/tokenize/train and the knowledge party say
  what to provide and where to get it;
- the tokenizer fingerprint (the knowledge party's Hello) is one SHA-256 of the
  vocabulary whichever file it came from, recomputed here in Python from
  vocab.json + merges.txt and, separately, from the .gz;
- `train` and `evaluate` with --tokenizer match runs with the vocabulary in
  the model directory.
"""
import gzip
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer, bytes_to_unicode
from safetensors.torch import load_file

from conftest import BUILD, run

PROMPTS = ["a dermatoscopic image of melanoma", "Benign keratosis-like lesions!", "x"]
SMALL_RN_REAL_VOCAB = {
    "model_cfg": {"embed_dim": 32, "quick_gelu": True,
                  "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}},
    "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}
TINY_VOCAB_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
MAX_MERGES = 49152 - 256 - 2


@pytest.fixture(scope="module")
def tok(shared_data):
    d = shared_data / "clip-tokenizer"
    return {"gz": d / "bpe_simple_vocab_16e6.txt.gz", "hf": d / "hf-clip-vit-base-patch16"}


@pytest.fixture(scope="module")
def ckpt(vflclip, tmp_path_factory):
    """An OpenCLIP checkpoint without any tokenizer file, as hub checkpoints come."""
    root = tmp_path_factory.mktemp("oc_notok")
    (root / "cfg.json").write_text(json.dumps(SMALL_RN_REAL_VOCAB))
    run([vflclip, "make-model", "--open-clip-config", root / "cfg.json", "--seed", 3, "--out", root / "model"])
    for f in TINY_VOCAB_FILES:
        (root / "model" / f).unlink()
    return root / "model"


def with_files(src, dst, files):
    shutil.copytree(src, dst)
    for f in files:
        shutil.copy(f, dst / f.name)
    return dst


def embed_texts(vflclip, model_dir, out, *extra, check=True):
    return run([vflclip, "embed", "--model", model_dir, "--text", *PROMPTS, "--out", out, *extra], check=check)


def expect_no_tokenizer_message(p, model_dir):
    assert p.returncode != 0
    msg = p.stderr
    print(msg.strip())
    for needle in (str(model_dir), "no tokenizer", "--tokenizer PATH", "[model] tokenizer", "vocab.json + merges.txt",
                   "bpe_simple_vocab_16e6.txt.gz", "pip download open_clip_torch", "openai/clip-vit"):
        assert needle in msg, f"missing {needle!r} in: {msg}"
    assert "Traceback" not in msg and "Segmentation" not in msg


def test_text_embeddings_whichever_tokenizer_file(vflclip, ckpt, tok, tmp_path):
    before = with_files(ckpt, tmp_path / "hf_files", [tok["hf"] / "vocab.json", tok["hf"] / "merges.txt"])
    embed_texts(vflclip, before, tmp_path / "before.npy")
    ref_vflclip = np.load(tmp_path / "before.npy")

    embed_texts(vflclip, ckpt, tmp_path / "gz.npy", "--tokenizer", tok["gz"])
    embed_texts(vflclip, ckpt, tmp_path / "dir.npy", "--tokenizer", tok["hf"])
    in_dir = with_files(ckpt, tmp_path / "gz_in_dir", [tok["gz"]])
    embed_texts(vflclip, in_dir, tmp_path / "found.npy")
    for name in ("gz", "dir", "found"):
        got = np.load(tmp_path / f"{name}.npy")
        diff = float(np.abs(got - ref_vflclip).max())
        print(f"{name}: max abs diff to the vocab.json+merges.txt run {diff:.3g}")
        assert got.shape == ref_vflclip.shape and diff == 0.0

    # independent reference: open_clip's tokenizer on the .gz, open_clip's encode_text
    config = json.loads((ckpt / "open_clip_config.json").read_text())
    model = CLIP(**config["model_cfg"]).eval()
    model.load_state_dict(load_file(str(ckpt / "open_clip_model.safetensors")), strict=True)
    oc_tok = SimpleTokenizer(bpe_path=str(tok["gz"]))
    with torch.no_grad():
        ref = model.encode_text(oc_tok(PROMPTS, context_length=77)).numpy()
    got = np.load(tmp_path / "gz.npy")
    diff, scale = float(np.abs(got - ref).max()), float(np.abs(ref).max())
    print(f"--tokenizer .gz vs open_clip encode_text: max abs diff {diff:.3g} (max |ref| {scale:.3g})")
    assert diff <= 1e-4 * scale


def test_missing_tokenizer_is_a_clear_error(vflclip, ckpt, tmp_path):
    expect_no_tokenizer_message(embed_texts(vflclip, ckpt, tmp_path / "x.npy", check=False), ckpt)
    expect_no_tokenizer_message(run([vflclip, "tokenize", "--model", ckpt, "x"], check=False), ckpt)
    p = run([vflclip, "embed", "--model", ckpt, "--text", "x", "--out", tmp_path / "y.npy", "--tokenizer",
             tmp_path / "absent.txt.gz"], check=False)
    assert p.returncode != 0 and "absent.txt.gz" in p.stderr, p.stderr
    print(p.stderr.strip())


def vocabulary_sha256(tokens_by_id, merges):
    text = "".join(t + "\n" for t in tokens_by_id) + "".join(f"{a} {b}\n" for a, b in merges)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint_from_hf(d):
    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    by_id = [None] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        by_id[i] = token
    lines = (d / "merges.txt").read_text(encoding="utf-8").strip().split("\n")[1:MAX_MERGES + 1]
    return vocabulary_sha256(by_id, [tuple(line.split()) for line in lines])


def fingerprint_from_gz(path):
    # the vocabulary as OpenAI's simple_tokenizer builds it, with transformers' spelling of the specials
    lines = gzip.open(path).read().decode("utf-8").split("\n")[1:MAX_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    byte_tokens = list(bytes_to_unicode().values())
    by_id = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    return vocabulary_sha256(by_id + ["<|startoftext|>", "<|endoftext|>"], merges)


def fingerprint(vflclip, *args):
    return json.loads(run([vflclip, "tokenize", *args, "--fingerprint"]).stdout)


def test_fingerprint_is_the_vocabulary_not_the_file(vflclip, ckpt, tok, tmp_path):
    ref_hf, ref_gz = fingerprint_from_hf(tok["hf"]), fingerprint_from_gz(tok["gz"])
    assert ref_hf == ref_gz
    got = [fingerprint(vflclip, "--model", ckpt, "--tokenizer", tok["gz"]),
           fingerprint(vflclip, "--tokenizer", tok["hf"]),
           fingerprint(vflclip, "--bpe", tok["gz"]),
           fingerprint(vflclip, "--model", with_files(ckpt, tmp_path / "m", [tok["gz"]]))]
    for g in got:
        print(g)
        assert g["fingerprint"] == ref_hf and g["vocab_size"] == 49408
    assert got[3]["source"].endswith("m/bpe_simple_vocab_16e6.txt.gz")
    # a different vocabulary has a different fingerprint
    run([vflclip, "tokenize", "--write-tiny-vocab", tmp_path / "tiny"])
    assert fingerprint(vflclip, "--tokenizer", tmp_path / "tiny")["fingerprint"] == fingerprint_from_hf(tmp_path / "tiny")
    assert fingerprint(vflclip, "--tokenizer", tmp_path / "tiny")["fingerprint"] != ref_hf


def write_data(path, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in [("train", 24), ("val", 8), ("test", 12)]:
        labels = np.arange(n) % 3
        images = rng.integers(0, 256, (n, 28, 28, 3)).astype(np.uint8)
        images[..., labels % 3] //= 4  # a colour cue per class
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)


def test_train_and_evaluate_take_tokenizer(vflclip, ckpt, tok, tmp_path):
    write_data(tmp_path / "d.npz")
    common = ["--data", tmp_path / "d.npz", "--classes", "melanoma,nevus,keratosis", "--class-codes", "a,b,c",
              "--n-ctx", 4, "--epochs", 2, "--batch-size", 8, "--no-cache", "--device", "cpu", "--quiet"]
    before = with_files(ckpt, tmp_path / "hf_files", [tok["hf"] / "vocab.json", tok["hf"] / "merges.txt"])
    run([vflclip, "train", "--model", before, "--out", tmp_path / "run_before", *common])
    run([vflclip, "train", "--model", ckpt, "--tokenizer", tok["gz"], "--out", tmp_path / "run_gz", *common])
    a = load_file(str(tmp_path / "run_before" / "context.safetensors"))
    b = load_file(str(tmp_path / "run_gz" / "context.safetensors"))
    for k in a:
        diff = float((a[k] - b[k]).abs().max())
        print(f"context {k}: max abs diff {diff:.3g}")
        assert diff == 0.0
    ev = ["--context", tmp_path / "run_gz" / "context.safetensors", "--data", tmp_path / "d.npz", "--no-cache",
          "--device", "cpu"]
    m_before = json.loads(run([vflclip, "evaluate", "--model", before, *ev]).stdout)
    m_gz = json.loads(run([vflclip, "evaluate", "--model", ckpt, "--tokenizer", tok["hf"], *ev]).stdout)
    print("evaluate:", m_gz["acc"], m_gz["auc"])
    assert m_gz == m_before
    expect_no_tokenizer_message(run([vflclip, "train", "--model", ckpt, "--out", tmp_path / "run_none", *common],
                                    check=False), ckpt)


def knowledge_party_ini(tmp_path, model, tokenizer=None):
    """A knowledge party's INI beside a real knowledge-party kit (--check-config
    checks the certificate's role before the model)."""
    kit = tmp_path / "kit"
    if not kit.exists():
        run([BUILD / "vflclip", "provision", "--out", tmp_path / "fed", "--aggregator", "localhost",
             "--image-party", "a", "--knowledge-party", "derm"])
        shutil.copytree(tmp_path / "fed" / "knowledge-party-derm", kit)
    ini = kit / "kp.ini"
    ini.write_text("[aggregator]\nhost = 127.0.0.1\n[model]\ndir = " + str(model) + "\n" +
                   (f"tokenizer = {tokenizer}\n" if tokenizer else "") + "[state]\ndir = state\n")
    return ini


def test_knowledge_party_tokenizer_key(ckpt, tok, tmp_path):
    kp = BUILD / "vflclip-knowledge-party"
    p = run([kp, "--config", knowledge_party_ini(tmp_path, ckpt), "--check-config"], check=False)
    expect_no_tokenizer_message(p, ckpt)
    for source in (tok["gz"], tok["hf"]):
        p = run([kp, "--config", knowledge_party_ini(tmp_path, ckpt, source), "--check-config"])
        print(p.stdout.strip())
        assert fingerprint_from_hf(tok["hf"])[:16] in p.stdout and str(source) in p.stdout
    p = run([kp, "--config", knowledge_party_ini(tmp_path, ckpt, tmp_path / "absent"), "--check-config"], check=False)
    assert p.returncode == 1 and "[model] tokenizer" in p.stderr and "absent" in p.stderr, p.stderr


def test_hello_carries_the_vocabulary_fingerprint(vflclip, tmp_path):
    """A knowledge party whose checkpoint has no vocabulary files, given one by [model] tokenizer, joins; the
    aggregator logs the tokenizer fingerprint of its Hello; SIGTERM stops every daemon cleanly."""
    import signal

    from test_federation_support import Federation, set_key
    fed = Federation(vflclip, tmp_path / "f")
    bare = tmp_path / "model-no-vocab"
    shutil.copytree(fed.model, bare)
    for f in TINY_VOCAB_FILES:
        (bare / f).unlink()
    set_key(fed.kp.ini, "model", "dir", bare)
    set_key(fed.kp.ini, "model", "tokenizer", fed.model)
    fed.start()
    try:
        joined = [line for line in fed.aggregator.text().splitlines()
                  if "event=party_joined" in line and "role=knowledge-party" in line]
        print(joined)
        assert joined and f"tokenizer={fingerprint_from_hf(fed.model)[:16]}" in joined[0]
        assert f"tokenizer={fed.model} " in fed.kp.text()
        for d in fed.daemons():
            d.proc.send_signal(signal.SIGTERM)
        for d in fed.daemons():
            assert d.proc.wait(15) == 0, d.text()[-2000:]
            assert "event=stopping signal=15" in d.text(), d.role
    finally:
        fed.stop()
