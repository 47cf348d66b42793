"""`vflclip embed --device cpu|cuda|auto [--precision ...]` for images.

A random-weight Hugging Face layout model from `vflclip make-model --like tiny`;
transformers' CLIPModel.get_image_features on the same pixels is the reference.
- the default (cpu) and --device auto give the same embeddings where auto
  falls back to the CPU (bit for bit), and both match transformers; on a
  machine with a GPU auto runs there (bf16) and must agree to cosine 0.999;
- --device cuda on a machine without a GPU fails with the reason, writes
  nothing and does not crash; with a GPU it matches the reference;
- --device with --text is refused (texts are embedded on the CPU), an unknown
  device or precision is named.
"""
import numpy as np
import torch
from transformers import CLIPModel

from conftest import run


def make_model(vflclip, tmp_path):
    run([vflclip, "make-model", "--like", "tiny", "--seed", 5, "--out", tmp_path / "m"])
    return tmp_path / "m"


def embed_pixels(vflclip, model, pixels, out, *extra, check=True):
    return run([vflclip, "embed", "--model", model, "--pixels", pixels, "--out", out, *extra], check=check)


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_device_auto_and_cuda(vflclip, tmp_path):
    model = make_model(vflclip, tmp_path)
    hf = CLIPModel.from_pretrained(str(model)).eval()
    size = hf.config.vision_config.image_size
    pixels = np.random.default_rng(0).standard_normal((5, 3, size, size)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=torch.from_numpy(pixels)).numpy()

    embed_pixels(vflclip, model, tmp_path / "pixels.npy", tmp_path / "default.npy")
    default = np.load(tmp_path / "default.npy")
    diff = float(np.abs(default - ref).max())
    print(f"default (cpu) vs transformers: max abs diff {diff:.3g} (max |ref| {np.abs(ref).max():.3g})")
    assert diff <= 1e-4 * float(np.abs(ref).max())

    p = embed_pixels(vflclip, model, tmp_path / "pixels.npy", tmp_path / "auto.npy", "--device", "auto")
    auto = np.load(tmp_path / "auto.npy")
    device_line = [line for line in p.stderr.splitlines() if "event=device" in line]
    print(device_line)
    assert len(device_line) == 1 and "requested=auto" in device_line[0]
    has_gpu = "device=cuda" in device_line[0]
    if has_gpu:
        print(f"auto (cuda bf16) vs default: min cosine {cosines(auto, default).min():.6f}")
        assert cosines(auto, default).min() >= 0.999
    else:
        assert "reason=" in device_line[0], "auto says why it fell back to the CPU"
        print(f"auto (cpu) vs default: max abs diff {float(np.abs(auto - default).max()):.3g}")
        assert np.array_equal(auto, default)

    p = embed_pixels(vflclip, model, tmp_path / "pixels.npy", tmp_path / "cuda.npy", "--device", "cuda",
                     "--precision", "fp32", check=False)
    print(p.stderr.strip().splitlines()[-1])
    if has_gpu:
        assert p.returncode == 0
        cuda = np.load(tmp_path / "cuda.npy")
        print(f"cuda fp32 vs transformers: max abs diff {float(np.abs(cuda - ref).max()):.3g}")
        assert cosines(cuda, ref).min() >= 0.9999
    else:
        assert p.returncode == 1 and "embed: --device cuda: " in p.stderr, p.stderr
        assert not (tmp_path / "cuda.npy").exists()
        assert "Traceback" not in p.stderr and "Segmentation" not in p.stderr


def test_device_option_mistakes(vflclip, tmp_path):
    model = make_model(vflclip, tmp_path)
    p = run([vflclip, "embed", "--model", model, "--text", "a mole", "--out", tmp_path / "t.npy", "--device", "cpu"],
            check=False)
    assert p.returncode == 2 and "texts are embedded on the CPU" in p.stderr, p.stderr
    for opt, value, needle in [("--device", "gpu", "'gpu' is not a device"),
                               ("--precision", "fp16", "'fp16' is not a precision")]:
        p = run([vflclip, "embed", "--model", model, "--pixels", tmp_path / "x.npy", "--out", tmp_path / "x_out.npy",
                 opt, value], check=False)
        assert p.returncode == 2 and needle in p.stderr, p.stderr


def test_repeated_image_and_text_options_keep_every_value(vflclip, tmp_path):
    """`--image a --image b` embeds both, in order (once only the last list was
    kept); the same for --text.  Each row equals the embedding of that input
    alone (to BLAS rounding across batch sizes), and the texts' rows equal
    transformers' text features."""
    from PIL import Image
    from transformers import CLIPTokenizerFast
    model = make_model(vflclip, tmp_path)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    run([vflclip, "embed", "--model", model, "--image", paths[0], "--image", paths[1], paths[2], "--out", tmp_path / "all.npy"])
    both = np.load(tmp_path / "all.npy")
    assert both.shape[0] == 3
    for i, p in enumerate(paths):
        run([vflclip, "embed", "--model", model, "--image", p, "--out", tmp_path / f"one{i}.npy"])
        assert np.allclose(both[i], np.load(tmp_path / f"one{i}.npy")[0], atol=1e-5)   # batch of 3 vs 1: BLAS rounding
    texts = ["a photo of a mole", "a dermatoscopic image"]
    run([vflclip, "embed", "--model", model, "--text", texts[0], "--text", texts[1], "--out", tmp_path / "t.npy"])
    got = np.load(tmp_path / "t.npy")
    hf = CLIPModel.from_pretrained(str(model)).eval()
    tok = CLIPTokenizerFast.from_pretrained(str(model))
    with torch.no_grad():
        ref = hf.get_text_features(**tok(texts, padding=True, return_tensors="pt")).numpy()
    print("texts: max abs diff", np.abs(got - ref).max())
    assert got.shape == ref.shape and np.allclose(got, ref, atol=1e-5, rtol=1e-4)
