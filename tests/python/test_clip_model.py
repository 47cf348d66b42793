"""CLIP loading and the fp32 CPU encoders against Hugging Face transformers.

transformers' own CLIPModel loads the very directory `vflclip make-model`
wrote and computes get_image_features / get_text_features on the same pixel
tensors and token ids that `vflclip embed` gets; they must agree to 1e-4
relative (max |diff| / max |reference|), for F32 and BF16 files, on the tiny
preset and on one model with the full ViT-B/32 shapes.  Damaged checkpoints
must fail with an error naming the file and the tensor."""
import json
import pathlib

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

from conftest import run

RTOL = 1e-4
RANDOM_WARNING = "MEANINGLESS for dermatology"


def make_model(vflclip, out, like="tiny", dtype="f32", seed=7):
    run([vflclip, "make-model", "--like", like, "--seed", seed, "--dtype", dtype, "--out", out])
    return out


def compare(what, ours, ref):
    diff = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max())
    print(f"{what}: max abs diff {diff:.3g} (max |ref| {scale:.3g}, relative {diff / scale:.3g})")
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert diff <= RTOL * scale, f"{what}: max abs diff {diff} exceeds {RTOL} x {scale}"


def embed(vflclip, model, out, *inputs, batch=2):
    p = run([vflclip, "embed", "--model", model, *inputs, "--out", out, "--batch", batch])
    assert RANDOM_WARNING in p.stderr, "a random-weight model must be announced loudly"
    return np.load(out)


def random_token_ids(cfg, rng, lengths):
    """[SOT, random ids, EOT] per length; the ids avoid the specials."""
    t = cfg.text_config
    return [[t.bos_token_id] + [int(i) for i in rng.integers(0, min(t.vocab_size, t.bos_token_id), n)] + [t.eos_token_id]
            for n in lengths]


def check_against_transformers(vflclip, model, tmp_path, n_images=5, text_lengths=(3, 11, 1, 30, 7)):
    hf = CLIPModel.from_pretrained(model).eval()  # bf16 files are upcast to fp32
    cfg = hf.config
    rng = np.random.default_rng(0)
    size = cfg.vision_config.image_size
    pixels = rng.standard_normal((n_images, 3, size, size)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    ours = embed(vflclip, model, tmp_path / "img.npy", "--pixels", tmp_path / "pixels.npy")
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=torch.from_numpy(pixels)).numpy()
    compare(f"{model.name} images", ours, ref)

    seqs = random_token_ids(cfg, rng, text_lengths)
    ours = embed(vflclip, model, tmp_path / "txt.npy", "--token-ids", *[",".join(map(str, s)) for s in seqs])
    T = max(map(len, seqs))
    ids = torch.tensor([s + [cfg.text_config.eos_token_id] * (T - len(s)) for s in seqs])
    with torch.no_grad():
        ref = hf.get_text_features(input_ids=ids).numpy()
    compare(f"{model.name} token ids", ours, ref)
    return hf


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_tiny_matches_transformers(vflclip, tmp_path, dtype):
    model = make_model(vflclip, tmp_path / f"tiny-{dtype}", dtype=dtype)
    check_against_transformers(vflclip, model, tmp_path)


def test_full_vit_b32_shapes_match_transformers(vflclip, tmp_path):
    """One model at the real ViT-B/32 shapes (151M parameters), F32 and BF16."""
    for dtype in ("f32", "bf16"):
        model = make_model(vflclip, tmp_path / f"b32-{dtype}", like="vit-b-32", dtype=dtype, seed=3)
        check_against_transformers(vflclip, model, tmp_path, n_images=3, text_lengths=(5, 20))
        for f in model.glob("model.safetensors"):
            f.unlink()  # 600 MB each: keep the disk tidy between the two


def test_images_and_texts_end_to_end(vflclip, tmp_path):
    """PNG files and plain texts: transformers' CLIPImageProcessor and fast
    tokenizer on the same directory, then CLIPModel."""
    from PIL import Image
    model = make_model(vflclip, tmp_path / "tiny")
    hf = CLIPModel.from_pretrained(model).eval()
    size = hf.config.vision_config.image_size
    rng = np.random.default_rng(1)
    files = []
    for i, (w, h) in enumerate([(size, size), (size, size), (3 * size, 2 * size)]):  # the last one is resized
        f = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f)
        files.append(f)
    ours = embed(vflclip, model, tmp_path / "img.npy", "--image", *files)
    proc = CLIPImageProcessor.from_pretrained(model)
    px = proc(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=px).numpy()
    compare("PNG images", ours, ref)

    texts = ["a photo of a melanoma", "dermatofibroma.", "Basal cell carcinoma, close up", "x"]
    ours = embed(vflclip, model, tmp_path / "txt.npy", "--text", *texts)
    tok = CLIPTokenizerFast.from_pretrained(model)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = hf.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).numpy()
    compare("texts", ours, ref)


def test_misaligned_f32_file(vflclip, tmp_path):
    """A header length that is not a multiple of 4 leaves F32 data unaligned in
    the mapping; the loader must copy it rather than read it in place."""
    model = make_model(vflclip, tmp_path / "tiny")
    f = model / "model.safetensors"
    data = f.read_bytes()
    n = int.from_bytes(data[:8], "little")
    f.write_bytes((n + 1).to_bytes(8, "little") + data[8:8 + n] + b" " + data[8 + n:])
    check_against_transformers(vflclip, model, tmp_path, n_images=2, text_lengths=(4,))


def test_legacy_eos_token_id_pools_at_the_largest_id(vflclip, tmp_path):
    """Configs saved before transformers PR #24773 (e.g. openai/clip-vit-base-patch16)
    have eos_token_id 2, and transformers then pools at the largest id, not at
    the first id 2.  A sequence containing id 2 before the real EOT tells the
    two rules apart."""
    model = make_model(vflclip, tmp_path / "tiny")
    cfg = json.loads((model / "config.json").read_text())
    sot, eot = cfg["text_config"]["bos_token_id"], cfg["text_config"]["eos_token_id"]
    cfg["text_config"]["eos_token_id"] = 2
    (model / "config.json").write_text(json.dumps(cfg))
    hf = CLIPModel.from_pretrained(model).eval()
    seqs = [[sot, 2, 40, 41, eot], [sot, 7, eot]]
    ours = embed(vflclip, model, tmp_path / "t.npy", "--token-ids", *[",".join(map(str, s)) for s in seqs])
    ids = torch.tensor([seqs[0], seqs[1] + [eot, eot]])
    with torch.no_grad():
        ref = hf.get_text_features(input_ids=ids).numpy()
    compare("legacy eos_token_id 2", ours, ref)


def test_batch_size_does_not_change_results(vflclip, tmp_path):
    model = make_model(vflclip, tmp_path / "tiny")
    pixels = np.random.default_rng(2).standard_normal((7, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "px.npy", pixels)
    a = embed(vflclip, model, tmp_path / "a.npy", "--pixels", tmp_path / "px.npy", batch=1)
    b = embed(vflclip, model, tmp_path / "b.npy", "--pixels", tmp_path / "px.npy", batch=3)
    compare("batch 1 vs batch 3", b, a)


def test_make_model_is_seeded_and_fingerprinted(vflclip, tmp_path):
    a = make_model(vflclip, tmp_path / "a", seed=5)
    b = make_model(vflclip, tmp_path / "b", seed=5)
    c = make_model(vflclip, tmp_path / "c", seed=6)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    desc = {k: json.loads(run([vflclip, "embed", "--model", d, "--describe"]).stdout) for k, d in zip("abc", (a, b, c))}
    fa = desc["a"]
    assert fa["vision_fingerprint"] == fa["text_fingerprint"], "both towers of one checkpoint must agree"
    assert desc["b"]["vision_fingerprint"] == fa["vision_fingerprint"]
    assert desc["c"]["vision_fingerprint"] != fa["vision_fingerprint"]
    assert json.loads((a / "config.json").read_text())["vflclip_random_weights"] is True
    # logit_scale as transformers reads it
    hf = CLIPModel.from_pretrained(a)
    assert abs(fa["logit_scale"] - float(hf.logit_scale)) < 1e-6


PRESETS = {
    "vit-b-32": ("clip-vit-base-patch32", None),
    "vit-b-16": ("clip-vit-base-patch16", None),
    "vit-l-14": ("clip-vit-large-patch14", None),
    "vit-l-14-336": ("clip-vit-large-patch14", 336),  # = large-patch14 at 336 px
}
KEYS = {
    "vision_config": ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                      "patch_size", "hidden_act", "layer_norm_eps"],
    "text_config": ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                    "max_position_embeddings", "hidden_act", "layer_norm_eps"],
}


@pytest.mark.parametrize("like", sorted(PRESETS))
def test_presets_and_parser_agree_with_real_configs(vflclip, shared_data, tmp_path, like):
    """transformers' CLIPConfig reads the real config (4.12 .. 5.x era files);
    our parser must read the same numbers, and our preset must have them."""
    name, image_size = PRESETS[like]
    real_dir = shared_data / "clip-configs" / "hf" / name
    ref = CLIPConfig.from_pretrained(real_dir)
    if image_size:
        ref.vision_config.image_size = image_size
    parsed = json.loads(run([vflclip, "embed", "--model", real_dir, "--describe"]).stdout)["config"]
    run([vflclip, "make-model", "--like", like, "--seed", 0, "--out", tmp_path / like, "--config-only"])
    preset = json.loads((tmp_path / like / "config.json").read_text())
    for sub, keys in KEYS.items():
        for k in keys:
            want = getattr(getattr(ref, sub), k)
            if not image_size or k != "image_size":
                assert parsed[sub][k] == pytest.approx(want), f"parser: {sub}.{k}"
            assert preset[sub][k] == pytest.approx(want), f"preset {like}: {sub}.{k}"
    assert parsed["projection_dim"] == preset["projection_dim"] == ref.projection_dim
    assert parsed["text_config"]["eos_token_id"] == ref.text_config.eos_token_id


# ---- damaged checkpoints -----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tensors(vflclip, tmp_path_factory):
    d = make_model(vflclip, tmp_path_factory.mktemp("tiny-src") / "m")
    return d, load_file(d / "model.safetensors")


def damaged_copy(src, dst, tensors):
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def embed_fails(vflclip, model, tmp_path, *inputs):
    p = run([vflclip, "embed", "--model", model, *inputs, "--out", tmp_path / "o.npy"], check=False)
    print(p.stderr.strip().splitlines()[-1])
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "Segmentation" not in p.stderr
    return p.stderr


def test_missing_tensor_is_named(vflclip, tiny_tensors, tmp_path):
    src, t = tiny_tensors
    t = dict(t)
    del t["vision_model.encoder.layers.1.mlp.fc2.bias"]
    m = damaged_copy(src, tmp_path / "m", t)
    np.save(tmp_path / "px.npy", np.zeros((1, 3, 32, 32), np.float32))
    err = embed_fails(vflclip, m, tmp_path, "--pixels", tmp_path / "px.npy")
    assert "model.safetensors: missing tensor vision_model.encoder.layers.1.mlp.fc2.bias" in err


def test_text_tower_loads_without_the_vision_tower(vflclip, tiny_tensors, tmp_path):
    """Each party loads only its tower: a file with the vision tensors removed
    still serves texts."""
    src, t = tiny_tensors
    m = damaged_copy(src, tmp_path / "m", {k: v for k, v in t.items() if not k.startswith(("vision_model", "visual_"))})
    cfg = CLIPConfig.from_pretrained(m).text_config
    out = tmp_path / "t.npy"
    run([vflclip, "embed", "--model", m, "--token-ids", f"{cfg.bos_token_id},5,{cfg.eos_token_id}", "--out", out])
    assert np.load(out).shape == (1, 32)


def test_wrong_shape_is_named(vflclip, tiny_tensors, tmp_path):
    src, t = tiny_tensors
    t = dict(t)
    t["text_projection.weight"] = np.zeros((16, 64), np.float32)
    m = damaged_copy(src, tmp_path / "m", t)
    err = embed_fails(vflclip, m, tmp_path, "--text", "hello")
    assert "model.safetensors: tensor text_projection.weight has shape [16, 64], the config needs [32, 64]" in err


def test_truncated_file_and_bad_config(vflclip, tiny_tensors, tmp_path):
    src, _ = tiny_tensors
    m = tmp_path / "m"
    m.mkdir()
    for f in src.iterdir():
        data = f.read_bytes()
        (m / f.name).write_bytes(data[: len(data) - 100] if f.name == "model.safetensors" else data)
    err = embed_fails(vflclip, m, tmp_path, "--text", "hello")
    assert "model.safetensors" in err and "past the end" in err

    (m / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    cfg = json.loads((src / "config.json").read_text())
    cfg["vision_config"]["num_attention_heads"] = 5
    (m / "config.json").write_text(json.dumps(cfg))
    err = embed_fails(vflclip, m, tmp_path, "--text", "hello")
    assert "config.json" in err and "not divisible by num_attention_heads 5" in err
    (m / "config.json").write_text("{ not json")
    err = embed_fails(vflclip, m, tmp_path, "--text", "hello")
    assert "config.json: not a valid JSON object" in err


def test_bad_inputs(vflclip, tiny_tensors, tmp_path):
    src, _ = tiny_tensors
    px = np.zeros((2, 3, 32, 32), np.float32)
    px[1, 2, 3, 4] = np.nan
    np.save(tmp_path / "nan.npy", px)
    err = embed_fails(vflclip, src, tmp_path, "--pixels", tmp_path / "nan.npy")
    assert "image 1" in err and "not finite" in err
    np.save(tmp_path / "shape.npy", np.zeros((2, 3, 16, 16), np.float32))
    err = embed_fails(vflclip, src, tmp_path, "--pixels", tmp_path / "shape.npy")
    assert "must be (N, 3, 32, 32)" in err
    eos = CLIPConfig.from_pretrained(src).text_config.eos_token_id
    err = embed_fails(vflclip, src, tmp_path, "--token-ids", f"1,999999,{eos}")
    assert "token id 999999" in err and "outside the vocabulary" in err
    err = embed_fails(vflclip, src, tmp_path, "--token-ids", "1,2,3")
    assert "sequence 0 has no end-of-text token" in err
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    err = embed_fails(vflclip, src, tmp_path, "--image", tmp_path / "broken.png")
    assert "broken.png" in err
