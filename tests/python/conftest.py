"""Shared fixtures for the Python reference tests.

The C programs are driven as subprocesses; references (transformers,
open_clip, grpcio, scikit-learn, PyTorch autograd) run in this process.
Tests that need ../shared/data skip with one line where it is absent."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("VF_BUILD", ROOT / "build"))
SHARED_DATA = pathlib.Path(os.environ.get("VF_SHARED", ROOT.parent / "shared")) / "data"

# OpenCLIP model configs (open_clip_config.json) of small random models: a ModifiedResNet and a ViT
SMALL_RN = {"embed_dim": 48, "quick_gelu": True,
            "vision_cfg": {"image_size": 64, "layers": [1, 2, 1, 1], "width": 16, "patch_size": None},
            "text_cfg": {"context_length": 77, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 2}}
SMALL_VIT = {"embed_dim": 40, "quick_gelu": True,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 96, "patch_size": 16, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 1000, "width": 64, "heads": 4, "layers": 2}}


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def vflclip():
    """Path of the built `vflclip` program."""
    exe = BUILD / "vflclip"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run `make` first")
    return str(exe)


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data, or a one-line skip where it is absent (a fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"SKIP: {SHARED_DATA} is absent (fresh clone); this test needs the shared test data")
    return SHARED_DATA


def run(cmd, check=True, **kw):
    """Runs a command, returning CompletedProcess with text output; on failure
    the assertion message carries stderr."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p
