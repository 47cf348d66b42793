"""gRPC transport benchmark: unary round-trip latency and server-streaming
throughput of 1 MiB messages on loopback with mutual TLS, ours (`vflclip
rpc-test serve` + `vflclip rpc-test call`, C, one process each) against
grpcio's own pair (a grpcio server in another process, a grpcio client here),
same certificates (`vflclip provision`), same machine, same run.

    .venv/bin/python tests/bench/bench_rpc.py --build build [--calls 3000] [--mib 1000] [--runs 3]

Prints each figure (median of --runs rounds, ours and grpcio's alternating) and the ratios."""
import argparse
import concurrent.futures
import json
import os
import pathlib
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
MIB = 1 << 20
STEP_BYTES = 28726  # wire bytes of one federated training step (dL/dT out, text features back)


def stubs(out):
    from grpc_tools import protoc

    proto = ROOT / "proto"
    assert protoc.main(["protoc", f"-I{proto}", f"--python_out={out}", f"--grpc_python_out={out}",
                        str(proto / "rpctest.proto")]) == 0
    sys.path.insert(0, str(out))
    import warnings

    warnings.filterwarnings("ignore", message="Protobuf gencode version")
    import rpctest_pb2, rpctest_pb2_grpc  # noqa

    return rpctest_pb2, rpctest_pb2_grpc


def creds_files(kit):
    return [(kit / f).read_bytes() for f in ("ca.crt", "key.pem", "cert.pem")]


def grpcio_server(kit, stubdir):
    """Child process: a grpcio RpcTest server with mTLS; prints port=N."""
    import grpc

    pb, pbg = stubs(stubdir)
    payload = bytes((i * 7) & 0xFF for i in range(MIB + 256))

    class Servicer(pbg.RpcTestServicer):
        def Unary(self, req, context):
            return pb.EchoReply(payload=req.payload, text=req.text)

        def ServerStream(self, req, context):
            body = payload[: req.size]
            for i in range(req.count):
                yield pb.EchoReply(seq=i, payload=body)

    opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    srv = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4), options=opts)
    pbg.add_RpcTestServicer_to_server(Servicer(), srv)
    ca, key, cert = creds_files(kit)
    port = srv.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)], ca, True))
    srv.start()
    print(f"port={port}", flush=True)
    srv.wait_for_termination()


def start(cmd, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    ready, _, _ = select.select([p.stdout], [], [], 60)
    line = p.stdout.readline() if ready else ""
    if not line.startswith("port="):
        p.kill()
        raise SystemExit(f"server did not start: {cmd}")
    return p, int(line.split("=")[1])


def cpu_s(pid):
    """User+system CPU seconds of a process so far (/proc/PID/stat)."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


# rpc-test runs no BLAS: one OpenBLAS thread (its idle worker would otherwise spin ~0.1 s at start against the
# measured processes), and the OpenMP wait policy main() would re-exec itself with.
OUR_ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_WAIT_POLICY="passive")


class Ours:
    """vflclip rpc-test serve (one process for all rounds) + one vflclip rpc-test call per figure."""

    def __init__(self, vflclip, kits):
        self.srv, port = start([vflclip, "rpc-test", "serve", "--quiet", "--ca", kits["agg"] / "ca.crt", "--cert",
                                kits["agg"] / "cert.pem", "--key", kits["agg"] / "key.pem", "--max-message",
                                str(8 * MIB)], env=OUR_ENV)
        self.base = [vflclip, "rpc-test", "call", "--target", f"localhost:{port}", "--ca", kits["party"] / "ca.crt",
                     "--cert", kits["party"] / "cert.pem", "--key", kits["party"] / "key.pem", "--max-message",
                     str(8 * MIB), "--quiet"]

    def run(self, args):
        out = subprocess.run([*self.base, *args], capture_output=True, text=True, check=True, env=OUR_ENV).stdout
        return json.loads(out.splitlines()[0])

    def round(self, calls, mib):
        """(unary mean us, stream MB/s, (server CPU s, client CPU s) of the stream)"""
        lat = self.run(["--method", "unary", "--repeat", str(calls), "--size", "16"])["mean_us"]
        s0, c0 = cpu_s(self.srv.pid), children_cpu_s()
        thr = self.run(["--method", "server-stream", "--count", str(mib), "--size", str(MIB), "--repeat", "1"])["MBps"]
        return lat, thr, (cpu_s(self.srv.pid) - s0, children_cpu_s() - c0)

    def close(self):
        stop(self.srv)


class GrpcioPair:
    """A grpcio server in another process, a grpcio client in this one."""

    def __init__(self, kits, stubdir):
        import grpc

        self.pb, pbg = stubs(stubdir)
        self.srv, port = start([sys.executable, __file__, "--grpcio-server", str(kits["agg"]), "--stubs",
                                str(stubdir)])
        ca, key, cert = creds_files(kits["party"])
        opts = [("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 64 << 20)]
        self.ch = grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(ca, key, cert), opts)
        self.stub = pbg.RpcTestStub(self.ch)
        self.stub.Unary(self.pb.EchoRequest(payload=b"x" * 16), timeout=30)  # connect and warm up

    def round(self, calls, mib):
        pb, st = self.pb, self.stub
        t = time.perf_counter()
        for _ in range(calls):
            st.Unary(pb.EchoRequest(payload=b"x" * 16), timeout=30)
        lat = (time.perf_counter() - t) / calls * 1e6
        s0, c0, t = cpu_s(self.srv.pid), self_cpu_s(), time.perf_counter()
        n = sum(len(m.payload) for m in st.ServerStream(pb.StreamRequest(count=mib, size=MIB), timeout=600))
        thr = n / (time.perf_counter() - t) / 1e6
        return lat, thr, (cpu_s(self.srv.pid) - s0, self_cpu_s() - c0)

    def close(self):
        self.ch.close()
        stop(self.srv)


def medians(rounds):
    return (statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds),
            (statistics.median(r[2][0] for r in rounds), statistics.median(r[2][1] for r in rounds)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--mib", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--grpcio-server")
    ap.add_argument("--stubs")
    a = ap.parse_args()
    if a.grpcio_server:
        grpcio_server(pathlib.Path(a.grpcio_server), a.stubs)
        return
    vflclip = str(pathlib.Path(a.build) / "vflclip")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        subprocess.run([vflclip, "provision", "--out", tmp / "pki", "--aggregator", "localhost,127.0.0.1",
                        "--image-party", "bench"], check=True, capture_output=True)
        kits = {"agg": tmp / "pki" / "aggregator-localhost", "party": tmp / "pki" / "image-party-bench"}
        (tmp / "stubs").mkdir()
        load0 = os.getloadavg()[0]
        ours, theirs = Ours(vflclip, kits), None
        try:
            theirs = GrpcioPair(kits, tmp / "stubs")
            rounds_ours, rounds_theirs = [], []
            for _ in range(a.runs):  # alternating, so that both pairs see the same machine load
                rounds_ours.append(ours.round(a.calls, a.mib))
                rounds_theirs.append(theirs.round(a.calls, a.mib))
        finally:
            ours.close()
            if theirs:
                theirs.close()
        (ol, ot, oc), (gl, gt, gc) = medians(rounds_ours), medians(rounds_theirs)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {load0:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end")
    print(f"mTLS 1.2 ECDHE-ECDSA AES-128-GCM, loopback, median of {a.runs} alternating rounds; "
          f"stream MB/s per round: ours {' '.join(f'{r[1]:.0f}' for r in rounds_ours)}, "
          f"grpcio {' '.join(f'{r[1]:.0f}' for r in rounds_theirs)}")
    print(f"{'':28s} {'vflclip (C)':>14s} {'grpcio pair':>14s} {'ratio':>8s}")
    print(f"{'unary round trip (us)':28s} {ol:14.1f} {gl:14.1f} {gl / ol:7.1f}x  ({a.calls} calls, 16-byte payload)")
    print(f"{'server stream (MB/s)':28s} {ot:14.1f} {gt:14.1f} {ot / gt:7.1f}x  ({a.mib} x 1 MiB messages)")
    gb = a.mib * MIB / 1e9
    print(f"{'stream CPU s/GB server':28s} {oc[0] / gb:14.2f} {gc[0] / gb:14.2f} {gc[0] / oc[0]:7.1f}x  (user+sys)")
    print(f"{'stream CPU s/GB client':28s} {oc[1] / gb:14.2f} {gc[1] / gb:14.2f} {gc[1] / oc[1]:7.1f}x  (user+sys)")
    # The records are mbedTLS's own (docs/rpc.md): the stream only has to stay far above what a run sends,
    # 28,726 bytes per training step (docs/BENCHMARKS.md, "Federated step").
    print(f"goals: unary < 100 us: {'met' if ol < 100 else 'NOT met'}; the stream carries "
          f"{ot * 1e6 / STEP_BYTES:,.0f} training steps' traffic per second ({STEP_BYTES:,} bytes per step)")


if __name__ == "__main__":
    main()
