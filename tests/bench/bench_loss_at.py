"""The price of [run] loss_at = image-parties: the same federated run (three
image parties, the knowledge party and the aggregator as separate processes
over mutual TLS) with the loss at the aggregator (the paper's way: the image
parties send embeddings and labels once) and at the image parties (each
step a secure sum: every image party gets the text features, computes its
share of the loss and dL/dT for its examples in the batch, masks it with
pairwise masks and sends it back; each evaluation a secure sum of counts and
score histograms).

Printed per mode, from the aggregator's own counters (protobuf + 5-byte gRPC
framing; HTTP/2 and TLS add a few dozen bytes per message):
  - messages and bytes per training step,
  - bytes of the embeddings (pooled) / of the evaluation sums (secure),
  - ms per step: the secure sum (secure mode only) and the knowledge party's
    round trip (TextBackward out, TextFeatures back), means over the run,
  - wall time of the whole run.
With --netem-ms D the whole federation runs in a fresh network namespace
(unshare --net, root) whose loopback delays every packet by D ms (tc netem),
so a round trip costs about 2 D.  Where the kernel has no netem (this
project's build machine), --delay-ms D puts a user-space TCP relay between
the parties and the aggregator that holds every chunk it forwards for D ms,
in both directions, in order: the same added latency for these few long
connections, without netem's jitter or loss options.

  python tests/bench/bench_loss_at.py --build build [--netem-ms 50 | --delay-ms 50]"""
import argparse
import asyncio
import json
import threading
import os
import pathlib
import re
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))
from bench_federated_step import Fed, hospital_data, run_flags, sh  # noqa: E402
from test_federation_support import set_key  # noqa: E402


def in_netns(delay_ms):
    """Re-runs this script in a new network namespace with a delayed loopback."""
    setup = f"ip link set lo up && tc qdisc add dev lo root netem delay {delay_ms}ms && "
    args = " ".join(f"'{a}'" for a in [sys.executable, *sys.argv, "--inside-netns"])
    os.execvp("unshare", ["unshare", "--net", "sh", "-c", setup + args])


class DelayRelay(threading.Thread):
    """127.0.0.1:port -> 127.0.0.1:target, every chunk held delay_s (both ways)."""

    def __init__(self, target, delay_s):
        super().__init__(daemon=True)
        self.target, self.delay = target, delay_s
        self.ready = threading.Event()

    async def pipe(self, reader, writer):
        loop = asyncio.get_running_loop()
        q = asyncio.Queue()

        async def send():
            while True:
                t, data = await q.get()
                wait = t + self.delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()
        task = asyncio.create_task(send())
        try:
            while True:
                data = await reader.read(1 << 16)
                q.put_nowait((loop.time(), data))
                if not data:
                    break
        except ConnectionError:
            q.put_nowait((loop.time(), b""))
        await task

    async def on_client(self, reader, writer):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self.pipe(reader, uw), self.pipe(ur, writer), return_exceptions=True)

    async def serve(self):
        server = await asyncio.start_server(self.on_client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        await server.serve_forever()

    def run(self):
        asyncio.run(self.serve())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--like", default="vit-b-32")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train", type=int, default=192, help="training images over the three parties")
    ap.add_argument("--netem-ms", type=float, default=0)
    ap.add_argument("--delay-ms", type=float, default=0, help="added latency by a user-space relay (no netem needed)")
    ap.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.netem_ms and not args.inside_netns:
        in_netns(args.netem_ms)
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    build = pathlib.Path(args.build)
    vflclip = build / "vflclip"
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-loss-at-") as tmp:
        root = pathlib.Path(tmp)
        model = root / "model"
        sh(vflclip, "make-model", "--like", args.like, "--seed", "1", "--out", model)
        hospital_data(root, [("train", args.train), ("val", 60), ("test", 60)])
        flags = run_flags(args.epochs)
        fed = Fed(vflclip, root, model)
        import conftest
        import test_federation_support as tfs
        conftest.BUILD = tfs.BUILD = build
        admin = fed.fed / "admin-ops" / "admin.ini"
        if args.delay_ms:   # the parties dial the relay; the admin CLI the aggregator itself
            import configparser
            agg_ini = configparser.ConfigParser()
            agg_ini.read(fed.daemons[0].ini)
            relay = DelayRelay(int(agg_ini["server"].get("port", "50051")), args.delay_ms / 1000)
            relay.start()
            relay.ready.wait()
            for d in fed.daemons[1:]:
                set_key(d.ini, "aggregator", "port", relay.port)
        try:
            for d in fed.daemons:
                d.start()
            fed.wait_connected(vflclip, admin)
            # the parties encode their images once at start: a first short run waits for that, unmeasured
            sh(vflclip, "run", "start", *flags, "--max-steps", "1", "--run-id", "warm-up", "--watch", "--admin", admin)
            for mode in ("aggregator", "image-parties"):
                run_id = f"bench-{mode}"
                t0 = time.time()
                sh(vflclip, "run", "start", *flags, "--loss-at", mode, "--run-id", run_id, "--watch", "--admin", admin)
                wall = time.time() - t0
                log = fed.daemons[0].text()
                n, out_b, in_b, _ = map(int, re.findall(
                    rf"event=run_bytes run={run_id} steps=(\d+) bytes_out=(\d+) bytes_in=(\d+) bytes_per_step=(\d+)", log)[-1])
                kp_ms = float(re.findall(rf"event=step_time run={run_id} steps=\d+ min_ms=[0-9.]+ mean_ms=([0-9.]+)", log)[-1])
                r = {"steps": n, "kp_bytes_per_step": (out_b + in_b) / n, "kp_round_trip_ms": kp_ms, "wall_s": round(wall, 2)}
                if mode == "aggregator":
                    emb = re.findall(rf"event=encoding_start run={run_id} parties=3 train=(\d+) val=(\d+) test=(\d+) dim=(\d+)", log)[-1]
                    n_img, dim = sum(map(int, emb[:3])), int(emb[3])
                    r.update(messages_per_step=2, bytes_per_step=r["kp_bytes_per_step"], secure_sum_ms=0.0,
                             embeddings_bytes=n_img * (4 * dim + 6))
                else:
                    m = re.findall(rf"event=secure_sums run={run_id} sums=\d+ redone=\d+ fewest_participants=(\d+) "
                                   rf"bytes_out=\d+ bytes_in=\d+ step_sum_ms=([0-9.]+)", log)[-1]
                    parts_n, sum_ms = int(m[0]), float(m[1])
                    step_bytes, eval_bytes = map(int, re.findall(
                        rf"event=secure_sum_sizes run={run_id} step_bytes=(\d+) eval_bytes=(\d+)", log)[-1])
                    r.update(messages_per_step=2 + 2 * parts_n, bytes_per_step=r["kp_bytes_per_step"] + step_bytes,
                             secure_sum_ms=sum_ms, bytes_per_evaluation=eval_bytes, participants=parts_n)
                results[mode] = r
                print(f"loss at {mode:13s}: {json.dumps(r)}", flush=True)
        finally:
            for d in fed.daemons:
                d.stop()
    a, s = results["aggregator"], results["image-parties"]
    step_a, step_s = a["kp_round_trip_ms"], s["kp_round_trip_ms"] + s["secure_sum_ms"]
    print(f"per step: {a['messages_per_step']} -> {s['messages_per_step']} messages, {a['bytes_per_step']:.0f} -> "
          f"{s['bytes_per_step']:.0f} bytes, {step_a:.2f} -> {step_s:.2f} ms ({step_s / step_a:.2f}x); whole run "
          f"{a['wall_s']:.1f} -> {s['wall_s']:.1f} s (added latency {args.netem_ms or args.delay_ms:g} ms, "
          f"{'netem' if args.netem_ms else 'relay' if args.delay_ms else 'none'})")
    print(json.dumps({"bench": "loss_at", "netem_ms": args.netem_ms, "delay_ms": args.delay_ms, "model": args.like, **{k: v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
