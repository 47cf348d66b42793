/* fuzz_admin: the aggregator's Admin service (aggregator/admin.c, every
 * method of agg_admin_methods: Status, ListParties, StartRun, AbortRun,
 * WatchRun, GetResults, ListRuns, ShowRun, ContinueRun) called by an admin
 * with hostile requests.  As in fuzz_aggregator, the aggregator's own files
 * (every aggregator/ file but main.c, FUZZ_EXTRA_admin) are linked as they
 * are and the gRPC server is the real one without a socket (vf_rpc_fuzz_*:
 * HTTP/2 frames straight into nghttp2), serving Federation.Join and the
 * Admin methods as main.c registers them; each request goes through the
 * stream's framing and the role check into the handler, and the replies go
 * out through the same server (and are dropped).
 *
 * Each input starts from the same state: an empty state directory (no run
 * history), a knowledge party "kp" and an image party "h1" connected with
 * valid Hellos (so a StartRun can start a run, which sends its RunSetup and
 * waits), no run, and one admin connection (certificate role admin).  The
 * input is then a list of records
 *   [op] [len: 2 bytes big-endian] [len bytes]
 * op & 15 (mod the number of methods): the Admin method called, on a new
 * stream of the admin connection, with the bytes as its one request message;
 * op & 16: the admin connection is closed first and a new one opened (its
 * WatchRun streams end); op & 32: the request goes without END_STREAM (the
 * stream stays half open).  At the end the connections close and a run
 * still going is aborted.
 *
 * Not covered: TLS and the certificate checks (fuzz_rpc_server and the
 * Python tests), other roles calling Admin (the role check is
 * fuzz_rpc_server's AdminOnly), the run itself past its RunSetup
 * (fuzz_aggregator).
 *
 * VF_FUZZ_WRITE_SEEDS=DIR writes seed inputs and exits; VF_FUZZ_VERBOSE=1
 * prints the run's state after each input. */
#include "../../aggregator/agg.h"
#include "rpc/rpc_internal.h"
#include "fuzz_parties.h"
#include "fuzz_records.h"
#include "fuzz_util.h"
#include "util/fileio.h"

#include <ftw.h>

agg g_agg;
static vf_rpc_server *server;

/* ---- HTTP/2 client frames, by hand (as fuzz_aggregator.c) ------------------- */
static void headers(buf *b, uint32_t sid, const char *path) {
    buf h = {0};
    hpack_literal(&h, ":method", "POST");
    hpack_literal(&h, ":scheme", "https");
    hpack_literal(&h, ":path", path);
    hpack_literal(&h, ":authority", "agg.fuzz");
    hpack_literal(&h, "content-type", "application/grpc");
    hpack_literal(&h, "te", "trailers");
    frame(b, 1, 4, sid, h.p, h.n);   /* HEADERS, END_HEADERS */
    free(h.p);
}
/* One gRPC message on stream sid (DATA frames of at most 16 KiB), END_STREAM on the last when end. */
static void data_msg(buf *b, uint32_t sid, const uint8_t *msg, size_t n, int end) {
    buf m = {0};
    uint8_t pre[5] = {0, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    put(&m, pre, 5);
    put(&m, msg, n);
    for (size_t off = 0; off < m.n; off += 16384) {
        size_t k = m.n - off < 16384 ? m.n - off : 16384;
        frame(b, 0, end && off + k >= m.n ? 1 : 0, sid, m.p + off, k);
    }
    free(m.p);
}
static vf_rpc_conn *conn_open(vf_role role, const char *name, const char *serial) {
    vf_rpc_conn *c = vf_rpc_fuzz_conn_new(server, role);
    if (!c) abort();
    snprintf(c->peer.name, sizeof c->peer.name, "%s", name);
    snprintf(c->peer.serial_hex, sizeof c->peer.serial_hex, "%s", serial);
    buf b = {0};
    put(&b, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    frame(&b, 4, 0, 0, NULL, 0);   /* SETTINGS */
    vf_rpc_fuzz_feed(c, b.p, b.n);
    free(b.p);
    return c;
}

/* ---- the parties: connected with valid Hellos (as fuzz_aggregator.c) --------- */
static vf_rpc_conn *connect_party(int image) {
    vf_rpc_conn *c = image ? conn_open(VF_ROLE_IMAGE_PARTY, "h1", "75009C6DB8CF6FA4B89DBDCD825EF584")
                           : conn_open(VF_ROLE_KNOWLEDGE_PARTY, "kp", "7A1570053F41A18E000677A34D1AC100");
    Vflclip__V1__Hello h;
    fixture_hello(&h, image);
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_HELLO;
    pm.hello = &h;
    size_t n = vflclip__v1__party_message__get_packed_size(&pm);
    uint8_t *p = malloc(n + 1);
    if (!p) abort();
    vflclip__v1__party_message__pack(&pm, p);
    buf b = {0};
    headers(&b, 1, "/vflclip.v1.Federation/Join");
    data_msg(&b, 1, p, n, 0);
    vf_rpc_fuzz_feed(c, b.p, b.n);
    free(b.p);
    free(p);
    return c;
}

/* ---- the admin --------------------------------------------------------------------- */
static vf_rpc_conn *parties[2], *admin;
static uint32_t next_sid;

static void admin_open(void) {
    admin = conn_open(VF_ROLE_ADMIN, "ops", "5D41402ABC4B2A76B9719D911017C592");
    next_sid = 1;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) { return remove(p); }

static void setup(void) {
    const char *d = getenv("VF_FUZZ_FIXTURES") ? getenv("VF_FUZZ_FIXTURES") : "tests/fuzz/fixtures";
    g_agg.loop = uv_default_loop();
    uv_timer_init(g_agg.loop, &g_agg.run.pause_timer);
    snprintf(g_agg.name, sizeof g_agg.name, "agg.fuzz");
    snprintf(g_agg.state_dir, sizeof g_agg.state_dir, "%s/agg-state", fuzz_dir());
    snprintf(g_agg.audit_path, sizeof g_agg.audit_path, "%s/audit.log", g_agg.state_dir);
    snprintf(g_agg.key_path, sizeof g_agg.key_path, "%s/pki/aggregator-key.pem", d);
    snprintf(g_agg.cert_path, sizeof g_agg.cert_path, "%s/pki/aggregator-cert.pem", d);
    g_agg.me.role = VF_ROLE_AGGREGATOR;
    snprintf(g_agg.me.name, sizeof g_agg.me.name, "agg.fuzz");
    snprintf(g_agg.me.serial_hex, sizeof g_agg.me.serial_hex, "40549C3D52D6C869B0831E37CD4D18F9");
    g_agg.max_parties = 8;
    g_agg.hello_timeout_ms = 10000;
    /* the method table as main.c builds it: Join, then the Admin service */
    static vf_rpc_method methods[1 + 16];
    if (agg_admin_n_methods > 16) abort();
    methods[0] = agg_join_method;
    for (int i = 0; i < agg_admin_n_methods; i++) methods[1 + i] = agg_admin_methods[i];
    server = vf_rpc_fuzz_server_new(methods, 1 + agg_admin_n_methods, 16 << 20);
    g_agg.server = server;
    if (!server) abort();
    if (getenv("VF_FUZZ_VERBOSE")) vf_log_set_level(VF_INFO);   /* the aggregator's log lines */
}

static void begin(void) {
    nftw(g_agg.state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    vf_error err;
    if (vf_mkdirs(g_agg.state_dir, 0700, &err)) abort();
    g_agg.next_task = 0;
    g_agg.refused_full = 0;
    parties[0] = connect_party(0);
    parties[1] = connect_party(1);
    admin_open();
}

/* One record (see the top of the file). */
static void apply(int op, const uint8_t *data, size_t n) {
    if (op & 16) {
        vf_rpc_fuzz_conn_free(admin);
        admin_open();
    }
    if (next_sid > 2001) return;   /* a thousand calls on one connection are enough */
    const vf_rpc_method *m = &agg_admin_methods[(op & 15) % agg_admin_n_methods];
    buf b = {0};
    headers(&b, next_sid, m->path);
    data_msg(&b, next_sid, data, n, !(op & 32));
    next_sid += 2;
    vf_rpc_fuzz_feed(admin, b.p, b.n);
    free(b.p);
}

static void end(void) {
    vf_error err;
    if (getenv("VF_FUZZ_VERBOSE"))
        fprintf(stderr, "run state %s id '%s' message '%s'\n", agg_run_state_name(g_agg.run.state), g_agg.run.id,
                g_agg.run.message);
    vf_rpc_fuzz_conn_free(admin);
    vf_rpc_fuzz_conn_free(parties[0]);
    vf_rpc_fuzz_conn_free(parties[1]);
    if (agg_run_active()) agg_run_abort("fuzz input done", NULL, &err);
    uv_run(g_agg.loop, UV_RUN_NOWAIT);   /* close callbacks: the streams' timers */
}

/* ---- seeds --------------------------------------------------------------------- */
enum { STATUS, LIST_PARTIES, START, ABORT, WATCH, RESULTS, LIST_RUNS, SHOW, CONTINUE };

/* Appends a record (method, request) to the seed and plays it. */
static void put_rec(buf *b, int op, const ProtobufCMessage *req) { put_rec_pb(b, op, req); }
static void start(buf *b, const char *id, const char *config) {
    Vflclip__V1__StartRunRequest q = VFLCLIP__V1__START_RUN_REQUEST__INIT;
    q.run_id = (char *)id;
    q.config = (char *)config;
    put_rec(b, START, &q.base);
}
static void abort_run(buf *b, const char *id, const char *reason) {
    Vflclip__V1__AbortRunRequest q = VFLCLIP__V1__ABORT_RUN_REQUEST__INIT;
    q.run_id = (char *)id;
    q.reason = (char *)reason;
    put_rec(b, ABORT, &q.base);
}
/* WatchRun, GetResults, ShowRun and ContinueRun requests are all { string run_id = 1; } */
static void by_id(buf *b, int op, const char *id) {
    Vflclip__V1__ShowRunRequest q = VFLCLIP__V1__SHOW_RUN_REQUEST__INIT;
    q.run_id = (char *)id;
    put_rec(b, op, &q.base);
}
static void empty(buf *b, int op) {
    Vflclip__V1__StatusRequest q = VFLCLIP__V1__STATUS_REQUEST__INIT;
    put_rec(b, op, &q.base);
}

static const char run_ini[] = "[run]\nepochs = 2\nbatch_size = 2\nchunk_size = 2\ncheckpoint_every = 1\nn_ctx = 2\n";

static void write_seeds(const char *dir) {
    buf b = {0};
    begin();
    /* a run's life as an operator sees it */
    empty(&b, STATUS);
    empty(&b, LIST_PARTIES);
    start(&b, "fz1", run_ini);
    by_id(&b, WATCH, "");
    empty(&b, STATUS);
    by_id(&b, SHOW, "");
    abort_run(&b, "fz1", "operator said so");
    empty(&b, LIST_RUNS);
    by_id(&b, SHOW, "fz1");
    by_id(&b, RESULTS, "fz1");
    by_id(&b, RESULTS, "");
    by_id(&b, CONTINUE, "fz1");
    empty(&b, STATUS);
    abort_run(&b, "", "again");
    seed_file_and_restart(dir, "life", &b);
    /* two runs of the history, a watcher that goes away, a second start refused */
    start(&b, "", run_ini);
    put_rec(&b, WATCH | 16, NULL);
    start(&b, "fz2", run_ini);
    abort_run(&b, "", "x");
    start(&b, "fz2", run_ini);
    by_id(&b, WATCH, "fz2");
    abort_run(&b, "", "y");
    empty(&b, LIST_RUNS);
    seed_file_and_restart(dir, "history", &b);
    /* refusals */
    start(&b, "bad", "[run]\nepochs = ten\n");
    start(&b, "../up", run_ini);
    start(&b, "", "");
    abort_run(&b, "nope", "");
    abort_run(&b, "", "");
    by_id(&b, WATCH, "nope");
    by_id(&b, RESULTS, "../..");
    by_id(&b, RESULTS, "");
    by_id(&b, SHOW, "../x");
    by_id(&b, SHOW, "");
    by_id(&b, SHOW, "missing");
    by_id(&b, CONTINUE, "missing");
    by_id(&b, CONTINUE, "");
    put_rec(&b, START | 32, NULL);
    seed_file_and_restart(dir, "refusals", &b);
    end();
    fprintf(stderr, "fuzz_admin seeds: written to %s\n", dir);
}

