"""`make install` / `make uninstall` (issue 16 item 1): the installed tree holds
the four programs, the systemd units pointing at the installed binaries, example
INI files that a daemon accepts once a kit is beside them, man pages made from
the programs' own help (every subcommand, every configuration key) and the
guides; the installed units pass `systemd-analyze verify` against the installed
tree (--root), and fail it when the binary is missing (so the check is real);
`make uninstall` removes every file it installed."""
import os
import pathlib
import shutil
import stat
import subprocess

import numpy as np
import pytest

from conftest import BUILD, ROOT, run
from test_federation_support import set_key

PROGS = ["vflclip", "vflclip-aggregator", "vflclip-image-party", "vflclip-knowledge-party"]
ROLES = ["aggregator", "image-party", "knowledge-party"]
UNITS = ["vflclip-aggregator.service", "vflclip-image-party@.service", "vflclip-knowledge-party.service"]


def make(*args):
    build = os.path.relpath(BUILD, ROOT) if BUILD.is_relative_to(ROOT) else str(BUILD)
    return run(["make", "-s", "-C", ROOT, f"BUILD={build}", *args])


def files_under(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() or p.is_symlink())


def expected(prefix):
    p = prefix.lstrip("/")
    docs = ["README.md"] + [f.name for f in (ROOT / "docs").glob("*.md")]
    return sorted([f"{p}/bin/{x}" for x in PROGS]
                  + [f"{p}/lib/systemd/system/{u}" for u in UNITS]
                  + [f"{p}/share/man/man1/{x}.1" for x in PROGS]
                  + [f"{p}/share/man/man5/vflclip-{r}.ini.5" for r in ROLES]
                  + [f"{p}/share/doc/vflclip/examples/{r}.ini" for r in ROLES + ["run"]]
                  + [f"{p}/share/doc/vflclip/{d}" for d in docs])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("dest")
    make("install", f"DESTDIR={dest}", "PREFIX=/usr/local")
    return dest


def test_install_puts_every_file_in_place(installed):
    u = installed / "usr/local"
    assert files_under(installed) == expected("/usr/local")
    for p in PROGS:
        f = u / "bin" / p
        assert stat.S_IMODE(f.stat().st_mode) == 0o755
        assert f.read_bytes() == (BUILD / p).read_bytes(), p
        assert run([f, "--help"]).stdout.startswith("usage:")
    for f in (u / "share").rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    for unit in UNITS:
        text = (u / "lib/systemd/system" / unit).read_text()
        role = unit.removeprefix("vflclip-").split(".")[0].rstrip("@")
        execs = [l for l in text.splitlines() if l.startswith("ExecStart=")]
        assert execs == [f"ExecStart=/usr/local/bin/vflclip-{role} --config " + execs[0].split(" --config ")[1]]


def test_man_pages_come_from_the_help(installed):
    man = installed / "usr/local/share/man"
    page = (man / "man1/vflclip.1").read_text()
    commands = [l.split()[0] for l in run([BUILD / "vflclip", "--help"]).stdout.splitlines()
                if l.startswith("  ") and l.split()]
    assert len(commands) >= 10
    for c in commands:
        assert f'.SS "vflclip {c}"' in page, c
    for r in ROLES:
        ini = (man / f"man5/vflclip-{r}.ini.5").read_text()
        config = run([BUILD / f"vflclip-{r}", "--help-config"]).stdout
        keys = [l.lstrip(";").split("=")[0].strip() for l in config.splitlines()
                if "=" in l and not l.startswith("; ")]
        sections = [l for l in config.splitlines() if l.startswith("[")]
        assert keys and sections
        for k in keys:
            assert f".TP\n.B {k}\n" in ini, (r, k)
        for s in sections:
            assert f'.SS "{s}"' in ini
        assert "--config" in (man / f"man1/vflclip-{r}.1").read_text().replace("\\-", "-")
    if shutil.which("man"):
        for f in sorted(man.rglob("*.[15]")):
            p = subprocess.run(["man", "--warnings", "-l", str(f)], capture_output=True, text=True,
                               env=dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8"))
            assert p.returncode == 0 and p.stderr.strip() == "", (f, p.stderr)
            assert "vflclip" in p.stdout


def test_installed_units_pass_systemd_analyze_verify(installed, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("SKIP: systemd-analyze is not installed")
    # A root file system = the installed tree plus what any Debian system with
    # systemd has (its own units such as sysinit.target, /bin/kill for ExecReload).
    root = tmp_path / "root"
    shutil.copytree(installed, root, symlinks=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("kill") or "/bin/kill", root / "usr/bin/kill")
    (root / "bin").symlink_to("usr/bin")
    names = ["vflclip-aggregator.service", "vflclip-knowledge-party.service", "vflclip-image-party@hospital-a.service"]

    def verify(*units):
        p = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
                           capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr

    rc, out = verify(*names)
    print(out)
    assert rc == 0, out
    assert ".service" not in out, "systemd-analyze warned about a unit"
    # The same check fails when the installed binary is not there.
    (root / "usr/local/bin/vflclip-aggregator").unlink()
    rc, out = verify("vflclip-aggregator.service")
    assert rc != 0 and "/usr/local/bin/vflclip-aggregator" in out, out


def test_example_configs_run_with_a_kit_beside_them(installed, tmp_path, vflclip):
    """The installed example INI (set up for the units: key from the
    credentials directory, state in the state directory) with a provisioned
    kit, a model and data is a configuration the daemons accept."""
    ex = installed / "usr/local/share/doc/vflclip/examples"
    fed = tmp_path / "fed"
    run([vflclip, "provision", "--out", fed, "--aggregator", "localhost", "--image-party", "hospital-a",
         "--knowledge-party", "derm-centre"])
    run([vflclip, "make-model", "--like", "tiny", "--seed", "3", "--out", tmp_path / "model"])
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", **{f"{s}_{k}": (rng.integers(0, 255, (4, 28, 28, 3), dtype=np.uint8) if k == "images"
                                                  else rng.integers(0, 7, (4, 1)))
                                     for s in ("train", "val", "test") for k in ("images", "labels")})
    for role, kit in [("aggregator", "aggregator-localhost"), ("image-party", "image-party-hospital-a"),
                      ("knowledge-party", "knowledge-party-derm-centre")]:
        d = fed / kit
        ini = d / f"example-{role}.ini"
        shutil.copy(ex / f"{role}.ini", ini)
        text = ini.read_text()
        assert "key = ${CREDENTIALS_DIRECTORY}/key.pem" in text and "dir = ${STATE_DIRECTORY}" in text
        if role != "aggregator":
            set_key(ini, "aggregator", "host", "localhost")
            set_key(ini, "model", "dir", str(tmp_path / "model"))
        if role == "image-party":
            set_key(ini, "data", "path", str(tmp_path / "a.npz"))
        state = tmp_path / f"state-{role}"
        state.mkdir()
        env = dict(os.environ, CREDENTIALS_DIRECTORY=str(d), STATE_DIRECTORY=str(state))
        p = subprocess.run([installed / f"usr/local/bin/vflclip-{role}", "--config", ini, "--check-config"],
                           capture_output=True, text=True, env=env)
        assert p.returncode == 0, (role, p.stdout + p.stderr)
        # Without the credentials the same file names the missing key.
        env.pop("CREDENTIALS_DIRECTORY")
        p = subprocess.run([installed / f"usr/local/bin/vflclip-{role}", "--config", ini, "--check-config"],
                           capture_output=True, text=True, env=env)
        assert p.returncode != 0 and "CREDENTIALS_DIRECTORY" in p.stderr + p.stdout, p.stderr
    keys = run([vflclip, "run", "keys"]).stdout
    assert (ex / "run.ini").read_text() == keys


def test_prefix_usr_and_uninstall(tmp_path):
    dest = tmp_path / "dest"
    make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    assert files_under(dest) == expected("/usr")
    unit = (dest / "usr/lib/systemd/system/vflclip-aggregator.service").read_text()
    assert "ExecStart=/usr/bin/vflclip-aggregator " in unit and "/usr/local" not in unit
    # Something of the administrator's beside the installed files stays.
    mine = dest / "usr/share/doc/vflclip/examples/my-site.ini"
    mine.write_text("[log]\nlevel = debug\n")
    make("uninstall", f"DESTDIR={dest}", "PREFIX=/usr")
    assert files_under(dest) == ["usr/share/doc/vflclip/examples/my-site.ini"]
    mine.unlink()
    make("uninstall", f"DESTDIR={dest}", "PREFIX=/usr")  # idempotent, and removes the now-empty doc dirs
    assert files_under(dest) == []
    assert not (dest / "usr/share/doc/vflclip").exists()
