/* fuzz_aggregator: the aggregator's Federation.Join handler with its run
 * state machine, driven by hostile party messages.  The aggregator's own
 * files (every aggregator/ file but main.c) are linked as they are; the gRPC server
 * is the real one without a socket (vf_rpc_fuzz_*: HTTP/2 frames straight
 * into nghttp2), so each message goes through the stream's framing, the
 * PartyMessage unpack, the Hello checks and every peer-limit check
 * (vf_peer_check_hello/chunk/text_ready) into run.c.
 *
 * Each input starts from the same state: a knowledge party "kp" and an
 * image party "h1" connected with valid Hellos (4-dim embeddings; 6/2/2
 * train/val/test examples) and a run started with agg_run_start (2 epochs,
 * batch 2, chunks of 2), which has sent its RunSetup and is waiting.  The
 * input is then a list of records
 *   [op] [len: 2 bytes big-endian] [len bytes]
 * op & 3: 0 the bytes are a PartyMessage from kp, 1 from h1, 2 h1 drops its
 * connection and comes back with a new Hello, 3 the same for kp; op & 4
 * (messages only): the message is unpacked and its task_id set to the task
 * the run waits on from that party before it is sent (so the fuzzer reaches
 * training without guessing task numbers; without the bit the bytes go as
 * they are).  At the end the connections close and a run still going is
 * aborted, which signs its transcript with the fixture aggregator key.
 *
 * When the first record's op has bit 0x80, the run is [run] loss_at =
 * image-parties: h1 keeps its data and the run asks it for secure sums
 * (secure_sum.c).  Then op & 8 (with op & 4, from h1) sets a MaskedShare's
 * sum_id to the sum in flight and pads its values with zeros to the sum's
 * length, so the fuzzer reaches the evaluation's counts (a vector far
 * longer than a record) with words of its choosing in front.
 *
 * Not covered here: the Admin service (admin.c: fuzz_admin), timers (hello timeout,
 * party_timeout_s: the loop never waits), restarts (agg_run_resume_at_start),
 * TLS and the certificate checks (fuzz_rpc_server and the Python tests).
 *
 * VF_FUZZ_WRITE_SEEDS=DIR writes seed inputs (a whole run's answers) and
 * exits; VF_FUZZ_VERBOSE=1 prints the run's state after each input. */
#include "../../aggregator/agg.h"
#include "rpc/rpc_internal.h"
#include "fuzz_parties.h"
#include "fuzz_records.h"
#include "fuzz_util.h"

#include <ftw.h>

agg g_agg;
static vf_rpc_server *server;
static char runs_dir[600];

/* ---- HTTP/2 client frames, by hand ------------------------------------------ */

/* A connection from a party with its Join stream (id 1) open. */
static vf_rpc_conn *party_conn(vf_role role, const char *name, const char *serial) {
    vf_rpc_conn *c = vf_rpc_fuzz_conn_new(server, role);
    if (!c) abort();
    snprintf(c->peer.name, sizeof c->peer.name, "%s", name);
    snprintf(c->peer.serial_hex, sizeof c->peer.serial_hex, "%s", serial);
    buf b = {0}, h = {0};
    put(&b, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    frame(&b, 4, 0, 0, NULL, 0);   /* SETTINGS */
    hpack_literal(&h, ":method", "POST");
    hpack_literal(&h, ":scheme", "https");
    hpack_literal(&h, ":path", "/vflclip.v1.Federation/Join");
    hpack_literal(&h, ":authority", "agg.fuzz");
    hpack_literal(&h, "content-type", "application/grpc");
    hpack_literal(&h, "te", "trailers");
    frame(&b, 1, 4, 1, h.p, h.n);   /* HEADERS, END_HEADERS */
    vf_rpc_fuzz_feed(c, b.p, b.n);
    free(b.p);
    free(h.p);
    return c;
}

/* One gRPC message on stream 1 (DATA frames of at most 16 KiB). */
static void send_msg(vf_rpc_conn *c, const uint8_t *msg, size_t n) {
    buf m = {0}, b = {0};
    uint8_t pre[5] = {0, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    put(&m, pre, 5);
    put(&m, msg, n);
    for (size_t off = 0; off < m.n; off += 16384) frame(&b, 0, 0, 1, m.p + off, m.n - off < 16384 ? m.n - off : 16384);
    vf_rpc_fuzz_feed(c, b.p, b.n);
    free(m.p);
    free(b.p);
}

static void send_pm(vf_rpc_conn *c, const Vflclip__V1__PartyMessage *pm) {
    size_t n = vflclip__v1__party_message__get_packed_size(pm);
    uint8_t *p = malloc(n + 1);
    if (!p) abort();
    vflclip__v1__party_message__pack(pm, p);
    send_msg(c, p, n);
    free(p);
}

static void hello(vf_rpc_conn *c, int image) {
    Vflclip__V1__Hello h;
    fixture_hello(&h, image);
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_HELLO;
    pm.hello = &h;
    send_pm(c, &pm);
}

static vf_rpc_conn *connect_party(int image) {
    vf_rpc_conn *c = image ? party_conn(VF_ROLE_IMAGE_PARTY, "h1", "75009C6DB8CF6FA4B89DBDCD825EF584")
                           : party_conn(VF_ROLE_KNOWLEDGE_PARTY, "kp", "7A1570053F41A18E000677A34D1AC100");
    hello(c, image);
    return c;
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
    snprintf(runs_dir, sizeof runs_dir, "%s/runs", g_agg.state_dir);
    g_agg.me.role = VF_ROLE_AGGREGATOR;
    snprintf(g_agg.me.name, sizeof g_agg.me.name, "agg.fuzz");
    snprintf(g_agg.me.serial_hex, sizeof g_agg.me.serial_hex, "40549C3D52D6C869B0831E37CD4D18F9");
    g_agg.max_parties = 8;
    g_agg.hello_timeout_ms = 10000;
    vf_rpc_method m = agg_join_method;
    server = vf_rpc_fuzz_server_new(&m, 1, 16 << 20);
    g_agg.server = server;
    if (!server) abort();
}

static const char run_ini[] = "[run]\nepochs = 2\nbatch_size = 2\nchunk_size = 2\ncheckpoint_every = 1\nn_ctx = 2\n";
static const char run_ini_secure[] =
    "[run]\nepochs = 2\nbatch_size = 2\nchunk_size = 2\ncheckpoint_every = 1\nn_ctx = 2\nloss_at = image-parties\n";

/* The task the run waits on from this party (0: none). */
static uint64_t waited_task(int image) {
    agg_run *r = &g_agg.run;
    if (!image) return r->task;
    return r->n_img > 0 ? r->img[0].task : 0;
}

static vf_rpc_conn *conns[2];

/* The fixed starting state: both parties connected, the run started. */
static void begin(void) {
    nftw(g_agg.state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    g_agg.next_task = 0;
    g_agg.refused_full = 0;
    conns[0] = connect_party(0);
    conns[1] = connect_party(1);
    char id[64];
    int status;
    vf_error err;
    if (agg_run_start(records_first_op & 0x80 ? run_ini_secure : run_ini, "fuzz", NULL, id, sizeof id, &status, &err)) {
        fprintf(stderr, "fuzz_aggregator: the run does not start: %s\n", err.msg);
        abort();
    }
}

/* One record (see the top of the file). */
static void apply(int op, const uint8_t *data, size_t n) {
    int who = op & 1;
    if (op & 2) {
        vf_rpc_fuzz_conn_free(conns[who]);
        conns[who] = connect_party(who);
    } else if (op & 4) {
        Vflclip__V1__PartyMessage *pm = vflclip__v1__party_message__unpack(NULL, n, data);
        if (pm) {
            pm->task_id = waited_task(who);
            uint64_t *saved = NULL, *padded = NULL;
            size_t saved_n = 0;
            agg_sum *s = &g_agg.run.sum;
            if ((op & 8) && pm->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_MASKED_SHARE && s->active) {
                Vflclip__V1__MaskedShare *ms = pm->masked_share;
                ms->sum_id = s->sum_id;
                if (ms->n_values < s->len && (padded = calloc(s->len, sizeof *padded))) {
                    if (ms->n_values) memcpy(padded, ms->values, ms->n_values * sizeof *padded);
                    saved = ms->values, saved_n = ms->n_values;
                    ms->values = padded, ms->n_values = s->len;
                }
            }
            send_pm(conns[who], pm);
            if (padded) pm->masked_share->values = saved, pm->masked_share->n_values = saved_n;
            free(padded);
            vflclip__v1__party_message__free_unpacked(pm, NULL);
        }
    } else {
        send_msg(conns[who], data, n);
    }
}

static void end(void) {
    vf_error err;
    if (getenv("VF_FUZZ_VERBOSE"))
        fprintf(stderr, "run state %s step %llu message '%s'\n", agg_run_state_name(g_agg.run.state),
                (unsigned long long)g_agg.run.task, g_agg.run.message);
    vf_rpc_fuzz_conn_free(conns[0]);
    vf_rpc_fuzz_conn_free(conns[1]);
    if (agg_run_active()) agg_run_abort("fuzz input done", NULL, &err);
    uv_run(g_agg.loop, UV_RUN_NOWAIT);   /* close callbacks: Join streams' timers */
}

/* ---- seeds --------------------------------------------------------------------- */
/* Appends a record to the seed and plays it, so the next answer can follow
 * what the run then waits for. */
static void put_rec(buf *b, int op, const Vflclip__V1__PartyMessage *pm) { put_rec_pb(b, op, pm ? &pm->base : NULL); }
static void text_ready(buf *b) {
    char *names[3] = {"nevus", "melanoma", "keratosis"};
    Vflclip__V1__TextReady tr = VFLCLIP__V1__TEXT_READY__INIT;
    tr.n_classes = 3, tr.dim = 4, tr.ctx_rows = 2, tr.ctx_width = 8, tr.n_class_names = 3, tr.class_names = names;
    tr.model_fingerprint = "fuzzmodel", tr.template_ = "a photo of a {class}.", tr.n_ctx = 2;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_READY;
    pm.text_ready = &tr;
    put_rec(b, 4, &pm);
}
static void text_features(buf *b, uint64_t step, float bias) {
    float d[12];
    uint32_t shape[2] = {3, 4};
    for (int i = 0; i < 12; i++) d[i] = (float)((i * 7) % 5) - 2 + bias;
    Vflclip__V1__Tensor t = VFLCLIP__V1__TENSOR__INIT;
    t.n_shape = 2, t.shape = shape, t.n_data = 12, t.data = d;
    Vflclip__V1__TextFeatures tf = VFLCLIP__V1__TEXT_FEATURES__INIT;
    tf.step = step, tf.features = &t, tf.logit_scale = 4.6f;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_FEATURES;
    pm.text_features = &tf;
    put_rec(b, 4, &pm);
}
static void ack(buf *b) {
    Vflclip__V1__Ack a = VFLCLIP__V1__ACK__INIT;
    a.detail = "saved";
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_ACK;
    pm.ack = &a;
    put_rec(b, 4, &pm);
}
static void chunks(buf *b, const char *split, uint32_t n) {
    for (uint32_t off = 0; off < n; off += 2) {
        float d[8];
        int32_t labels[2] = {(int32_t)(off % 3), (int32_t)((off + 1) % 3)};
        char *ids[2] = {"img0", "img1"};
        for (int i = 0; i < 8; i++) d[i] = (float)((off + (uint32_t)i) % 3) - 1;
        Vflclip__V1__EmbeddingsChunk ch = VFLCLIP__V1__EMBEDDINGS_CHUNK__INIT;
        ch.split = (char *)split, ch.offset = off, ch.count = 2, ch.dim = 4, ch.n_data = 8, ch.data = d;
        ch.n_labels = 2, ch.labels = labels, ch.n_ids = 2, ch.ids = ids, ch.last = off + 2 >= n, ch.total = n;
        Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
        pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_EMBEDDINGS;
        pm.embeddings = &ch;
        put_rec(b, 5, &pm);
    }
}
static void context_file(buf *b) {
    Vflclip__V1__ContextFile cf = VFLCLIP__V1__CONTEXT_FILE__INIT;
    cf.data.data = (uint8_t *)"not really a context";
    cf.data.len = 20;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_CONTEXT_FILE;
    pm.context_file = &cf;
    put_rec(b, 4, &pm);
}

static void write_secure_seeds(const char *dir);

/* Answers what the run waits for until it ends (or max_answers), saving the
 * records so far as a seed at each milestone. */
static void write_seeds(const char *dir) {
    static const char *const split_names[3] = {"train", "val", "test"};
    buf b = {0};
    agg_run *r = &g_agg.run;
    int step = 0, reconnected = 0;
    begin();
    for (int i = 0; i < 400 && agg_run_active(); i++) {
        switch (r->wait) {
        case WAIT_SETUP:
            text_ready(&b);
            text_features(&b, 0, 0);
            seed_file(dir, "setup", &b);
            break;
        case WAIT_STEP:
        case WAIT_RESTORE_BEST:
            if (step == 3 && !reconnected) {   /* both parties drop and come back mid-training */
                seed_file(dir, "training", &b);
                reconnected = 1;
                put_rec(&b, 2, NULL);
                put_rec(&b, 3, NULL);
                break;
            }
            step++;
            text_features(&b, (uint64_t)step, 0.05f * (float)step);
            break;
        case WAIT_SAVE:
        case WAIT_BEST: ack(&b); break;
        case WAIT_EXPORT:
            context_file(&b);
            seed_file(dir, "whole-run", &b);
            break;
        default:
            if (r->state == RUN_ENCODING && r->img[0].task && r->img[0].split < 3) {
                chunks(&b, split_names[r->img[0].split], (uint32_t)r->img[0].n[r->img[0].split]);
                if (r->img[0].split >= 3) seed_file(dir, "encoded", &b);
            } else {
                fprintf(stderr, "fuzz_aggregator seeds: stuck in state %s: %s\n", agg_run_state_name(r->state), r->message);
                i = 400;
            }
        }
    }
    fprintf(stderr, "fuzz_aggregator seeds: run %s after %d steps: %s\n", agg_run_state_name(r->state), step, r->message);
    end();
    free(b.p);
    write_secure_seeds(dir);
}

/* h1's share of the secure sum in flight: a loss of 1 in front, zeros after
 * (op 13: from h1, task and sum id set, padded to the sum's length). */
static void masked_share(buf *b) {
    uint64_t v[1] = {(uint64_t)1 << 40};
    Vflclip__V1__MaskedShare ms = VFLCLIP__V1__MASKED_SHARE__INIT;
    ms.n_values = 1, ms.values = v;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_MASKED_SHARE;
    pm.masked_share = &ms;
    put_rec(b, 13, &pm);
}

/* A run with loss_at = image-parties through its first steps, up to its
 * first evaluation (whose counts a record's zeros cannot make valid). */
static void write_secure_seeds(const char *dir) {
    buf b = {0};
    agg_run *r = &g_agg.run;
    int sums = 0;
    records_first_op = 0x80;
    begin();
    put_rec(&b, 0x80, NULL);   /* the marker record: an empty message from kp, ignored */
    for (int i = 0; i < 100 && agg_run_active(); i++) {
        if (r->wait == WAIT_SETUP) {
            text_ready(&b);
            text_features(&b, 0, 0);
            seed_file(dir, "secure-setup", &b);
        } else if (r->wait == WAIT_SUM) {
            if (r->sum.kind != VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_STEP) break;
            masked_share(&b);
            if (++sums == 2) seed_file(dir, "secure-steps", &b);
        } else if (r->wait == WAIT_STEP) {
            text_features(&b, (uint64_t)sums, 0.05f * (float)sums);
        } else if (r->wait == WAIT_SAVE || r->wait == WAIT_BEST) {
            ack(&b);
        } else {
            break;
        }
    }
    seed_file(dir, "secure-to-evaluation", &b);
    fprintf(stderr, "fuzz_aggregator seeds: secure run %s after %d sums: %s\n", agg_run_state_name(r->state), sums, r->message);
    end();
    records_first_op = 0;
    free(b.p);
}

