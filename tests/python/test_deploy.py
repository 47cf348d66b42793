"""Operations: the systemd units pass `systemd-analyze verify` and carry the
hardening the deployment guide promises; a daemon started the way systemd
starts it (NOTIFY_SOCKET, WATCHDOG_USEC, its key from CREDENTIALS_DIRECTORY,
its state in STATE_DIRECTORY) really sends READY=1 and then WATCHDOG=1 on
the socket (this test listens on it); the Compose file parses as YAML with
the services, dependencies and volumes it needs, and where the standalone
docker-compose (v1) is installed its own schema check (`docker-compose
config`, no daemon needed) accepts it; the full Compose run
(deploy/docker/test-compose.sh) needs an engine and VFLCLIP_COMPOSE_E2E=1; and
the README's demo runs end to end."""
import os
import pathlib
import re
import shutil
import socket
import subprocess
import time

import pytest
import yaml

from conftest import BUILD, ROOT, run
from test_federation_support import ENV, Federation, set_key

UNITS = ROOT / "deploy" / "systemd"
DAEMONS = ["aggregator", "knowledge-party", "image-party"]


def unit_file(role):
    return UNITS / (f"vflclip-{role}@.service" if role == "image-party" else f"vflclip-{role}.service")


def test_systemd_units_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("SKIP: systemd-analyze is not installed")
    names = []
    for role in DAEMONS:
        text = unit_file(role).read_text().replace("/usr/local/bin/", f"{BUILD.resolve()}/")
        name = unit_file(role).name.replace("@.", "@hospital-a.")
        (tmp_path / unit_file(role).name).write_text(text)
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True)
    print(p.stdout + p.stderr)
    assert p.returncode == 0
    assert ".service" not in p.stderr, "systemd-analyze warned about a unit"


@pytest.mark.parametrize("role", DAEMONS)
def test_units_are_notify_watchdog_restart_and_hardened(role):
    keys = {}
    for line in unit_file(role).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys[k.strip()] = v.strip()
    assert keys["Type"] == "notify" and keys["Restart"] == "on-failure"
    assert re.fullmatch(r"\d+s", keys["WatchdogSec"])
    assert keys["NoNewPrivileges"] == "yes" and keys["ProtectSystem"] == "strict"
    assert keys["StateDirectory"].startswith("vflclip/")
    assert keys["LoadCredential"].startswith("key.pem:/etc/vflclip/")
    assert keys["ExecStart"].startswith(f"/usr/local/bin/vflclip-{role} --config /etc/vflclip/")


def listen(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.2)
    return s


def collect(sock, proc, want, timeout=30):
    got, t0 = [], time.time()
    while time.time() - t0 < timeout and not all(any(w in g for g in got) for w in want):
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            assert proc.poll() is None, f"daemon exited {proc.returncode}"
    return got


def test_daemons_notify_ready_and_watchdog_as_under_systemd(vflclip, tmp_path):
    fed = Federation(vflclip, tmp_path / "fed")
    procs = []
    try:
        for d in [fed.aggregator, fed.kp]:
            kit = d.ini.parent
            # As the units configure it: the key from the credentials directory,
            # state in the state directory.
            creds, state = tmp_path / f"creds-{d.role}", tmp_path / f"state-{d.role}"
            creds.mkdir()
            state.mkdir()
            shutil.move(kit / "key.pem", creds / "key.pem")
            set_key(d.ini, "tls", "key", "${CREDENTIALS_DIRECTORY}/key.pem")
            set_key(d.ini, "state", "dir", "${STATE_DIRECTORY}")
            sock_path = tmp_path / f"notify-{d.role}"
            sock = listen(sock_path)
            env = dict(ENV, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="200000", CREDENTIALS_DIRECTORY=str(creds),
                       STATE_DIRECTORY=str(state))
            log = open(tmp_path / f"{d.role}.log", "w")
            p = subprocess.Popen([str(BUILD / f"vflclip-{d.role}"), "--config", str(d.ini)], env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
            procs.append(p)
            got = collect(sock, p, ["READY=1", "WATCHDOG=1"])
            print(d.role, got[:4])
            ready = [i for i, g in enumerate(got) if "READY=1" in g]
            dogs = [i for i, g in enumerate(got) if g.strip() == "WATCHDOG=1"]
            assert ready and dogs and dogs[-1] > ready[0], got
            n_before = len(dogs)
            got += collect(sock, p, ["X"], timeout=0.5)
            assert sum(g.strip() == "WATCHDOG=1" for g in got) > n_before, "the watchdog keeps ticking"
            sock.close()
        assert any(state.iterdir() for state in [tmp_path / "state-aggregator"]), "state dir used"
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_compose_file_structure():
    """PyYAML parse plus structural checks; deploy/docker/test-compose.sh runs
    it for real where a Compose engine is installed."""
    path = ROOT / "deploy" / "docker" / "docker-compose.yml"
    doc = yaml.safe_load(path.read_text())
    services = doc["services"]
    assert {"provision", "aggregator", "knowledge-party", "image-party-a", "image-party-b", "image-party-c",
            "admin"} <= set(services)
    build = services["provision"]["build"]
    assert build["dockerfile"] == "deploy/docker/Dockerfile"
    assert (path.parent / build["context"] / build["dockerfile"]).exists()
    assert services["provision"]["command"] == ["vflclip-compose-provision"]
    assert {v.split(":")[1] for v in services["provision"]["volumes"] if v[0] != "$"} >= {"/fed", "/data"}

    def parse(v):
        """(source, target, options) of a short-syntax volume; the source may be ${VAR:-./dir}."""
        src, _, rest = v.partition(":/")
        target, _, opts = ("/" + rest).partition(":")
        return src, target, opts

    def source_ok(v):
        src = parse(v)[0]
        return src.startswith("./") or src in doc["volumes"] or re.fullmatch(r"\$\{VFLCLIP_[A-Z]+:-\./[a-z]+\}", src)

    for name, s in services.items():
        assert s["read_only"] is True and s["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in s["security_opt"] and "/tmp" in s["tmpfs"], name
        for v in s["volumes"]:
            assert source_ok(v), v
        if name in ("provision", "admin"):
            assert s["restart"] == "no"
            continue
        assert s["depends_on"]["provision"]["condition"] == "service_completed_successfully", name
        assert s["restart"] == "on-failure", name
        daemon, flag, config = s["command"]
        assert daemon in {"vflclip-aggregator", "vflclip-knowledge-party", "vflclip-image-party"} and flag == "--config"
        role = daemon.removeprefix("vflclip-")
        assert config.startswith(f"/fed/federation/{role}-") and config.endswith(f"/{role}.ini")
        mounts = {parse(v)[1]: v for v in s["volumes"]}
        assert mounts["/fed"].endswith(":ro") and "/state" in mounts
        if role == "image-party":
            assert mounts["/data"] == "data:/data:ro"
        if name != "aggregator":
            assert s["depends_on"]["aggregator"]["condition"] == "service_healthy"
            assert s["environment"]["VFLCLIP_HEALTH_PARTY"] in config
    agg = services["aggregator"]
    assert agg["healthcheck"]["test"] == ["CMD", "vflclip-healthcheck"]
    assert all(p.startswith("127.0.0.1:") for p in agg["ports"]), "published on loopback only"
    admin = services["admin"]
    results = [parse(v) for v in admin["volumes"] if parse(v)[1] == "/results"]
    assert results and results[0][2] == "" and "./results" in results[0][0], "the admin service writes results to the host"
    # The kit names the provisioning step writes are the ones the services read.
    prov = (path.parent / "provision.sh").read_text()
    for h in ("hospital-a", "hospital-b", "hospital-c"):
        assert h in prov
    assert "--aggregator aggregator" in prov and "derm-centre" in prov and "--admin operator monitor" in prov
    assert "demo_data.py" in prov
    docker = (path.parent / "Dockerfile").read_text()
    assert "deploy/install-deps.sh" in docker and "USER 10001" in docker and "HEALTHCHECK" in docker
    code = "\n".join(l for l in docker.splitlines() if not l.lstrip().startswith("#"))
    assert "NVCC=" in code and "make " in code and " install " in code and "NATIVE" not in code and "march" not in code
    stages = re.findall(r"^FROM ", docker, re.M)
    assert len(stages) == 2, "build stage and run stage"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "build*/" in ignore and ".venv" in ignore
    # docker-compose 1.29 (Compose v1, Debian 12) refuses a top-level `name:`;
    # the project name comes from .env, which v1 and v2 both read.
    assert "name" not in doc
    assert "COMPOSE_PROJECT_NAME=vflclip" in (path.parent / ".env").read_text().splitlines()


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="SKIP: docker-compose (Compose v1) is not installed")
def test_compose_file_passes_docker_compose_v1_schema(tmp_path):
    """docker-compose 1.29 validates the file against its own schema without a
    daemon; the host directories must exist for it."""
    for d in ("models", "input", "results"):
        (tmp_path / d).mkdir()
    env = dict(os.environ, VFLCLIP_MODELS=str(tmp_path / "models"), VFLCLIP_INPUT=str(tmp_path / "input"),
               VFLCLIP_RESULTS=str(tmp_path / "results"))
    env.pop("COMPOSE_PROJECT_NAME", None)
    compose = ROOT / "deploy" / "docker" / "docker-compose.yml"
    p = subprocess.run(["docker-compose", "-f", str(compose), "config"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    services = subprocess.run(["docker-compose", "-f", str(compose), "--profile", "admin", "config", "--services"],
                              capture_output=True, text=True, env=env, timeout=60)
    assert set(services.stdout.split()) == {"provision", "aggregator", "knowledge-party", "image-party-a",
                                            "image-party-b", "image-party-c", "admin"}, services.stdout + services.stderr


def test_compose_script_skips_without_an_engine(tmp_path):
    """deploy/docker/test-compose.sh says SKIP in one line and succeeds where
    no engine is installed (CI): no docker with `docker compose` or
    docker-compose, no podman with podman-compose."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    p = subprocess.run(["sh", str(ROOT / "deploy" / "docker" / "test-compose.sh")], capture_output=True, text=True,
                       env={"PATH": str(bin_dir)}, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines() == [
        "SKIP: no Compose engine (a running Docker daemon with docker compose or docker-compose, or podman + podman-compose)"]


@pytest.mark.skipif(not os.environ.get("VFLCLIP_COMPOSE_E2E"), reason="SKIP: set VFLCLIP_COMPOSE_E2E=1 to build the "
                    "image and run the Compose demo (deploy/docker/test-compose.sh, several minutes)")
def test_compose_demo_end_to_end():
    p = subprocess.run(["sh", str(ROOT / "deploy" / "docker" / "test-compose.sh")], capture_output=True, text=True,
                       timeout=3600)
    out = p.stdout + p.stderr
    print(out[-3000:])
    assert p.returncode == 0 and "PASS: Compose demo" in out, out[-4000:]
    assert re.search(r"test \(120 images\): AUC [0-9.]+", out)
    assert "no container, volume or network of" in out


def test_demo_runs_end_to_end(tmp_path):
    # the programs under test (VF_BUILD), not whatever build/ holds
    env = dict(os.environ, SKIP_DEPS="1", SKIP_BUILD="1", DEMO_DIR=str(tmp_path / "demo"), DEMO_EPOCHS="2",
               VFLCLIP_BUILD=str(BUILD.resolve()))
    p = subprocess.run([str(ROOT / "deploy" / "demo.sh")], capture_output=True, text=True, env=env, timeout=300)
    out = p.stdout + p.stderr
    print(out[-1500:])
    assert p.returncode == 0, out[-4000:]
    m = re.search(r"test \((\d+) images\): AUC ([0-9.]+)\s+ACC ([0-9.]+)", out)
    assert m and int(m.group(1)) == 120
    for f in ("auc_acc.png", "loss.png", "confusion_test.png", "context.safetensors"):
        assert (tmp_path / "demo" / "results" / f).stat().st_size > 0
    assert "stopping the daemons" in out and "RANDOM weights" in out
    # Nothing left running.
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True).stdout.split()
    assert not left, left
