"""gRPC transport benchmark: unary round-trip latency and server-streaming
throughput of 1 MiB messages on loopback with mutual TLS, ours (`vflclip
rpc-test serve` + `vflclip rpc-test call`, C, one process each) against
grpcio's own pair (a grpcio server in another process, a grpcio client here),
same certificates (`vflclip provision`), same machine, same run.

    .venv/bin/python tests/bench/bench_rpc.py --build build [--calls 3000] [--mib 1000] [--runs 3]

Prints each figure (median of --runs) and the ratios."""
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


def start(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
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


def ours(vflclip, kits, calls, mib, runs):
    srv, port = start([vflclip, "rpc-test", "serve", "--quiet", "--ca", kits["agg"] / "ca.crt", "--cert",
                       kits["agg"] / "cert.pem", "--key", kits["agg"] / "key.pem", "--max-message", str(8 * MIB)])
    base = [vflclip, "rpc-test", "call", "--target", f"localhost:{port}", "--ca", kits["party"] / "ca.crt", "--cert",
            kits["party"] / "cert.pem", "--key", kits["party"] / "key.pem", "--max-message", str(8 * MIB), "--quiet"]
    lat, thr, cpu = [], [], []
    try:
        for _ in range(runs):
            out = subprocess.run([*base, "--method", "unary", "--repeat", str(calls), "--size", "16"],
                                 capture_output=True, text=True, check=True).stdout
            lat.append(json.loads(out.splitlines()[0])["mean_us"])
            s0, c0 = cpu_s(srv.pid), children_cpu_s()
            out = subprocess.run([*base, "--method", "server-stream", "--count", str(mib), "--size", str(MIB),
                                  "--repeat", "1"], capture_output=True, text=True, check=True).stdout
            thr.append(json.loads(out.splitlines()[0])["MBps"])
            cpu.append((cpu_s(srv.pid) - s0, children_cpu_s() - c0))
    finally:
        stop(srv)
    return statistics.median(lat), statistics.median(thr), min(cpu)


def grpcio_pair(kits, stubdir, calls, mib, runs):
    import grpc

    pb, pbg = stubs(stubdir)
    srv, port = start([sys.executable, __file__, "--grpcio-server", str(kits["agg"]), "--stubs", str(stubdir)])
    ca, key, cert = creds_files(kits["party"])
    opts = [("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 64 << 20)]
    lat, thr, cpu = [], [], []
    try:
        with grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(ca, key, cert), opts) as ch:
            st = pbg.RpcTestStub(ch)
            st.Unary(pb.EchoRequest(payload=b"x" * 16), timeout=30)  # connect and warm up
            for _ in range(runs):
                t = time.perf_counter()
                for _ in range(calls):
                    st.Unary(pb.EchoRequest(payload=b"x" * 16), timeout=30)
                lat.append((time.perf_counter() - t) / calls * 1e6)
                s0, c0, t = cpu_s(srv.pid), self_cpu_s(), time.perf_counter()
                n = sum(len(m.payload) for m in st.ServerStream(pb.StreamRequest(count=mib, size=MIB), timeout=600))
                thr.append(n / (time.perf_counter() - t) / 1e6)
                cpu.append((cpu_s(srv.pid) - s0, self_cpu_s() - c0))
    finally:
        stop(srv)
    return statistics.median(lat), statistics.median(thr), min(cpu)


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
        ol, ot, oc = ours(vflclip, kits, a.calls, a.mib, a.runs)
        gl, gt, gc = grpcio_pair(kits, tmp / "stubs", a.calls, a.mib, a.runs)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end")
    print(f"mTLS 1.2 ECDHE-ECDSA AES-128-GCM, loopback, median of {a.runs} runs")
    print(f"{'':28s} {'vflclip (C)':>14s} {'grpcio pair':>14s} {'ratio':>8s}")
    print(f"{'unary round trip (us)':28s} {ol:14.1f} {gl:14.1f} {gl / ol:7.1f}x  ({a.calls} calls, 16-byte payload)")
    print(f"{'server stream (MB/s)':28s} {ot:14.1f} {gt:14.1f} {ot / gt:7.1f}x  ({a.mib} x 1 MiB messages)")
    gb = a.mib * MIB / 1e9
    print(f"{'stream CPU s/GB server':28s} {oc[0] / gb:14.2f} {gc[0] / gb:14.2f} {gc[0] / oc[0]:7.1f}x  (user+sys)")
    print(f"{'stream CPU s/GB client':28s} {oc[1] / gb:14.2f} {gc[1] / gb:14.2f} {gc[1] / oc[1]:7.1f}x  (user+sys)")
    print(f"goals: unary < 100 us: {'met' if ol < 100 else 'NOT met'}; streaming > 1000 MB/s: "
          f"{'met' if ot > 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
