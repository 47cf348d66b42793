/* cmd_rpc_test: `vflclip rpc-test serve|call`, a debug subcommand that drives
 * the transport (common/rpc) for the interop tests and the benchmark.
 *
 *   serve  serves the test-only RpcTest service (proto/rpctest.proto) plus
 *          the role checks of the real services (Admin.Status for admins,
 *          Federation.Join for parties, answering a Hello with a Welcome);
 *          prints "port=N" once listening; SIGTERM/SIGINT shut it down
 *          gracefully, SIGHUP reloads the revocation list.
 *   call   calls one method of a server and prints each reply and the final
 *          status as JSON lines; --repeat measures unary round trips and
 *          server-stream throughput. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "proto/admin.pb-c.h"
#include "proto/federation.pb-c.h"
#include "proto/rpctest.pb-c.h"
#include "rpc/rpc.h"
#include "util/log.h"

#define RPCTEST "/vflclip.v1.test.RpcTest/"

static void fill_pattern(uint8_t *p, size_t n, uint64_t seq) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((seq * 31 + i * 7) & 0xff);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ================================ serve ================================== */

typedef struct serve_state {
    uv_timer_t timer;
    vf_rpc_call *call;       /* NULL once the call is over */
    uint32_t count, size, interval_ms, sent;
    uint64_t seq;
    uint8_t *payload;
    Vflclip__V1__Test__EchoRequest *delayed; /* Unary with delay_ms */
} serve_state;

static serve_state *state_new(vf_rpc_call *call) {
    serve_state *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    uv_timer_init(uv_default_loop(), &st->timer);
    st->timer.data = st;
    st->call = call;
    vf_rpc_call_set_user(call, st);
    return st;
}

static void state_closed(uv_handle_t *h) {
    serve_state *st = h->data;
    if (st->delayed) vflclip__v1__test__echo_request__free_unpacked(st->delayed, NULL);
    free(st->payload);
    free(st);
}

static void on_done_free_state(vf_rpc_call *call, int status, void *ud) {
    serve_state *st = vf_rpc_call_user(call);
    vf_log(VF_INFO, "event=rpctest_call_done method=%s status=%s", vf_rpc_call_path(call), vf_grpc_status_name(status));
    if (!st) return;
    st->call = NULL;
    uv_close((uv_handle_t *)&st->timer, state_closed);
}

static void log_err(const char *what, vf_error *err) { vf_log(VF_WARN, "event=rpctest_error what=%s error=\"%s\"", what, err->msg); }

static void echo_reply(vf_rpc_call *call, const Vflclip__V1__Test__EchoRequest *req, uint64_t seq) {
    vf_error err;
    const vf_peer_identity *peer = vf_rpc_call_peer(call);
    Vflclip__V1__Test__EchoReply rep = VFLCLIP__V1__TEST__ECHO_REPLY__INIT;
    rep.payload = req->payload;
    rep.text = req->text;
    rep.seq = seq;
    rep.peer_role = (char *)vf_role_name(peer->role);
    rep.peer_name = (char *)peer->name;
    if (vf_rpc_call_send_pb(call, &rep.base, &err) < 0) log_err("send", &err);
}

static void unary_answer(vf_rpc_call *call, const Vflclip__V1__Test__EchoRequest *req) {
    vf_error err;
    if (req->fail_code != 0) {
        if (vf_rpc_call_finish(call, req->fail_code, req->fail_message, &err) < 0) log_err("finish", &err);
        return;
    }
    echo_reply(call, req, 0);
    if (vf_rpc_call_finish(call, VF_GRPC_OK, NULL, &err) < 0) log_err("finish", &err);
}

static void on_unary_delay(uv_timer_t *t) {
    serve_state *st = t->data;
    if (st->call) unary_answer(st->call, st->delayed);
}

static void on_unary_message(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    vf_error err;
    Vflclip__V1__Test__EchoRequest *req = vflclip__v1__test__echo_request__unpack(NULL, len, data);
    if (!req) {
        vf_rpc_call_finish(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode EchoRequest", &err);
        return;
    }
    if (req->delay_ms > 0) {
        serve_state *st = state_new(call);
        if (st) {
            st->delayed = req;
            uv_timer_start(&st->timer, on_unary_delay, req->delay_ms, 0);
            return;
        }
    }
    unary_answer(call, req);
    vflclip__v1__test__echo_request__free_unpacked(req, NULL);
}

/* ServerStream: sends while less than 1 MiB is queued, continues on drain. */
static void stream_more(serve_state *st);

static void on_stream_tick(uv_timer_t *t) { stream_more(t->data); }

static void stream_more(serve_state *st) {
    vf_error err;
    vf_rpc_call *call = st->call;
    while (call && st->sent < st->count && vf_rpc_call_send_queued(call) < (1u << 20)) {
        /* fill_pattern(seq) is the seq-0 pattern shifted by k, 7k = 31 seq (mod 256); 183 = 1/7 mod 256 */
        size_t k = (size_t)((st->seq * 31u * 183u) & 0xff);
        Vflclip__V1__Test__EchoReply rep = VFLCLIP__V1__TEST__ECHO_REPLY__INIT;
        rep.payload.data = st->payload + k;
        rep.payload.len = st->size;
        rep.seq = st->seq++;
        if (vf_rpc_call_send_pb(call, &rep.base, &err) < 0) {
            log_err("send", &err);
            return;
        }
        st->sent++;
        if (st->interval_ms > 0 && st->sent < st->count) {
            uv_timer_start(&st->timer, on_stream_tick, st->interval_ms, 0);
            return;
        }
    }
    if (call && st->sent == st->count) {
        st->sent++; /* finish once */
        if (vf_rpc_call_finish(call, VF_GRPC_OK, NULL, &err) < 0) log_err("finish", &err);
    }
}

static void on_stream_drain(vf_rpc_call *call, void *ud) {
    serve_state *st = vf_rpc_call_user(call);
    if (st && st->interval_ms == 0) stream_more(st);
}

static void on_stream_message(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    vf_error err;
    if (vf_rpc_call_user(call)) return; /* one request per call */
    Vflclip__V1__Test__StreamRequest *req = vflclip__v1__test__stream_request__unpack(NULL, len, data);
    if (!req) {
        vf_rpc_call_finish(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode StreamRequest", &err);
        return;
    }
    serve_state *st = state_new(call);
    if (!st || !(st->payload = malloc((size_t)req->size + 256))) {
        vflclip__v1__test__stream_request__free_unpacked(req, NULL);
        vf_rpc_call_finish(call, VF_GRPC_RESOURCE_EXHAUSTED, "out of memory", &err);
        return;
    }
    st->count = req->count;
    st->size = req->size;
    fill_pattern(st->payload, (size_t)st->size + 256, 0);
    st->interval_ms = req->interval_ms;
    vflclip__v1__test__stream_request__free_unpacked(req, NULL);
    stream_more(st);
}

/* Bidi: one reply per request, OK at the client's half-close. */
static void on_bidi_message(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    vf_error err;
    Vflclip__V1__Test__EchoRequest *req = vflclip__v1__test__echo_request__unpack(NULL, len, data);
    if (!req) {
        vf_rpc_call_finish(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode EchoRequest", &err);
        return;
    }
    uintptr_t seq = (uintptr_t)vf_rpc_call_user(call);
    echo_reply(call, req, seq);
    vf_rpc_call_set_user(call, (void *)(seq + 1));
    vflclip__v1__test__echo_request__free_unpacked(req, NULL);
}

static void on_half_close_ok(vf_rpc_call *call, void *ud) {
    vf_error err;
    vf_rpc_call_finish(call, VF_GRPC_OK, NULL, &err);
}

static void on_done_log(vf_rpc_call *call, int status, void *ud) {
    vf_log(VF_INFO, "event=rpctest_call_done method=%s status=%s", vf_rpc_call_path(call), vf_grpc_status_name(status));
}

/* Admin.Status for admins: says what this process is (a test server). */
static void on_status_message(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    vf_error err;
    Vflclip__V1__StatusReply rep = VFLCLIP__V1__STATUS_REPLY__INIT;
    rep.state = "rpc-test";
    rep.aggregator_name = "rpc-test";
    vf_rpc_call_send_pb(call, &rep.base, &err);
    vf_rpc_call_finish(call, VF_GRPC_OK, NULL, &err);
}

/* Federation.Join for parties: a Hello gets a Welcome. */
static void on_join_message(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    vf_error err;
    Vflclip__V1__PartyMessage *m = vflclip__v1__party_message__unpack(NULL, len, data);
    if (!m) {
        vf_rpc_call_finish(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode PartyMessage", &err);
        return;
    }
    if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_HELLO) {
        Vflclip__V1__Welcome w = VFLCLIP__V1__WELCOME__INIT;
        w.aggregator_name = "rpc-test";
        w.protocol_version = 1;
        Vflclip__V1__AggregatorMessage a = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
        a.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME;
        a.welcome = &w;
        vf_rpc_call_send_pb(call, &a.base, &err);
    }
    vflclip__v1__party_message__free_unpacked(m, NULL);
}

static vf_rpc_server *g_server;

static void on_server_closed(vf_rpc_server *s, void *ud) { vf_log(VF_INFO, "event=rpctest_server_closed"); }

static int g_grace_ms = 5000;

static uv_signal_t g_sigterm, g_sigint;

static void on_stop_signal(uv_signal_t *h, int sig) {
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
    vf_rpc_server_shutdown(g_server, g_grace_ms, on_server_closed, NULL);
}

static int serve(int argc, char **argv) {
    vf_rpc_server_config cfg = {0};
    cfg.host = "127.0.0.1";
    cfg.watch_sighup = 1;
    static struct option opts[] = {{"listen", 1, 0, 'l'},           {"port", 1, 0, 'p'},
                                   {"ca", 1, 0, 'a'},               {"cert", 1, 0, 'c'},
                                   {"key", 1, 0, 'k'},              {"crl", 1, 0, 'r'},
                                   {"max-connections", 1, 0, 'm'},  {"handshake-timeout-ms", 1, 0, 'h'},
                                   {"keepalive-ms", 1, 0, 'K'},     {"keepalive-timeout-ms", 1, 0, 'T'},
                                   {"max-message", 1, 0, 'M'},      {"grace-ms", 1, 0, 'g'},
                                   {"crl-missing", 1, 0, 'C'},      {"max-per-source", 1, 0, 'S'},
                                   {"admin-reserve", 1, 0, 'A'},    {"max-recv-buffered", 1, 0, 'B'},
                                   {"max-send-queued", 1, 0, 'Q'},  {"write-timeout-ms", 1, 0, 'W'},
                                   {"quiet", 0, 0, 'q'},
                                   {0, 0, 0, 0}};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'l': cfg.host = optarg; break;
        case 'p': cfg.port = atoi(optarg); break;
        case 'a': cfg.tls.ca_file = optarg; break;
        case 'c': cfg.tls.cert_file = optarg; break;
        case 'k': cfg.tls.key_file = optarg; break;
        case 'r': cfg.tls.crl_file = optarg; break;
        case 'm': cfg.max_connections = atoi(optarg); break;
        case 'h': cfg.handshake_timeout_ms = atoi(optarg); break;
        case 'S': cfg.max_per_source = atoi(optarg); break;
        case 'A': cfg.admin_reserve = atoi(optarg); break;
        case 'B': cfg.max_recv_buffered = (size_t)atoll(optarg); break;
        case 'Q': cfg.max_send_queued = (size_t)atoll(optarg); break;
        case 'W': cfg.write_timeout_ms = atoi(optarg); break;
        case 'K': cfg.keepalive_ms = atoi(optarg); break;
        case 'T': cfg.keepalive_timeout_ms = atoi(optarg); break;
        case 'M': cfg.max_recv_message = (size_t)atoll(optarg); break;
        case 'g': g_grace_ms = atoi(optarg); break;
        case 'C':
            if (strcmp(optarg, "keep") == 0) cfg.crl_missing = VF_RPC_CRL_KEEP;
            else if (strcmp(optarg, "refuse-all") == 0) cfg.crl_missing = VF_RPC_CRL_REFUSE_ALL;
            else {
                fprintf(stderr, "vflclip rpc-test serve: --crl-missing wants keep or refuse-all\n");
                return 2;
            }
            break;
        case 'q': vf_log_set_level(VF_WARN); break;
        default: return 2;
        }
    }
    unsigned parties = VF_ROLE_BIT(VF_ROLE_IMAGE_PARTY) | VF_ROLE_BIT(VF_ROLE_KNOWLEDGE_PARTY);
    vf_rpc_method methods[] = {
        {RPCTEST "Unary", VF_ROLES_ALL, NULL, on_unary_message, NULL, on_done_free_state, NULL, NULL},
        {RPCTEST "ServerStream", VF_ROLES_ALL, NULL, on_stream_message, NULL, on_done_free_state, on_stream_drain, NULL},
        {RPCTEST "Bidi", VF_ROLES_ALL, NULL, on_bidi_message, on_half_close_ok, on_done_log, NULL, NULL},
        {RPCTEST "AdminOnly", VF_ROLE_BIT(VF_ROLE_ADMIN), NULL, on_unary_message, NULL, on_done_free_state, NULL, NULL},
        {"/vflclip.v1.Admin/Status", VF_ROLE_BIT(VF_ROLE_ADMIN), NULL, on_status_message, NULL, on_done_log, NULL, NULL},
        {"/vflclip.v1.Federation/Join", parties, NULL, on_join_message, on_half_close_ok, on_done_log, NULL, NULL},
    };
    vf_error err;
    uv_loop_t *loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN);
    if (vf_rpc_server_start(loop, &cfg, methods, (int)(sizeof methods / sizeof methods[0]), &g_server, &err) < 0) {
        fprintf(stderr, "vflclip rpc-test serve: %s\n", err.msg);
        uv_run(loop, UV_RUN_DEFAULT);
        return 1;
    }
    printf("port=%d\n", vf_rpc_server_port(g_server));
    fflush(stdout);
    uv_signal_init(loop, &g_sigterm);
    uv_signal_init(loop, &g_sigint);
    uv_signal_start(&g_sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&g_sigint, on_stop_signal, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    vf_rpc_server_free(g_server);
    return 0;
}

/* ================================= call ================================== */

typedef struct call_opts {
    const char *method, *text, *fail_message;
    int count, size, timeout_ms, fail_code, delay_ms, repeat, interval_ms, quiet, max_message, pause_ms;
} call_opts;

static call_opts g_co;
static vf_rpc_client *g_client;
static int g_exit = 0, g_received;
static size_t g_bytes;
static double g_t0, g_tcall;
static double *g_lat;

static void print_reply(const uint8_t *data, size_t len) {
    g_received++;
    g_bytes += len;
    if (g_co.quiet) return;
    if (strcmp(g_co.method, "status") == 0) {
        Vflclip__V1__StatusReply *r = vflclip__v1__status_reply__unpack(NULL, len, data);
        printf("{\"state\":\"%s\"}\n", r ? r->state : "?");
        if (r) vflclip__v1__status_reply__free_unpacked(r, NULL);
        return;
    }
    if (strcmp(g_co.method, "join") == 0) {
        Vflclip__V1__AggregatorMessage *a = vflclip__v1__aggregator_message__unpack(NULL, len, data);
        printf("{\"welcome\":\"%s\"}\n", a && a->welcome ? a->welcome->aggregator_name : "?");
        if (a) vflclip__v1__aggregator_message__free_unpacked(a, NULL);
        return;
    }
    Vflclip__V1__Test__EchoReply *r = vflclip__v1__test__echo_reply__unpack(NULL, len, data);
    if (!r) {
        printf("{\"error\":\"cannot decode EchoReply\"}\n");
        return;
    }
    uLong crc = crc32(0L, r->payload.data, (uInt)r->payload.len);
    printf("{\"seq\":%llu,\"len\":%zu,\"crc32\":%lu,\"text\":\"%s\",\"peer_role\":\"%s\",\"peer_name\":\"%s\"}\n",
           (unsigned long long)r->seq, r->payload.len, crc, r->text, r->peer_role, r->peer_name);
    vflclip__v1__test__echo_reply__free_unpacked(r, NULL);
}

/* --pause-ms: after the first reply the call stops taking messages for a
 * while; the held bytes are sampled to show flow control bounding them. */
static uv_timer_t g_sample_timer;
static vf_rpc_call *g_paused_call;
static size_t g_max_held;
static int g_pause_ticks, g_sample_inited;

static void on_sample(uv_timer_t *t) {
    if (!g_paused_call) return;
    size_t h = vf_rpc_call_recv_held(g_paused_call);
    if (h > g_max_held) g_max_held = h;
    if (--g_pause_ticks > 0) return;
    uv_timer_stop(t);
    vf_rpc_call *call = g_paused_call;
    g_paused_call = NULL;
    printf("{\"paused_ms\":%d,\"max_held\":%zu}\n", g_co.pause_ms, g_max_held);
    vf_rpc_call_pause_recv(call, 0);
}

static void on_reply(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    print_reply(data, len);
    if (g_co.pause_ms > 0 && g_received == 1) {
        vf_rpc_call_pause_recv(call, 1);
        g_paused_call = call;
        g_pause_ticks = g_co.pause_ms / 20;
        uv_timer_init(uv_default_loop(), &g_sample_timer);
        g_sample_inited = 1;
        uv_timer_start(&g_sample_timer, on_sample, 20, 20);
    }
}

static int start_call(void);

static void print_status_json(int status, const char *message) {
    printf("{\"status\":%d,\"code\":\"%s\",\"message\":\"", status, vf_grpc_status_name(status));
    for (const char *p = message; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        if ((unsigned char)*p >= 0x20) putchar(*p);
    }
    printf("\"}\n");
}

static int g_done_calls;

static void on_call_done(vf_rpc_call *call, int status, const char *message, void *ud) {
    double t = now_s();
    if (g_co.repeat > 0) {
        g_lat[g_done_calls++] = t - g_tcall;
        if (status == VF_GRPC_OK && g_done_calls < g_co.repeat) {
            start_call();
            return;
        }
    }
    if (g_co.repeat > 0 && status == VF_GRPC_OK) {
        double total = t - g_t0;
        int n = g_done_calls;
        if (strcmp(g_co.method, "unary") == 0) {
            for (int i = 1; i < n; i++) /* insertion sort for the percentiles */
                for (int j = i; j > 0 && g_lat[j] < g_lat[j - 1]; j--) {
                    double x = g_lat[j];
                    g_lat[j] = g_lat[j - 1];
                    g_lat[j - 1] = x;
                }
            printf("{\"bench\":\"unary\",\"calls\":%d,\"mean_us\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n", n,
                   total / n * 1e6, g_lat[n / 2] * 1e6, g_lat[(int)(n * 0.99)] * 1e6);
        } else {
            printf("{\"bench\":\"%s\",\"calls\":%d,\"messages\":%d,\"bytes\":%zu,\"seconds\":%.4f,\"MBps\":%.1f}\n",
                   g_co.method, n, g_received, g_bytes, total, g_bytes / total / 1e6);
        }
    }
    print_status_json(status, message);
    if (g_sample_inited) uv_close((uv_handle_t *)&g_sample_timer, NULL);
    g_sample_inited = 0;
    g_paused_call = NULL;
    vf_rpc_client_close(g_client);
}

static void send_echo(vf_rpc_call *call, int seq, vf_error *err) {
    Vflclip__V1__Test__EchoRequest req = VFLCLIP__V1__TEST__ECHO_REQUEST__INIT;
    uint8_t *buf = malloc(g_co.size > 0 ? (size_t)g_co.size : 1);
    fill_pattern(buf, (size_t)g_co.size, (uint64_t)seq);
    req.payload.data = buf;
    req.payload.len = (size_t)g_co.size;
    req.text = (char *)g_co.text;
    req.fail_code = g_co.fail_code;
    req.fail_message = (char *)g_co.fail_message;
    req.delay_ms = (uint32_t)g_co.delay_ms;
    if (vf_rpc_call_send_pb(call, &req.base, err) < 0) fprintf(stderr, "send: %s\n", err->msg);
    free(buf);
}

static int start_call(void) {
    vf_error err;
    const char *m = g_co.method;
    char path[128];
    if (strcmp(m, "status") == 0) snprintf(path, sizeof path, "/vflclip.v1.Admin/Status");
    else if (strcmp(m, "join") == 0) snprintf(path, sizeof path, "/vflclip.v1.Federation/Join");
    else if (strcmp(m, "unary") == 0) snprintf(path, sizeof path, RPCTEST "Unary");
    else if (strcmp(m, "admin-only") == 0) snprintf(path, sizeof path, RPCTEST "AdminOnly");
    else if (strcmp(m, "server-stream") == 0) snprintf(path, sizeof path, RPCTEST "ServerStream");
    else if (strcmp(m, "bidi") == 0) snprintf(path, sizeof path, RPCTEST "Bidi");
    else snprintf(path, sizeof path, "%s", m); /* a raw path: sends one EchoRequest */
    vf_rpc_call_handlers h = {on_reply, on_call_done, NULL, NULL};
    g_tcall = now_s();
    vf_rpc_call *call = vf_rpc_client_call(g_client, path, g_co.timeout_ms, &h, &err);
    if (!call) {
        fprintf(stderr, "vflclip rpc-test call: %s\n", err.msg);
        g_exit = 3;
        vf_rpc_client_close(g_client);
        return -1;
    }
    if (strcmp(m, "server-stream") == 0) {
        Vflclip__V1__Test__StreamRequest req = VFLCLIP__V1__TEST__STREAM_REQUEST__INIT;
        req.count = (uint32_t)g_co.count;
        req.size = (uint32_t)g_co.size;
        req.interval_ms = (uint32_t)g_co.interval_ms;
        vf_rpc_call_send_pb(call, &req.base, &err);
    } else if (strcmp(m, "status") == 0) {
        Vflclip__V1__StatusRequest req = VFLCLIP__V1__STATUS_REQUEST__INIT;
        vf_rpc_call_send_pb(call, &req.base, &err);
    } else if (strcmp(m, "join") == 0) {
        Vflclip__V1__Hello hello = VFLCLIP__V1__HELLO__INIT;
        hello.role = (Vflclip__V1__Role)vf_rpc_client_peer(g_client)->role; /* any; the server reads the certificate */
        hello.name = (char *)g_co.text;
        Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
        pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_HELLO;
        pm.hello = &hello;
        vf_rpc_call_send_pb(call, &pm.base, &err);
    } else {
        int n = strcmp(m, "bidi") == 0 ? g_co.count : 1;
        for (int i = 0; i < n; i++) send_echo(call, i, &err);
    }
    vf_rpc_call_close_send(call, &err);
    return 0;
}

static void on_ready(vf_rpc_client *c, int status, const char *msg, void *ud) {
    if (status != 0) {
        fprintf(stderr, "vflclip rpc-test call: connection failed: %s\n", msg);
        printf("{\"connect_error\":\"%s\"}\n", msg);
        g_exit = 3;
        return;
    }
    g_t0 = now_s();
    start_call();
}

static void on_closed(vf_rpc_client *c, const char *reason, void *ud) {}

static int call(int argc, char **argv) {
    vf_rpc_client_config cfg = {0};
    g_co = (call_opts){.method = "unary", .text = "", .fail_message = "", .count = 1, .size = 0};
    static struct option opts[] = {
        {"target", 1, 0, 't'},     {"ca", 1, 0, 'a'},          {"cert", 1, 0, 'c'},       {"key", 1, 0, 'k'},
        {"server-name", 1, 0, 'n'}, {"method", 1, 0, 'm'},     {"count", 1, 0, 'N'},      {"size", 1, 0, 's'},
        {"text", 1, 0, 'x'},       {"timeout-ms", 1, 0, 'o'},  {"fail-code", 1, 0, 'f'},  {"fail-message", 1, 0, 'F'},
        {"delay-ms", 1, 0, 'd'},   {"repeat", 1, 0, 'R'},      {"interval-ms", 1, 0, 'i'}, {"quiet", 0, 0, 'q'},
        {"max-message", 1, 0, 'M'}, {"pause-ms", 1, 0, 'P'}, {0, 0, 0, 0}};
    int o;
    char host[256] = "";
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 't': {
            const char *colon = strrchr(optarg, ':');
            if (!colon) {
                fprintf(stderr, "vflclip rpc-test call: --target wants HOST:PORT\n");
                return 2;
            }
            snprintf(host, sizeof host, "%.*s", (int)(colon - optarg), optarg);
            if (host[0] == '[') {
                memmove(host, host + 1, strlen(host));
                host[strlen(host) - 1] = 0;
            }
            cfg.port = atoi(colon + 1);
            break;
        }
        case 'a': cfg.tls.ca_file = optarg; break;
        case 'c': cfg.tls.cert_file = optarg; break;
        case 'k': cfg.tls.key_file = optarg; break;
        case 'n': cfg.server_name = optarg; break;
        case 'm': g_co.method = optarg; break;
        case 'N': g_co.count = atoi(optarg); break;
        case 's': g_co.size = atoi(optarg); break;
        case 'x': g_co.text = optarg; break;
        case 'o': g_co.timeout_ms = atoi(optarg); break;
        case 'f': g_co.fail_code = atoi(optarg); break;
        case 'F': g_co.fail_message = optarg; break;
        case 'd': g_co.delay_ms = atoi(optarg); break;
        case 'R': g_co.repeat = atoi(optarg); break;
        case 'i': g_co.interval_ms = atoi(optarg); break;
        case 'q': g_co.quiet = 1; break;
        case 'M': cfg.max_recv_message = (size_t)atoll(optarg); break;
        case 'P': g_co.pause_ms = atoi(optarg); break;
        default: return 2;
        }
    }
    if (!host[0]) {
        fprintf(stderr, "vflclip rpc-test call: --target HOST:PORT is required\n");
        return 2;
    }
    cfg.host = host;
    if (g_co.repeat > 0) g_lat = calloc((size_t)g_co.repeat, sizeof *g_lat);
    if (g_co.repeat > 0 && strcmp(g_co.method, "unary") != 0) g_co.quiet = 1;
    vf_error err;
    vf_rpc_client_handlers h = {on_ready, on_closed, NULL};
    signal(SIGPIPE, SIG_IGN);
    if (vf_rpc_client_connect(uv_default_loop(), &cfg, &h, &g_client, &err) < 0) {
        fprintf(stderr, "vflclip rpc-test call: %s\n", err.msg);
        uv_run(uv_default_loop(), UV_RUN_DEFAULT);
        return 3;
    }
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    free(g_lat);
    fflush(stdout);
    return g_exit;
}

int vf_cmd_rpc_test(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) return serve(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "call") == 0) return call(argc - 1, argv + 1);
    fprintf(stderr,
            "usage: vflclip rpc-test serve --ca F --cert F --key F [--crl F] [--listen IP] [--port N]\n"
            "                              [--max-connections N] [--handshake-timeout-ms N] [--keepalive-ms N]\n"
            "                              [--keepalive-timeout-ms N] [--max-message BYTES] [--grace-ms N]\n"
            "                              [--crl-missing keep|refuse-all] [--max-per-source N] [--admin-reserve N]\n"
            "                              [--max-recv-buffered BYTES] [--max-send-queued BYTES] [--write-timeout-ms N]\n"
            "       vflclip rpc-test call --target HOST:PORT --ca F --cert F --key F [--server-name N]\n"
            "                              [--method unary|server-stream|bidi|admin-only|status|join|/raw/Path]\n"
            "                              [--count N] [--size BYTES] [--text S] [--timeout-ms N] [--fail-code N]\n"
            "                              [--fail-message S] [--delay-ms N] [--repeat N] [--interval-ms N]\n"
            "                              [--pause-ms N (stop taking messages after the first)] [--quiet]\n"
            "(debug) drives the gRPC transport for the interop tests and the benchmark\n");
    return argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) ? 0 : 2;
}
