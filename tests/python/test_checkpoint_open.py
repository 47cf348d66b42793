"""A checkpoint opened once (common/clip/checkpoint.h): the model fingerprint
that `vflclip embed --describe` prints for both towers, against the same
SHA-256 computed here from the files alone, as checkpoint.h documents it:

    sha256( canonical config JSON + NUL,
            then for every tensor in name order: name + NUL, dtype (u64 LE,
            vf_dtype's order), ndim (u64 LE), each dim (u64 LE), and the
            first, middle ((n - k) // 2) and last k = min(64, n) bytes of
            its data )

Federations compare this value between parties, so it must not change when
loading code moves.  For the Hugging Face layout the canonical config is
make-model's config.json byte for byte, so the value here is independent of
the C code; for OpenCLIP it is the converted config that --describe prints
(which it now does: before the checkpoint object it looked for config.json
and refused OpenCLIP directories).  Also: a directory whose two configs
describe different models is refused naming both files."""
import hashlib
import json
import pathlib
import shutil
import struct

import pytest

from conftest import SMALL_RN, SMALL_VIT, run

DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"]  # vf_dtype's order


def fingerprint(config_text, weights):
    blob = pathlib.Path(weights).read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    h = hashlib.sha256(config_text.encode() + b"\0")
    u64 = lambda v: struct.pack("<Q", v)
    for name in sorted(k for k in header if k != "__metadata__"):
        t = header[name]
        begin, end = t["data_offsets"]
        x = data[begin:end]
        k = min(64, len(x))
        h.update(name.encode() + b"\0" + u64(DTYPES.index(t["dtype"])) + u64(len(t["shape"])))
        for d in t["shape"]:
            h.update(u64(d))
        h.update(x[:k] + x[(len(x) - k) // 2:(len(x) - k) // 2 + k] + x[len(x) - k:])
    return h.hexdigest()


def describe(vflclip, model):
    out = run([vflclip, "embed", "--model", model, "--describe"]).stdout
    config_text = out[len('{"config": '):out.index(', "vision_fingerprint"')]
    return json.loads(out), config_text


def make_hf(vflclip, out, dtype="f32", seed=3, like="tiny"):
    run([vflclip, "make-model", "--like", like, "--seed", seed, "--dtype", dtype, "--out", out])
    return out


def make_open_clip(vflclip, out, cfg, dtype="f32", seed=7):
    cfg_path = pathlib.Path(str(out) + ".json")
    cfg_path.write_text(json.dumps(cfg))
    run([vflclip, "make-model", "--seed", seed, "--dtype", dtype, "--open-clip-config", cfg_path, "--out", out])
    return out


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_hugging_face_fingerprint_from_the_files(vflclip, tmp_path, dtype):
    m = make_hf(vflclip, tmp_path / "m", dtype=dtype)
    desc, config_text = describe(vflclip, m)
    assert config_text == (m / "config.json").read_text(), "make-model's config.json is the canonical config"
    want = fingerprint((m / "config.json").read_text(), m / "model.safetensors")
    print(dtype, want)
    assert desc["vision_fingerprint"] == desc["text_fingerprint"] == want


@pytest.mark.parametrize("cfg", [SMALL_RN, SMALL_VIT], ids=["resnet", "vit"])
def test_open_clip_fingerprint_from_the_files(vflclip, tmp_path, cfg):
    m = make_open_clip(vflclip, tmp_path / "m", cfg)
    desc, config_text = describe(vflclip, m)
    # the config the towers use: open_clip_config.json converted, pooled at the largest id
    assert desc["config"]["projection_dim"] == cfg["embed_dim"]
    assert desc["config"]["text_config"]["hidden_size"] == cfg["text_cfg"]["width"]
    assert desc["config"]["vision_config"]["image_size"] == cfg["vision_cfg"]["image_size"]
    assert desc["config"]["text_config"]["eos_token_id"] == 2
    assert desc["config"]["vflclip_random_weights"] is True
    want = fingerprint(config_text, m / "open_clip_model.safetensors")
    assert desc["vision_fingerprint"] == desc["text_fingerprint"] == want


def test_config_only_directory_describes_without_weights(vflclip, tmp_path):
    run([vflclip, "make-model", "--like", "vit-b-16", "--seed", 0, "--out", tmp_path / "c", "--config-only"])
    out = json.loads(run([vflclip, "embed", "--model", tmp_path / "c", "--describe"]).stdout)
    assert set(out) == {"config"} and out["config"]["vision_config"]["patch_size"] == 16


def test_two_configs_that_disagree_are_refused(vflclip, tmp_path):
    hf = make_hf(vflclip, tmp_path / "hf")
    oc = make_open_clip(vflclip, tmp_path / "oc", SMALL_VIT)
    both = tmp_path / "both"
    shutil.copytree(oc, both)
    shutil.copy(hf / "config.json", both / "config.json")
    for args in (["embed", "--model", both, "--text", "a mole", "--out", tmp_path / "x.npy"],
                 ["embed", "--model", both, "--describe"],
                 ["preprocess", "--model", both, "--image", "unused.png", "--out", tmp_path / "x.npy"]):
        p = run([vflclip, *args], check=False)
        assert p.returncode == 1, p.stderr
        assert (f"{both}/config.json and {both}/open_clip_config.json describe different models "
                "(projection_dim 32, embed_dim 40)") in p.stderr, p.stderr
    # a hub repository carrying both layouts of one model opens as OpenCLIP, same fingerprint
    agree = tmp_path / "agree"
    shutil.copytree(oc, agree)
    desc, config_text = describe(vflclip, oc)
    (agree / "config.json").write_text(config_text)
    assert describe(vflclip, agree)[0]["vision_fingerprint"] == desc["vision_fingerprint"]
