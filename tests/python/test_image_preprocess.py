"""Image decoding (common/image/image_io.c) and CLIP preprocessing
(common/image/preprocess.c) through `vflclip preprocess`, against PIL's
decoder + convert("RGB") and transformers' CLIPImageProcessor run in this
process: the real HAM10000 JPEGs (600x450 and 224x224) under the shared
configs (transformers 4.x preprocessor_config.json and 5.x
processor_config.json) and a 336 one, and PNGs written here by PIL (grey,
grey+alpha, RGBA, palette with transparency, 4-bit palette, 1-bit, 16-bit,
odd sizes, a 28x28 upsampled to 224) or by numpy + zlib (16-bit RGB/RGBA).

Tolerance: everything here is compared exactly except JPEG, where PIL's
bundled libjpeg-turbo and the system one could in principle differ; the
JPEG bound is one 8-bit level (decoded) and one level / std (preprocessed),
and the measured differences are printed (0 on the development machine)."""
import json
import shutil
import struct
import zlib

import numpy as np
import pytest

from conftest import run

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
CLIPImageProcessor = transformers.CLIPImageProcessor

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def c_preprocess(vflclip, tmp_path, images, model=None, size=None):
    out = tmp_path / "pp.npy"
    src = ["--model", model] if model else ["--image-size", str(size)]
    args = [vflclip, "preprocess", *src, "--out", out]
    for f in images:
        args += ["--image", f]
    run(args)
    return np.load(out)


def c_decode(vflclip, tmp_path, image):
    dec = tmp_path / "decoded.npy"
    run([vflclip, "preprocess", "--image-size", "32", "--image", image, "--out", tmp_path / "x.npy", "--decoded", dec])
    return np.load(dec)


def hf_pixels(processor, images):
    return processor(images=images, return_tensors="np")["pixel_values"]


def ham_images(shared_data):
    files = sorted((shared_data / "ham10000-sample").glob("*.jpg"))
    by_size = {}
    for f in files:
        by_size.setdefault(Image.open(f).size, []).append(f)
    assert (600, 450) in by_size and (224, 224) in by_size, by_size.keys()
    return by_size[(600, 450)][:5] + by_size[(224, 224)][:3]


def processor_dirs(shared_data, tmp_path):
    """(name, directory for the C side, CLIPImageProcessor for transformers)."""
    hf = shared_data / "clip-configs/hf"
    b16 = hf / "clip-vit-base-patch16"
    l14 = hf / "clip-vit-large-patch14"   # transformers 5.x layout: processor_config.json
    l14_cfg = json.loads((l14 / "processor_config.json").read_text())["image_processor"]
    d336 = tmp_path / "clip-336"
    d336.mkdir()
    cfg336 = dict(l14_cfg, size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    (d336 / "preprocessor_config.json").write_text(json.dumps(cfg336))
    return [("base-patch16", b16, CLIPImageProcessor.from_pretrained(str(b16))),
            ("large-patch14 (5.x layout)", l14, CLIPImageProcessor(**l14_cfg)),
            ("336", d336, CLIPImageProcessor.from_pretrained(str(d336)))]


def test_ham_jpegs_decode_like_pil(vflclip, shared_data, tmp_path):
    worst, n_diff, n_px = 0.0, 0, 0
    for f in ham_images(shared_data):
        ref = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)
        got = c_decode(vflclip, tmp_path, f)
        assert got.shape == ref.shape, f
        worst = max(worst, float(np.abs(got - ref).max()))
        n_diff += int((got != ref).sum())
        n_px += ref.size
    print(f"JPEG decode vs PIL: max abs diff {worst} levels, {n_diff}/{n_px} samples differ")
    assert worst <= 1 and n_diff <= n_px // 1000


def test_ham_jpegs_preprocess_like_transformers(vflclip, shared_data, tmp_path):
    files = ham_images(shared_data)
    for name, model_dir, processor in processor_dirs(shared_data, tmp_path):
        got = c_preprocess(vflclip, tmp_path, files, model=model_dir)
        ref = hf_pixels(processor, [Image.open(f) for f in files])
        diff = float(np.abs(got - ref).max())
        print(f"{name}: output {got.shape}, max abs diff vs CLIPImageProcessor {diff:.3g}")
        assert got.shape == ref.shape and got.dtype == np.float32
        assert diff <= 1.0 / 255 / min(CLIP_STD) + 1e-6


def write_png16(path, arr, color_type):
    """A 16-bit PNG from a big-endian uint16 numpy array, by hand (PIL cannot
    write 16-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path.write_bytes(png)


def make_pngs(tmp_path):
    """(file, PIL image that is the reference input) pairs."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:173, 0:301]
    smooth = ((np.sin(xx / 9.0) + np.cos(yy / 13.0)) * 60 + 128).astype(np.uint8)
    rgb = np.stack([smooth, smooth[::-1], np.roll(smooth, 40, axis=1)], -1)
    out = []

    def save(name, im, ref=None, **kw):
        f = tmp_path / f"{name}.png"
        im.save(f, **kw)
        out.append((f, ref if ref is not None else Image.open(f)))

    save("rgb_301x173", Image.fromarray(rgb))
    save("grey_301x173", Image.fromarray(smooth))
    save("grey_alpha", Image.fromarray(np.stack([smooth, rng.integers(0, 256, smooth.shape, dtype=np.uint8)], -1), "LA"))
    rgba = np.concatenate([rgb, rng.integers(0, 256, smooth.shape + (1,), dtype=np.uint8)], -1)
    save("rgba_tall", Image.fromarray(np.ascontiguousarray(rgba.transpose(1, 0, 2))))
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=60)
    save("palette_transparency", pal, transparency=5)
    save("palette_4bit", Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=12), bits=4)
    save("bilevel", Image.fromarray(smooth > 128))
    save("tiny_28x28", Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)))
    save("exact_224", Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)))
    save("odd_225x224", Image.fromarray(rng.integers(0, 256, (224, 225, 3), dtype=np.uint8)))
    save("wide_1000x31", Image.fromarray(rng.integers(0, 256, (31, 1000, 3), dtype=np.uint8)))
    # 16-bit grey: PIL opens it as "I;16" and convert("RGB") clips every value
    # above 255 to white; the C decoder keeps the high byte (as PIL itself
    # does for 16-bit RGB), so the reference is the high byte.
    g16 = (smooth.astype(np.uint16) * 257 + rng.integers(0, 200, smooth.shape)).astype(np.uint16)
    save("grey16", Image.fromarray(g16), ref=Image.fromarray((g16 >> 8).astype(np.uint8)))
    rgb16 = rgb.astype(np.uint16) * 256 + rng.integers(0, 256, rgb.shape).astype(np.uint16)
    write_png16(tmp_path / "rgb16.png", rgb16, 2)
    out.append((tmp_path / "rgb16.png", Image.open(tmp_path / "rgb16.png")))
    rgba16 = np.concatenate([rgb16, rgb16[..., :1]], -1)
    write_png16(tmp_path / "rgba16.png", rgba16, 6)
    out.append((tmp_path / "rgba16.png", Image.open(tmp_path / "rgba16.png")))
    return out


def test_pngs_decode_like_pil(vflclip, tmp_path):
    for f, ref_im in make_pngs(tmp_path):
        ref = np.asarray(ref_im.convert("RGB"), dtype=np.float32)
        got = c_decode(vflclip, tmp_path, f)
        assert got.shape == ref.shape, f
        diff = float(np.abs(got - ref).max())
        print(f"{f.name}: mode {Image.open(f).mode}, {ref.shape[1]}x{ref.shape[0]}, max abs diff {diff}")
        assert diff == 0, f.name


def test_pngs_preprocess_like_transformers(vflclip, shared_data, tmp_path):
    pngs = make_pngs(tmp_path)
    processor = CLIPImageProcessor.from_pretrained(str(shared_data / "clip-configs/hf/clip-vit-base-patch16"))
    got = c_preprocess(vflclip, tmp_path, [f for f, _ in pngs], model=shared_data / "clip-configs/hf/clip-vit-base-patch16")
    for i, (f, im) in enumerate(pngs):
        ref = hf_pixels(processor, [im])[0]
        diff = float(np.abs(got[i] - ref).max())
        print(f"{f.name}: max abs diff vs CLIPImageProcessor {diff}")
        assert diff == 0, f.name


def test_image_at_model_size_is_only_normalised(vflclip, tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    got = c_preprocess(vflclip, tmp_path, [tmp_path / "a.png"], size=224)[0]
    x = (rgb.astype(np.float64) / 255).astype(np.float32)
    ref = ((x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)).transpose(2, 0, 1)
    print(f"max abs diff vs numpy normalisation {np.abs(got - ref).max()}")
    assert np.array_equal(got, ref)


def test_crop_padding_and_non_square_crop(vflclip, tmp_path):
    """shortest_edge smaller than the crop (transformers pads with zeros) and a
    non-square crop, on odd-sized images."""
    cfg = {"size": {"shortest_edge": 200}, "crop_size": {"height": 224, "width": 190}, "do_center_crop": True,
           "do_normalize": True, "do_resize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3}
    d = tmp_path / "model"
    d.mkdir()
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(11)
    files, ims = [], []
    for w, h in ((301, 173), (173, 301), (57, 57), (190, 224)):
        f = tmp_path / f"im_{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f)
        files.append(f)
        ims.append(Image.open(f))
    got = c_preprocess(vflclip, tmp_path, files, model=d)
    ref = hf_pixels(CLIPImageProcessor(**cfg), ims)
    print(f"max abs diff vs CLIPImageProcessor {np.abs(got - ref).max()}")
    assert got.shape == ref.shape == (4, 3, 224, 190)
    assert np.array_equal(got, ref)


def test_cmyk_and_grey_jpegs(vflclip, tmp_path):
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:120, 0:161]
    base = ((np.sin(xx / 7.0) * np.cos(yy / 11.0)) * 100 + 128).astype(np.uint8)
    cmyk = np.stack([base, base[::-1], 255 - base, rng.integers(0, 80, base.shape, dtype=np.uint8)], -1)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    Image.fromarray(base).save(tmp_path / "grey.jpg", quality=90)
    for name in ("cmyk.jpg", "grey.jpg"):
        ref = np.asarray(Image.open(tmp_path / name).convert("RGB"), dtype=np.float32)
        got = c_decode(vflclip, tmp_path, tmp_path / name)
        diff = float(np.abs(got - ref).max())
        print(f"{name}: mode {Image.open(tmp_path / name).mode}, max abs diff vs PIL {diff}")
        assert got.shape == ref.shape and diff <= 1


def test_bad_files_and_configs_give_clear_errors(vflclip, shared_data, tmp_path):
    jpg = sorted((shared_data / "ham10000-sample").glob("*.jpg"))[0]
    data = jpg.read_bytes()
    cases = {"truncated.jpg": data[: len(data) // 2], "garbage.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 50,
             "empty.jpg": b"", "text.png": b"hello world, not an image"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        p = run([vflclip, "preprocess", "--image-size", "224", "--image", tmp_path / name, "--out", tmp_path / "o.npy"],
                check=False)
        print(f"{name}: {p.stderr.strip()}")
        assert p.returncode == 1 and str(tmp_path / name) in p.stderr
    d = tmp_path / "cfg"
    d.mkdir()
    for content, words in (("{not json", "malformed JSON"), ('{"resample": 2}', "BICUBIC"),
                           ('{"size": {"height": 3}}', "shortest_edge"), ('{"image_std": [1, 0, 1]}', "image_std")):
        (d / "preprocessor_config.json").write_text(content)
        shutil.copy(jpg, tmp_path / "ok.jpg")
        p = run([vflclip, "preprocess", "--model", d, "--image", tmp_path / "ok.jpg", "--out", tmp_path / "o.npy"],
                check=False)
        assert p.returncode == 1 and "preprocessor_config.json" in p.stderr and words in p.stderr, p.stderr
