"""Seed corpus for fuzz_rpc_server: well-formed gRPC requests made with the
independent `h2` library (byte 0 = role, byte 1 = chunk size, then frames
without the connection preface, which the target prepends)."""
import os
import sys

import h2.config
import h2.connection

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def request(path, messages, end=True, extra=()):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":path", path), (":authority", "x"),
                         ("content-type", "application/grpc"), ("te", "trailers"), *extra])
    for i, m in enumerate(messages):
        c.send_data(sid, b"\x00" + len(m).to_bytes(4, "big") + m, end_stream=end and i == len(messages) - 1)
    if not messages and end:
        c.end_stream(sid)
    c.ping(b"12345678")
    data = c.data_to_send()
    assert data.startswith(PREFACE)
    return data[len(PREFACE):]


seeds = [
    (2, 255, request("/vflclip.v1.test.RpcTest/Unary", [b"hello"])),
    (2, 7, request("/vflclip.v1.test.RpcTest/Bidi", [b"P1", b"xx", b"R2", b"yy"], extra=[("grpc-timeout", "100m")])),
    (4, 255, request("/vflclip.v1.test.RpcTest/AdminOnly", [b"F"])),
    (3, 255, request("/vflclip.v1.test.RpcTest/AdminOnly", [b"denied"])),
    (1, 3, request("/a/b", [b"z" * 5000])),
    (2, 255, request("/no/such", [], extra=[("grpc-encoding", "gzip")])),
    (2, 255, request("/vflclip.v1.test.RpcTest/Unary", [b"q" * 3000, b"r" * 3000], end=False)),
]
for i, (role, chunk, frames) in enumerate(seeds):
    with open(os.path.join(out, f"seed{i}"), "wb") as f:
        f.write(bytes([role, chunk - 1]) + frames)
print(f"{len(seeds)} seeds in {out}")
