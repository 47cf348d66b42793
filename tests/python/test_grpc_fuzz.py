"""Runs the libFuzzer target for the gRPC server's HTTP/2 + gRPC decoding
(tests/fuzz/fuzz_rpc_server.c, clang -fsanitize=fuzzer,address,undefined) for
a bounded time, as `make fuzz` does.  Any crash, sanitizer report or leak
fails the test and leaves the input in build/fuzz/.  Longer runs by hand:
`make fuzz FUZZ_SECONDS=600`."""
import os
import pathlib
import re
import shutil

import pytest

from conftest import BUILD, ROOT, run


def test_fuzz_rpc_server_decoding_path():
    if not shutil.which("clang-14"):
        pytest.skip("SKIP: clang-14 is absent (deploy/install-deps.sh installs it)")
    seconds = os.environ.get("VF_FUZZ_SECONDS", "20")
    fuzz = pathlib.Path(BUILD) / "fuzz"
    p = run(["make", "-C", ROOT, f"BUILD={BUILD}", fuzz / "fuzz_rpc_server"], check=False, timeout=600)
    if p.returncode == 0:   # this target only: `make fuzz` (every target) is the test command's fuzz-smoke
        p = run([ROOT / "tests/fuzz/run.sh", BUILD, seconds, "rpc_server"], check=False, timeout=600, cwd=ROOT)
    out = p.stdout + p.stderr
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    assert p.returncode == 0 and m, f"the fuzzer failed (rc {p.returncode}):\n{out[-6000:]}"
    print(f"fuzz_rpc_server: {m.group(1)} inputs in {seconds} s, no crash")
    assert int(m.group(1)) > 1000
