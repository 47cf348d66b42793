"""`--version` on every program (issue 14 item 8): vflclip and the three daemons
print the one version constant, the git revision captured at build time, the
build options, OpenBLAS's kernel set and whether CUDA is usable; the version
is the one the Admin status and run_settings.json carry (no stray literal)."""
import os
import re
import subprocess

import pytest

from conftest import BUILD, ROOT, run

PROGRAMS = ["vflclip", "vflclip-aggregator", "vflclip-image-party", "vflclip-knowledge-party"]
FIELDS = ["version", "git revision", "build options", "BLAS core", "CUDA"]


def version_constant():
    text = (ROOT / "common/daemon/version.h").read_text()
    return re.search(r'#define VF_VERSION "([^"]+)"', text).group(1)


def report(program):
    exe = BUILD / program
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run `make` first")
    out = run([str(exe), "--version"]).stdout
    lines = out.strip().splitlines()
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], fields


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


@pytest.mark.parametrize("program", PROGRAMS)
def test_version_report(program):
    first, f = report(program)
    ver = version_constant()
    assert first == f"{program} {ver}"
    assert set(FIELDS) <= set(f), f
    assert f["version"] == ver == "vflclip 0.2"
    assert re.search(r"-O[0-3s]", f["build options"]) and "CUDA kernels " in f["build options"], f["build options"]
    assert f["BLAS core"].startswith("OpenBLAS ") and "?" not in f["BLAS core"].split()[1], f["BLAS core"]
    assert re.match(r"(yes, \d+ GPUs?|no, .+)$", f["CUDA"]), f["CUDA"]
    if "CUDA kernels no" in f["build options"]:
        assert f["CUDA"].startswith("no, built without CUDA")


@pytest.mark.parametrize("program", PROGRAMS)
def test_git_revision_is_the_checkout(program):
    _, f = report(program)
    rev = f["git revision"]
    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        assert rev == "unknown"
        return
    commit = rev.removesuffix("-dirty")
    assert re.fullmatch(r"[0-9a-f]{7,40}", commit), rev
    binary_time = os.path.getmtime(BUILD / program)
    head_time = int(git("log", "-1", "--format=%ct", "HEAD"))
    if commit != head and binary_time < head_time:
        # built before the newest commit (others commit into this tree): the
        # revision must still be a commit of this history
        assert git("merge-base", "--is-ancestor", commit, "HEAD") is not None, (rev, head)
        return
    assert commit == head, f"--version says {rev}, git rev-parse --short HEAD says {head}"


def test_no_stray_version_literal():
    """The old literal software_version strings are gone; the daemons and
    run_settings take VF_VERSION."""
    hits = subprocess.run(["grep", "-rn", "--include=*.c", "--include=*.h", '"vflclip 0\\.[0-9]"', "common", "aggregator",
                           "image-party", "knowledge-party"], cwd=ROOT, capture_output=True, text=True).stdout
    hits = [h for h in hits.splitlines() if not h.startswith("common/daemon/version.h")]
    assert not hits, hits
