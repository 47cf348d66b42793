"""Inputs that are wrong are refused, never silently used (issue 14 item 6).

- `vflclip train`: class names whose count is not the data's class count, or
  labels past the names, are an error naming both;
- --n-ctx that disagrees with --init-words' token count is an error naming both;
- a tokenizer that does not belong to the model (size, special ids, special
  token names) is an error naming the tokenizer, the model and what differs;
- text is cleaned the way the checkpoint's library does it: an OpenCLIP
  checkpoint's as open_clip's SimpleTokenizer (ftfy + html.unescape + whitespace
  + lower), a Hugging Face one's as transformers' CLIPTokenizerFast; both
  compared with those libraries on the model's own vocabulary.
"""
import gzip
import json
import shutil

import numpy as np
import pytest

from conftest import run

TEXTS = ["melanocytic &amp; nevi", "basal  cell\tcarcinoma", "caf&eacute; au lait", "&lt;b&gt;", " Vascular Lesions ",
         "&amp;amp;", "&AMP;AMP; x", "&EACUTE;", "a &amp b", "&#65;&#x42;&#0;&#128;", "\u201cquoted\u201d \u2019s",
         "\ufb01ne \uff21\uff22\uff23", "\u039f\u0394\u039f\u03a3 \u03a3", "\u0130stanbul", "x\x1cy",
         "\x1b[31mred\x1b[0m", "<start_of_text>hi<end_of_text>", "<|startoftext|>a", "e\u0301",
         "&notit; &notin; &not", "&#xD800; &#1114112; &#99999999999999;", "<b>&amp;amp;</b>", "\u2028a\u00a0b\u3000c"]
OC_CFG = {"model_cfg": {"embed_dim": 32, "quick_gelu": True,
                        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
                        "text_cfg": {"context_length": 77, "vocab_size": 2000, "width": 32, "heads": 2, "layers": 1}}}


@pytest.fixture(scope="module")
def models(vflclip, tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    run([vflclip, "make-model", "--like", "tiny", "--seed", 1, "--out", root / "hf"])
    (root / "oc.json").write_text(json.dumps(OC_CFG))
    run([vflclip, "make-model", "--open-clip-config", root / "oc.json", "--seed", 1, "--out", root / "oc"])
    return root


def c_ids(vflclip, model, texts, *extra):
    p = run([vflclip, "tokenize", "--model", model, *extra, "--stdin"], input="\n".join(texts) + "\n")
    return [json.loads(line) for line in p.stdout.splitlines()]


# ------------------------------------------------------------- text rules ----
def test_open_clip_checkpoint_cleans_text_as_open_clip(vflclip, models, tmp_path):
    from open_clip.tokenizer import SimpleTokenizer
    merges = (models / "oc" / "merges.txt").read_bytes().rstrip(b"\n")   # the same vocabulary as a bpe .gz
    (tmp_path / "bpe.txt.gz").write_bytes(gzip.compress(merges))
    oc = SimpleTokenizer(bpe_path=str(tmp_path / "bpe.txt.gz"))
    got = c_ids(vflclip, models / "oc", TEXTS)
    for text, ids in zip(TEXTS, got):
        ref = [oc.sot_token_id] + oc.encode(text) + [oc.eot_token_id]
        assert ids == ref, f"{text!r}: open_clip {ref}, vflclip {ids}"
    print(f"{len(TEXTS)} texts as open_clip's SimpleTokenizer, e.g. {TEXTS[0]!r} -> {got[0]}")


def test_hf_checkpoint_cleans_text_as_clip_tokenizer_fast(vflclip, models):
    from transformers import CLIPTokenizerFast
    fast = CLIPTokenizerFast.from_pretrained(str(models / "hf"))
    got = c_ids(vflclip, models / "hf", TEXTS)
    for text, ids in zip(TEXTS, got):
        assert ids == fast(text)["input_ids"], f"{text!r}: transformers {fast(text)['input_ids']}, vflclip {ids}"


def test_the_two_libraries_differ_on_entities(vflclip, models, tmp_path):
    """The same vocabulary, read for each checkpoint: '&amp;' is '&' for OpenCLIP, three tokens for HF."""
    oc_vocab = with_tokenizer(models / "oc", tmp_path / "oc_same", models / "hf")
    a = c_ids(vflclip, oc_vocab, ["melanocytic &amp; nevi"])[0]
    b = c_ids(vflclip, models / "hf", ["melanocytic &amp; nevi"])[0]
    c = c_ids(vflclip, models / "hf", ["melanocytic & nevi"])[0]
    assert a == c and a != b


def with_tokenizer(model, dst, tokenizer_dir, edit=None):
    shutil.copytree(model, dst)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / f, dst / f)
    if edit:
        edit(dst)
    return dst


# ------------------------------------------------------ tokenizer vs model ----
def refused(p, *needles):
    assert p.returncode != 0, p.stdout
    print(p.stderr.strip())
    for n in needles:
        assert str(n) in p.stderr, f"missing {n!r} in {p.stderr}"
    assert "Traceback" not in p.stderr and "Segmentation" not in p.stderr


def test_tokenizer_of_another_size_is_refused(vflclip, models, tmp_path):
    # the OpenCLIP model has 2000 embedding rows; its random weights may keep more rows than the
    # small vocabulary (make-model presets do), real weights may not
    assert c_ids(vflclip, models / "oc", ["x"])
    real = tmp_path / "oc_real"
    shutil.copytree(models / "oc", real)
    cfg = json.loads((real / "open_clip_config.json").read_text())
    cfg.pop("vflclip_random_weights", None)
    (real / "open_clip_config.json").write_text(json.dumps(cfg))
    p = run([vflclip, "tokenize", "--model", real, "x"], check=False)
    refused(p, f"tokenizer {real}", f"model {real}", "834 tokens", "2000 rows", "text_cfg.vocab_size")


def test_tokenizer_larger_than_the_embedding_is_refused(vflclip, models, shared_data):
    hf_tok = shared_data / "clip-tokenizer" / "hf-clip-vit-base-patch16"
    p = run([vflclip, "tokenize", "--model", models / "hf", "--tokenizer", hf_tok, "x"], check=False)
    refused(p, f"tokenizer {hf_tok}", f"model {models / 'hf'}", "49408 tokens", "834 rows")
    p = run([vflclip, "embed", "--model", models / "hf", "--tokenizer", hf_tok, "--text", "x", "--out",
             models / "x.npy"], check=False)
    refused(p, "49408 tokens", "834 rows")


def swap_specials(d):
    """The same tokens, but <|startoftext|> no longer next to the end (as another library's layout)."""
    vocab = json.loads((d / "vocab.json").read_text())
    sot, other = vocab["<|startoftext|>"], vocab["a</w>"]
    vocab["<|startoftext|>"], vocab["a</w>"] = other, sot
    (d / "vocab.json").write_text(json.dumps(vocab))


def test_special_ids_that_differ_are_refused(vflclip, models, tmp_path):
    tok = with_tokenizer(models / "hf", tmp_path / "swapped_tok", models / "hf", swap_specials)
    p = run([vflclip, "tokenize", "--model", models / "oc", "--tokenizer", tok, "x"], check=False)
    refused(p, f"tokenizer {tok}", f"model {models / 'oc'}", "OpenCLIP", "largest id", "832/833")
    real = tmp_path / "hf_real"   # (make-model's random HF weights may be paired with any vocabulary)
    shutil.copytree(models / "hf", real)
    cfg = json.loads((real / "config.json").read_text())
    cfg.pop("vflclip_random_weights", None)
    (real / "config.json").write_text(json.dumps(cfg))
    p = run([vflclip, "tokenize", "--model", real, "--tokenizer", tok, "x"], check=False)
    refused(p, f"tokenizer {tok}", "bos_token_id/eos_token_id 832/833")


def test_special_token_names_that_differ_are_refused(vflclip, models, tmp_path):
    def bert_like(d):
        m = json.loads((d / "special_tokens_map.json").read_text())
        m["bos_token"] = {"content": "<s>"}
        (d / "special_tokens_map.json").write_text(json.dumps(m))
    tok = with_tokenizer(models / "hf", tmp_path / "other_specials", models / "hf", bert_like)
    p = run([vflclip, "tokenize", "--model", models / "oc", "--tokenizer", tok, "x"], check=False)
    refused(p, "special_tokens_map.json", f"model {models / 'oc'}", 'bos_token "<s>"', "<|startoftext|>")


# ------------------------------------------------------------ vflclip train ----
def write_npz(path, labels_max, n=14, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "val", "test"):
        labels = np.arange(n) % (labels_max + 1)
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3)).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def train(vflclip, model, data, out, *extra):
    return run([vflclip, "train", "--model", model, "--data", data, "--out", out, "--epochs", 1, "--batch-size", 8,
                "--no-cache", "--device", "cpu", "--quiet", *extra], check=False)


def test_class_names_must_match_the_labels(vflclip, models, tmp_path):
    seven = write_npz(tmp_path / "seven.npz", 6)
    four = write_npz(tmp_path / "four.npz", 3)
    p = train(vflclip, models / "hf", seven, tmp_path / "r1", "--classes", "a,b,c,d")
    refused(p, "--classes gives 4 class names", f"{seven} has labels 0..6 (7 classes)")
    p = train(vflclip, models / "hf", four, tmp_path / "r2", "--classes", "a,b,c,d,e,f,g")
    refused(p, "--classes gives 7 class names", f"{four} has labels 0..3 (4 classes)")
    p = train(vflclip, models / "hf", four, tmp_path / "r3")
    refused(p, "default class list", "gives 7 class names", "labels 0..3 (4 classes)")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    p = train(vflclip, models / "hf", four, tmp_path / "r4", "--classes", "a,b,c,d")
    assert p.returncode == 0, p.stderr


def test_n_ctx_must_agree_with_init_words(vflclip, models, tmp_path):
    data = write_npz(tmp_path / "d.npz", 3)
    words = "a photo of a"
    n = len(json.loads(run([vflclip, "tokenize", "--model", models / "hf", "--words", words]).stdout))
    p = train(vflclip, models / "hf", data, tmp_path / "bad", "--classes", "a,b,c,d", "--init-words", words,
              "--n-ctx", n + 1)
    refused(p, f"--n-ctx {n + 1}", f"--init-words '{words}'", f"{n} tokens")
    for extra in ([], ["--n-ctx", n]):
        p = train(vflclip, models / "hf", data, tmp_path / f"ok{len(extra)}", "--classes", "a,b,c,d", "--init-words",
                  words, *extra)
        assert p.returncode == 0, p.stderr
