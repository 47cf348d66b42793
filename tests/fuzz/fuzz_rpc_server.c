/* fuzz_rpc_server: libFuzzer target for the server's decoding path: HTTP/2
 * frames (nghttp2 with our callbacks), request header validation, role
 * checks, gRPC message framing and flow control, with handlers that echo,
 * pause, finish early and fail, as real ones do.  No socket and no TLS: the
 * bytes go straight into the connection's HTTP/2 session (vf_rpc_fuzz_feed).
 *
 * Input: byte 0 picks the peer's role, byte 1 the chunk size the rest is fed
 * in (so frames arrive split at every offset); the client connection preface
 * is prepended so the fuzzer starts at the frame layer.
 *
 *   make fuzz            builds build/fuzz/fuzz_rpc_server and runs it 30 s
 *   build/fuzz/fuzz_rpc_server -max_total_time=600 CORPUS_DIR   by hand */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc_internal.h"
#include "util/log.h"

static void echo_message(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    vf_error err;
    vf_rpc_call_send(call, data, len, &err);
    if (len > 0 && data[0] == 'P') vf_rpc_call_pause_recv(call, 1);
    if (len > 0 && data[0] == 'R') vf_rpc_call_pause_recv(call, 0);
    if (len > 0 && data[0] == 'F') vf_rpc_call_finish(call, VF_GRPC_ABORTED, "finished early \xe2\x9c\x97 %", &err);
}

static void finish_ok(vf_rpc_call *call, void *ud) {
    vf_error err;
    vf_rpc_call_pause_recv(call, 0);
    vf_rpc_call_finish(call, VF_GRPC_OK, NULL, &err);
}

static void start_fail(vf_rpc_call *call, void *ud) {
    vf_error err;
    vf_rpc_call_finish(call, VF_GRPC_NOT_FOUND, "nothing here", &err);
}

static void done(vf_rpc_call *call, int status, void *ud) {}

static const vf_rpc_method methods[] = {
    {"/vflclip.v1.test.RpcTest/Unary", VF_ROLES_ALL, NULL, echo_message, finish_ok, done, NULL, NULL},
    {"/vflclip.v1.test.RpcTest/Bidi", VF_ROLES_ALL, NULL, echo_message, finish_ok, done, NULL, NULL},
    {"/vflclip.v1.test.RpcTest/AdminOnly", VF_ROLE_BIT(VF_ROLE_ADMIN), NULL, echo_message, finish_ok, done, NULL, NULL},
    {"/a/b", VF_ROLES_ALL, start_fail, echo_message, finish_ok, done, NULL, NULL},
};

static vf_rpc_server *server;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!server) {
        vf_log_set_level(VF_ERROR + 1);
        server = vf_rpc_fuzz_server_new(methods, (int)(sizeof methods / sizeof methods[0]), 4096);
        if (!server) return 0;
    }
    if (size < 2) return 0;
    vf_role role = (vf_role)(data[0] % 5);
    size_t chunk = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    vf_rpc_conn *c = vf_rpc_fuzz_conn_new(server, role);
    if (!c) return 0;
    static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    vf_rpc_fuzz_feed(c, preface, sizeof preface - 1);
    for (size_t off = 0; off < size; off += chunk)
        vf_rpc_fuzz_feed(c, data + off, size - off < chunk ? size - off : chunk);
    vf_rpc_fuzz_conn_free(c);
    return 0;
}
