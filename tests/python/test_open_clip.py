"""OpenCLIP checkpoints (ViT and ModifiedResNet) against open_clip's own models.

Every checkpoint is written by `vflclip make-model` (random weights, the hub
layout: open_clip_config.json + open_clip_model.safetensors) and loaded into
open_clip_torch 2.26.1's CLIP with the config's model_cfg and a *strict*
load_state_dict of that very file, so a missing, extra or misshapen tensor in
the writer fails here.  Images go through open_clip's own eval transform
(image_transform with the checkpoint's preprocess_cfg) on PNGs written by PIL;
texts are tokenized by transformers' CLIPTokenizerFast from the model
directory's vocabulary, zero-padded to the context length as open_clip's
tokenizer does, and encoded by open_clip's encode_text (argmax pooling).
Tolerance: 1e-4 of max |reference|; the max abs differences are printed.

- reduced ResNet (F32 and BF16 files) and ViT, images and texts
- the full RN50x4 (288 px) image and text towers at real shapes
- the seven configs of the seed paper (shared data): each parses, and a
  checkpoint with its widths, image size and patch/heads (depth cut to one
  block per stage so the suite stays fast) embeds like open_clip
- an OpenCLIP ViT and the same weights renamed into the Hugging Face layout
  (by this test, in Python) give the same `vflclip embed` outputs, and the HF
  copy matches transformers' CLIPModel
- damaged or mismatched checkpoints fail with a message naming file and tensor
"""
import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from open_clip.model import CLIP
from open_clip.transform import image_transform
from PIL import Image
from safetensors.torch import load_file, save_file

from conftest import SMALL_RN, SMALL_VIT, run

REL_TOL = 1e-4
PROMPTS = ["a dermatoscopic image of melanoma", "benign keratosis-like lesions", "x"]
# (width, height): an exact-size image (only normalised), landscape and
# portrait ones whose crop offsets differ between torchvision and HF rounding
IMAGE_SIZES = [(68, 50), (64, 64), (45, 59)]


def report(what, got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} vs {ref.shape}"
    diff, scale = float(np.abs(got - ref).max()), float(np.abs(ref).max())
    print(f"{what}: max abs diff {diff:.3g} (max |ref| {scale:.3g})")
    assert diff <= REL_TOL * scale, f"{what}: max abs diff {diff:.3g} > {REL_TOL} x {scale:.3g}"


def make_checkpoint(vflclip, out, cfg=None, like=None, dtype="f32", seed=7):
    args = [vflclip, "make-model", "--seed", seed, "--dtype", dtype, "--out", out]
    if like:
        args += ["--like", like]
    else:
        cfg_path = pathlib.Path(str(out) + ".json")
        cfg_path.write_text(json.dumps(cfg))
        args += ["--open-clip-config", cfg_path]
    run(args)
    return pathlib.Path(out)


def open_clip_reference(model_dir):
    """open_clip's CLIP with the checkpoint's model_cfg, strictly loaded, and its eval transform."""
    config = json.loads((model_dir / "open_clip_config.json").read_text())
    model = CLIP(**config["model_cfg"]).eval()
    model.load_state_dict(load_file(str(model_dir / "open_clip_model.safetensors")), strict=True)
    pp = config["preprocess_cfg"]
    transform = image_transform(config["model_cfg"]["vision_cfg"]["image_size"], is_train=False,
                                mean=pp["mean"], std=pp["std"], resize_mode=pp["resize_mode"],
                                interpolation=pp["interpolation"])
    return model, transform


def write_images(folder, sizes, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (w, h) in enumerate(sizes):
        # smooth gradients plus noise, so resampling matters but stays well-conditioned
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
        img = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"img{i}_{w}x{h}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


def tokenize(model_dir, texts, context_length):
    from transformers import CLIPTokenizerFast
    tok = CLIPTokenizerFast.from_pretrained(str(model_dir))
    ids = torch.zeros(len(texts), context_length, dtype=torch.long)  # open_clip pads with 0
    for i, t in enumerate(texts):
        seq = tok(t)["input_ids"][:context_length]
        ids[i, :len(seq)] = torch.tensor(seq)
    return ids


def embed(vflclip, model_dir, out, images=None, texts=None):
    args = [vflclip, "embed", "--model", model_dir, "--out", out]
    args += ["--image", *images] if images else ["--text", *texts]
    run(args)
    return np.load(out)


def check_against_open_clip(vflclip, model_dir, tmp, image_sizes=IMAGE_SIZES, texts=PROMPTS, label=""):
    model, transform = open_clip_reference(model_dir)
    if image_sizes:
        paths = write_images(tmp / "images", image_sizes)
        with torch.no_grad():
            ref = model.encode_image(torch.stack([transform(Image.open(p)) for p in paths])).numpy()
        report(f"{label} image embeddings", embed(vflclip, model_dir, tmp / "img.npy", images=paths), ref)
    if texts:
        ids = tokenize(model_dir, texts, model.context_length)
        with torch.no_grad():
            ref = model.encode_text(ids).numpy()
        report(f"{label} text embeddings", embed(vflclip, model_dir, tmp / "txt.npy", texts=texts), ref)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_resnet_reduced_matches_open_clip(vflclip, tmp_path, dtype):
    model_dir = make_checkpoint(vflclip, tmp_path / "rn", SMALL_RN, dtype=dtype)
    check_against_open_clip(vflclip, model_dir, tmp_path, label=f"reduced ResNet {dtype}")


def test_vit_reduced_matches_open_clip(vflclip, tmp_path):
    model_dir = make_checkpoint(vflclip, tmp_path / "vit", SMALL_VIT)
    check_against_open_clip(vflclip, model_dir, tmp_path, label="reduced ViT")


def test_rn50x4_full_shapes_match_open_clip(vflclip, tmp_path):
    model_dir = make_checkpoint(vflclip, tmp_path / "rn50x4", like="rn50x4")
    config = json.loads((model_dir / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"] == {"image_size": 288, "layers": [4, 6, 10, 6], "width": 80,
                                                 "patch_size": None}
    assert config["preprocess_cfg"]["resize_mode"] == "shortest"
    assert config["preprocess_cfg"]["interpolation"] == "bicubic"
    check_against_open_clip(vflclip, model_dir, tmp_path, image_sizes=[(400, 300), (288, 288)],
                            texts=PROMPTS[:2], label="RN50x4")


SEED_PAPER_CONFIGS = ["RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"]


@pytest.mark.parametrize("name", SEED_PAPER_CONFIGS)
def test_seed_paper_configs_load_and_embed(vflclip, shared_data, tmp_path, name):
    src = json.loads((shared_data / "clip-configs" / "open_clip" / f"{name}.json").read_text())
    # the unmodified config parses, and is written back in the hub layout with the same shapes
    run([vflclip, "make-model", "--open-clip-config", shared_data / "clip-configs" / "open_clip" / f"{name}.json",
         "--seed", 1, "--config-only", "--out", tmp_path / "cfg"])
    written = json.loads((tmp_path / "cfg" / "open_clip_config.json").read_text())
    for tower in ("vision_cfg", "text_cfg"):
        for key, value in src[tower].items():
            if value is not None:
                assert written["model_cfg"][tower][key] == value, (name, tower, key)
    assert written["model_cfg"]["embed_dim"] == src["embed_dim"]
    # a checkpoint with the config's widths, image size, patch and heads, one block per stage
    cfg = json.loads(json.dumps(src))
    if isinstance(cfg["vision_cfg"]["layers"], list):
        cfg["vision_cfg"]["layers"] = [1, 1, 1, 1]
    else:
        cfg["vision_cfg"]["layers"] = 1
    cfg["text_cfg"].update(layers=1, vocab_size=1000)
    cfg = {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}
    model_dir = make_checkpoint(vflclip, tmp_path / name, cfg)
    size = src["vision_cfg"]["image_size"]
    check_against_open_clip(vflclip, model_dir, tmp_path, image_sizes=[(size + 37, size + 11)], texts=PROMPTS[:1],
                            label=name)


def rename_to_hf(oc_dir, hf_dir):
    """The OpenCLIP ViT checkpoint's weights in transformers' CLIPModel layout."""
    config = json.loads((oc_dir / "open_clip_config.json").read_text())
    mc, pp = config["model_cfg"], config["preprocess_cfg"]
    v, t = mc["vision_cfg"], mc["text_cfg"]
    sd = load_file(str(oc_dir / "open_clip_model.safetensors"))
    out = {}

    def blocks(src, dst, layers, width):
        for i in range(layers):
            s, d = f"{src}transformer.resblocks.{i}.", f"{dst}.encoder.layers.{i}."
            q, k, vv = sd[s + "attn.in_proj_weight"].split(width)
            qb, kb, vb = sd[s + "attn.in_proj_bias"].split(width)
            out.update({d + "self_attn.q_proj.weight": q, d + "self_attn.k_proj.weight": k,
                        d + "self_attn.v_proj.weight": vv, d + "self_attn.q_proj.bias": qb,
                        d + "self_attn.k_proj.bias": kb, d + "self_attn.v_proj.bias": vb,
                        d + "self_attn.out_proj.weight": sd[s + "attn.out_proj.weight"],
                        d + "self_attn.out_proj.bias": sd[s + "attn.out_proj.bias"],
                        d + "layer_norm1.weight": sd[s + "ln_1.weight"], d + "layer_norm1.bias": sd[s + "ln_1.bias"],
                        d + "layer_norm2.weight": sd[s + "ln_2.weight"], d + "layer_norm2.bias": sd[s + "ln_2.bias"],
                        d + "mlp.fc1.weight": sd[s + "mlp.c_fc.weight"], d + "mlp.fc1.bias": sd[s + "mlp.c_fc.bias"],
                        d + "mlp.fc2.weight": sd[s + "mlp.c_proj.weight"], d + "mlp.fc2.bias": sd[s + "mlp.c_proj.bias"]})

    blocks("visual.", "vision_model", v["layers"], v["width"])
    blocks("", "text_model", t["layers"], t["width"])
    out.update({
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].t(),
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t(),
        "logit_scale": sd["logit_scale"],
    })
    hf_dir.mkdir()
    save_file({k: x.contiguous() for k, x in out.items()}, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(oc_dir / f, hf_dir / f)
    vocab = json.loads((oc_dir / "vocab.json").read_text())
    eot = vocab["<|endoftext|>"]
    act = "quick_gelu" if mc.get("quick_gelu") else "gelu"
    hf_config = {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": mc["embed_dim"],
        "logit_scale_init_value": 2.6592,
        "text_config": {"hidden_size": t["width"], "intermediate_size": 4 * t["width"], "num_hidden_layers": t["layers"],
                        "num_attention_heads": t["heads"], "max_position_embeddings": t["context_length"],
                        "vocab_size": t["vocab_size"], "hidden_act": act, "layer_norm_eps": 1e-5,
                        "projection_dim": mc["embed_dim"], "bos_token_id": vocab["<|startoftext|>"],
                        "eos_token_id": eot, "pad_token_id": eot},
        "vision_config": {"hidden_size": v["width"], "intermediate_size": 4 * v["width"],
                          "num_hidden_layers": v["layers"], "num_attention_heads": v["width"] // v.get("head_width", 64),
                          "image_size": v["image_size"], "patch_size": v["patch_size"], "hidden_act": act,
                          "layer_norm_eps": 1e-5, "projection_dim": mc["embed_dim"]},
    }
    (hf_dir / "config.json").write_text(json.dumps(hf_config, indent=2))
    size = v["image_size"]
    (hf_dir / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": pp["mean"], "image_std": pp["std"],
        "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
        "size": {"shortest_edge": size}}))


def test_open_clip_vit_equals_its_hugging_face_renaming(vflclip, tmp_path):
    oc_dir = make_checkpoint(vflclip, tmp_path / "oc", SMALL_VIT, seed=11)
    hf_dir = tmp_path / "hf"
    rename_to_hf(oc_dir, hf_dir)
    # images whose crop offsets agree between torchvision and HF rounding, so only the weights differ in layout
    paths = write_images(tmp_path / "images", [(96, 64), (64, 64)])
    for kind, kw in (("image", {"images": paths}), ("text", {"texts": PROMPTS})):
        a = embed(vflclip, oc_dir, tmp_path / f"oc_{kind}.npy", **kw)
        b = embed(vflclip, hf_dir, tmp_path / f"hf_{kind}.npy", **kw)
        report(f"OpenCLIP ViT vs its HF renaming, {kind}", a, b)
    # the renamed copy really is the same model for transformers
    from transformers import CLIPModel
    hf = CLIPModel.from_pretrained(str(hf_dir)).eval()
    ids = tokenize(oc_dir, PROMPTS, 77)
    with torch.no_grad():
        ref = hf.get_text_features(input_ids=ids, attention_mask=(ids != 0).long()).numpy()
    report("HF CLIPModel on the renamed weights, text", np.load(tmp_path / "oc_text.npy"), ref)
    _, transform = open_clip_reference(oc_dir)
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=torch.stack([transform(Image.open(p)) for p in paths])).numpy()
    report("HF CLIPModel on the renamed weights, image", np.load(tmp_path / "oc_image.npy"), ref)


# ------------------------------------------------------------------ damage ----

def rewrite_weights(model_dir, edit):
    path = model_dir / "open_clip_model.safetensors"
    sd = load_file(str(path))
    edit(sd)
    save_file(sd, str(path), metadata={"format": "pt"})


def expect_failure(vflclip, model_dir, tmp_path, *needles):
    p = run([vflclip, "embed", "--model", model_dir, "--image", *write_images(tmp_path / "im", [(64, 64)]),
             "--out", tmp_path / "x.npy"], check=False)
    assert p.returncode != 0, "embed accepted a damaged checkpoint"
    msg = p.stderr
    print("error:", msg.strip().splitlines()[-1])
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    assert "Traceback" not in msg and "Segmentation" not in msg


def test_damaged_checkpoints_fail_clearly(vflclip, tmp_path):
    base = make_checkpoint(vflclip, tmp_path / "base", SMALL_RN)

    def variant(name):
        d = tmp_path / name
        shutil.copytree(base, d)
        return d

    d = variant("missing")
    rewrite_weights(d, lambda sd: sd.pop("visual.layer2.0.bn2.running_var"))
    expect_failure(vflclip, d, tmp_path, "open_clip_model.safetensors", "visual.layer2.0.bn2.running_var")

    d = variant("shape")
    rewrite_weights(d, lambda sd: sd.update({"visual.attnpool.q_proj.weight": torch.zeros(512, 500)}))
    expect_failure(vflclip, d, tmp_path, "open_clip_model.safetensors", "visual.attnpool.q_proj.weight", "shape")

    d = variant("disagree")  # config says 2 blocks in layer2, the file has 3
    cfg = json.loads((d / "open_clip_config.json").read_text())
    cfg["model_cfg"]["vision_cfg"]["layers"] = [1, 1, 1, 1]
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    expect_failure(vflclip, d, tmp_path, "visual.layer2.1", "disagree")

    d = variant("badvar")
    rewrite_weights(d, lambda sd: sd["visual.bn1.running_var"].fill_(-1.0))
    expect_failure(vflclip, d, tmp_path, "visual.bn1.running_var", "negative")

    d = variant("vit_config")  # a ViT config over ResNet weights
    cfg = json.loads((d / "open_clip_config.json").read_text())
    cfg["model_cfg"]["vision_cfg"].update(layers=2, width=128, patch_size=16)
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    expect_failure(vflclip, d, tmp_path, "open_clip_model.safetensors", "visual.conv1.weight", "shape")

    d = variant("unsupported")
    cfg = json.loads((d / "open_clip_config.json").read_text())
    cfg["model_cfg"]["vision_cfg"]["timm_model_name"] = "resnet50"
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    expect_failure(vflclip, d, tmp_path, "open_clip_config.json", "timm_model_name", "not supported")

    d = variant("badjson")
    (d / "open_clip_config.json").write_text('{"model_cfg": {"embed_dim": 48,')
    expect_failure(vflclip, d, tmp_path, "open_clip_config.json", "JSON")
