"""bf16 image towers on the CPU (issue 18): `vflclip embed --precision bf16|auto|fp32`.

On a CPU with AVX512_BF16 or AMX-BF16 (and a build with oneDNN), the bf16
embeddings must agree with the fp32 ones (the reference) to cosine >= 0.9999:
- every backbone at random weights: ViT-B/32, ViT-B/16, ViT-L/14,
  ViT-L/14-336, RN50x4, RN50x16, RN50x64, on random preprocessed pixels.
  ViT-B/16 comes in the Hugging Face layout (`make-model --like vit-b-16`,
  stacked q/k/v), the others in the OpenCLIP layout (fused in_proj) with a
  one-layer text tower (only the image tower is used).  By default ViT-B/32,
  ViT-B/16 and RN50x4 are full size and the four largest keep their width,
  heads, patch and image size but not their depth (ViT: 4 layers; ResNet: one
  Bottleneck per stage), so the file stays fast; VF_BF16_FULL=1 runs all
  seven at full size (a few minutes, several GB of temporary files);
- the real HAM10000 images of ../shared/data (ViT-B/16, full size).
Elsewhere each of those says in one line that the CPU has no bf16.

Everywhere (VFLCLIP_CPU_NO_BF16=1 makes a bf16 CPU look like one without):
`--precision bf16 --device cpu` fails saying why, `auto` falls back to fp32
(bit for bit the default) and says so, and the default stays fp32.
"""
import json
import os

import numpy as np
import pytest

from conftest import run

FULL = os.environ.get("VF_BF16_FULL", "") not in ("", "0")
COSINE_MIN = 0.9999

# OpenCLIP model configs (open_clip's own), text towers cut to one small layer.
TEXT = {"context_length": 77, "vocab_size": 1000, "width": 64, "heads": 1, "layers": 1}
OPEN_CLIP = {
    "vit-b-32": (512, {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32, "head_width": 64}, None),
    "vit-l-14": (768, {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14, "head_width": 64}, 4),
    "vit-l-14-336": (768, {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14, "head_width": 64}, 4),
    "rn50x4": (640, {"image_size": 288, "layers": [4, 6, 10, 6], "width": 80, "patch_size": None}, None),
    "rn50x16": (768, {"image_size": 384, "layers": [6, 8, 18, 8], "width": 96, "patch_size": None}, [1, 1, 1, 1]),
    "rn50x64": (1024, {"image_size": 448, "layers": [3, 15, 36, 10], "width": 128, "patch_size": None}, [1, 1, 1, 1]),
}


def embed(vflclip, model, pixels, out, *extra, env=None, check=True):
    return run([vflclip, "embed", "--model", model, "--pixels", pixels, "--out", out, *extra], check=check,
               env={**os.environ, **(env or {})})


def device_line(p):
    lines = [line for line in p.stderr.splitlines() if "event=device" in line]
    assert len(lines) == 1, p.stderr
    return lines[0]


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def cpu_bf16(vflclip, tmp_path_factory):
    """Whether this CPU (and build) runs bf16: what `--precision auto` chose, from its log line."""
    d = tmp_path_factory.mktemp("probe")
    run([vflclip, "make-model", "--like", "tiny", "--seed", 1, "--out", d / "m"])
    size = json.loads((d / "m" / "config.json").read_text())["vision_config"]["image_size"]
    np.save(d / "px.npy", np.zeros((1, 3, size, size), np.float32))
    line = device_line(embed(vflclip, d / "m", d / "px.npy", d / "e.npy", "--device", "cpu", "--precision", "auto"))
    return "precision=bf16" in line, line


def need_bf16(cpu_bf16):
    if not cpu_bf16[0]:
        pytest.skip(f"SKIP: this CPU has no bf16 matmuls, fp32 is used ({cpu_bf16[1].split('precision_why=')[-1]})")


def make_backbone(vflclip, name, out):
    """A random-weight model of backbone `name`; returns (dir, image size, what was built)."""
    if name == "vit-b-16":
        run([vflclip, "make-model", "--like", "vit-b-16", "--seed", 3, "--out", out])
        return out, 224, "full size, Hugging Face layout"
    embed_dim, vision, reduced = OPEN_CLIP[name]
    vision = dict(vision)
    what = "full size, OpenCLIP layout"
    if reduced is not None and not FULL:
        what = f"OpenCLIP layout, full width and image size, layers {reduced} instead of {vision['layers']}"
        vision["layers"] = reduced
    cfg = {"embed_dim": embed_dim, "quick_gelu": False, "vision_cfg": vision, "text_cfg": TEXT}
    path = out.parent / f"{name}.json"
    path.write_text(json.dumps(cfg))
    run([vflclip, "make-model", "--open-clip-config", path, "--seed", 3, "--out", out])
    return out, vision["image_size"], what


@pytest.mark.parametrize("name", ["vit-b-32", "vit-b-16", "vit-l-14", "vit-l-14-336", "rn50x4", "rn50x16", "rn50x64"])
def test_bf16_matches_fp32(vflclip, tmp_path, cpu_bf16, name):
    need_bf16(cpu_bf16)
    model, size, what = make_backbone(vflclip, name, tmp_path / name)
    pixels = np.random.default_rng(4).standard_normal((2, 3, size, size)).astype(np.float32)
    np.save(tmp_path / "px.npy", pixels)
    embed(vflclip, model, tmp_path / "px.npy", tmp_path / "fp32.npy", "--device", "cpu", "--precision", "fp32")
    p = embed(vflclip, model, tmp_path / "px.npy", tmp_path / "bf16.npy", "--device", "cpu", "--precision", "bf16")
    assert "precision=bf16" in device_line(p)
    fp32, bf16 = np.load(tmp_path / "fp32.npy"), np.load(tmp_path / "bf16.npy")
    cos = cosines(fp32, bf16)
    print(f"{name} ({what}): bf16 vs fp32 min cosine {cos.min():.7f}, "
          f"max abs diff {np.abs(fp32 - bf16).max():.3g} (max |fp32| {np.abs(fp32).max():.3g})")
    assert cos.min() >= COSINE_MIN
    assert not np.array_equal(fp32, bf16), "bf16 must actually compute in bf16"


@pytest.mark.parametrize("name", ["vit-b-16", "vit-l-14"])
def test_bf16_without_amx_matches_fp32(vflclip, tmp_path, cpu_bf16, name):
    """A CPU with AVX512_BF16 but no AMX runs every bf16 product through oneDNN (VFLCLIP_CPU_NO_AMX=1 makes an AMX
    CPU do the same): the same accuracy, and not the AMX path's numbers."""
    need_bf16(cpu_bf16)
    model, size, what = make_backbone(vflclip, name, tmp_path / name)
    np.save(tmp_path / "px.npy", np.random.default_rng(5).standard_normal((2, 3, size, size)).astype(np.float32))
    out = {}
    for label, prec, env in [("fp32", "fp32", {}), ("onednn", "bf16", {"VFLCLIP_CPU_NO_AMX": "1"}), ("default", "bf16", {})]:
        p = embed(vflclip, model, tmp_path / "px.npy", tmp_path / f"{label}.npy", "--device", "cpu", "--precision", prec,
                  env=env)
        if label == "onednn":
            assert "AMX tiles" not in device_line(p)
        out[label] = np.load(tmp_path / f"{label}.npy")
    cos = cosines(out["fp32"], out["onednn"])
    print(f"{name} ({what}), bf16 through oneDNN only: min cosine to fp32 {cos.min():.7f}; "
          f"to the default bf16 path {cosines(out['default'], out['onednn']).min():.7f}")
    assert cos.min() >= COSINE_MIN
    if "AMX tiles" in cpu_bf16[1]:
        assert not np.array_equal(out["default"], out["onednn"]), "VFLCLIP_CPU_NO_AMX=1 must take the other path"


def test_bf16_real_images(vflclip, tmp_path, cpu_bf16, shared_data):
    need_bf16(cpu_bf16)
    images = sorted((shared_data / "ham10000-sample").glob("*.jpg"))[:8]
    assert images
    run([vflclip, "make-model", "--like", "vit-b-16", "--seed", 3, "--out", tmp_path / "m"])
    out = {}
    for prec in ["fp32", "bf16"]:
        run([vflclip, "embed", "--model", tmp_path / "m", "--image", *images, "--out", tmp_path / f"{prec}.npy",
             "--device", "cpu", "--precision", prec, "--batch", 4])
        out[prec] = np.load(tmp_path / f"{prec}.npy")
    cos = cosines(out["fp32"], out["bf16"])
    print(f"HAM10000, {len(images)} images, ViT-B/16 (random weights): bf16 vs fp32 min cosine {cos.min():.7f}")
    assert cos.min() >= COSINE_MIN


def test_no_bf16_fallback(vflclip, tmp_path):
    run([vflclip, "make-model", "--like", "tiny", "--seed", 2, "--out", tmp_path / "m"])
    size = json.loads((tmp_path / "m" / "config.json").read_text())["vision_config"]["image_size"]
    np.save(tmp_path / "px.npy", np.random.default_rng(1).standard_normal((3, 3, size, size)).astype(np.float32))
    no = {"VFLCLIP_CPU_NO_BF16": "1"}
    px = tmp_path / "px.npy"
    p = embed(vflclip, tmp_path / "m", px, tmp_path / "b.npy", "--device", "cpu", "--precision", "bf16", env=no, check=False)
    print(p.stderr.strip().splitlines()[-1])
    assert p.returncode == 1 and "precision bf16 on the CPU: VFLCLIP_CPU_NO_BF16 is set" in p.stderr, p.stderr
    assert not (tmp_path / "b.npy").exists()
    p = embed(vflclip, tmp_path / "m", px, tmp_path / "auto.npy", "--device", "cpu", "--precision", "auto", env=no)
    line = device_line(p)
    print(line)
    assert "precision=fp32" in line and "requested_precision=auto" in line and "VFLCLIP_CPU_NO_BF16" in line
    p = embed(vflclip, tmp_path / "m", px, tmp_path / "default.npy")
    assert "precision=fp32" in device_line(p), "the CPU's default stays fp32"
    assert np.array_equal(np.load(tmp_path / "auto.npy"), np.load(tmp_path / "default.npy"))
