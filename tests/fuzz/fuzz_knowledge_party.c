/* fuzz_knowledge_party: the knowledge party's AggregatorMessage handler
 * (knowledge-party/main.c: on_message -> on_run_setup, on_text_backward,
 * on_checkpoint SAVE / MARK_BEST / RESTORE_BEST / EXPORT, Shutdown, and the
 * refusals), with the daemon's state set up as its main() sets it up.
 *
 * The daemon's main.c is compiled into this target as it is (#include below,
 * its main() renamed), so its static handlers are reachable without touching
 * the daemon; kp_checkpoint.c is linked (FUZZ_EXTRA_knowledge_party in the
 * Makefile).  The network side is a fake: the macros below rename the
 * party-link calls main.c makes (vf_party_link_send, _queued, _start, _stop)
 * to this file's fakes, which record the messages the party sends (packed,
 * then unpacked again: what would go on the wire must decode).  Renaming,
 * rather than defining vf_party_link_* here, keeps the link simple: the
 * fuzz library's party_link.o (pulled in by daemon_setup.o for
 * vf_identity_from_file) is linked too, and its symbols never clash with
 * ours.
 *
 * At start-up (once per process): a tiny random-weight CLIP model with its
 * tiny tokenizer (vf_make_model "tiny") in the private temporary directory,
 * and the daemon's own load_text_side() reading an INI (the seven
 * DermaMNIST class names, the default template, a state directory there).
 *
 * The input is a list of records
 *   [op] [len: 2 bytes big-endian] [len bytes]
 * op & 1 == 0: the bytes are an AggregatorMessage, unpacked with protobuf-c
 * and handed to on_message as the link hands it over (undecodable bytes are
 * dropped, as the link cancels the stream); op & 1: the link goes down
 * (on_down).  Each input starts with no run and an empty state/runs
 * directory; at its end the run is freed (kp_free_run, as at Shutdown).
 *
 * VF_FUZZ_WRITE_SEEDS=DIR writes seed inputs and exits; VF_FUZZ_VERBOSE=1
 * prints each message the party sends. */
#include "fuzz_records.h"
#include "fuzz_util.h"

#define vf_party_link_send fuzz_link_send
#define vf_party_link_queued fuzz_link_queued
#define vf_party_link_start fuzz_link_start
#define vf_party_link_stop fuzz_link_stop
#define main vf_kp_main_unused
#include "../../knowledge-party/main.c"
#undef main

#include "clip/make_model.h"

#include <ftw.h>
#include <uv.h>

/* ---- the fake party link -------------------------------------------------------- */
static size_t n_sent, n_errors;
int fuzz_link_send(vf_party_link *l, const Vflclip__V1__PartyMessage *m, vf_error *err) {
    size_t n = vflclip__v1__party_message__get_packed_size(m);
    uint8_t *p = malloc(n + 1);
    if (!p) abort();
    vflclip__v1__party_message__pack(m, p);
    Vflclip__V1__PartyMessage *back = vflclip__v1__party_message__unpack(NULL, n, p);
    if (!back) abort();   /* the party sent something that does not decode */
    if (back->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR) n_errors++;
    if (getenv("VF_FUZZ_VERBOSE"))
        fprintf(stderr, "kp sends task %llu body %d (%zu bytes)%s%s\n", (unsigned long long)back->task_id, (int)back->body_case,
                n, back->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR ? ": " : "",
                back->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR ? back->error->message : "");
    vflclip__v1__party_message__free_unpacked(back, NULL);
    free(p);
    n_sent++;
    return 0;
}
size_t fuzz_link_queued(const vf_party_link *l) { return 0; }
int fuzz_link_start(uv_loop_t *loop, const vf_party_link_config *cfg, const vf_party_link_handlers *h, vf_party_link **out,
                    vf_error *err) {
    return vf_fail(err, "fuzz: no link");
}
void fuzz_link_stop(vf_party_link *l) {}

/* ---- set-up ----------------------------------------------------------------------- */
static char state_runs[700];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) { return remove(p); }

static void setup(void) {
    vf_error err;
    char model_dir[600], state[600], text[2000];
    snprintf(model_dir, sizeof model_dir, "%s/model", fuzz_dir());
    snprintf(state, sizeof state, "%s/kp-state", fuzz_dir());
    snprintf(state_runs, sizeof state_runs, "%s/runs", state);
    if (vf_make_model("tiny", 7, VF_DT_F32, model_dir, 0, &err)) {
        fprintf(stderr, "fuzz_knowledge_party: make model: %s\n", err.msg);
        abort();
    }
    if (vf_mkdirs(state, 0700, &err)) abort();
    snprintf(text, sizeof text, "[aggregator]\nhost = agg.fuzz\n[model]\ndir = %s\n[state]\ndir = %s\n", model_dir, state);
    static vf_daemon d;   /* what load_text_side reads: the INI and the state directory */
    if (vf_ini_load_string(&d.ini, text, "<fuzz kp.ini>", fuzz_dir(), schema, &err)) {
        fprintf(stderr, "fuzz_knowledge_party: ini: %s\n", err.msg);
        abort();
    }
    snprintf(d.paths.state, sizeof d.paths.state, "%s", state);
    char model[4096], tok_source[4200];
    if (load_text_side(&d, model, tok_source, &err)) {
        fprintf(stderr, "fuzz_knowledge_party: load_text_side: %s\n", err.msg);
        abort();
    }
    vf_log_set_level(getenv("VF_FUZZ_VERBOSE") ? VF_INFO : VF_ERROR + 1);   /* the daemon's log lines with VF_FUZZ_VERBOSE */
}

static void begin(void) {
    nftw(state_runs, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    n_sent = n_errors = 0;
}

static void apply(int op, const uint8_t *data, size_t n) {
    if (op & 1) {
        on_down(NULL, "fuzz: link down", NULL);
        return;
    }
    Vflclip__V1__AggregatorMessage *m = vflclip__v1__aggregator_message__unpack(NULL, n, data);
    if (!m) return;
    on_message(NULL, m, NULL);
    vflclip__v1__aggregator_message__free_unpacked(m, NULL);
}

static void end(void) {
    if (getenv("VF_FUZZ_VERBOSE")) fprintf(stderr, "kp sent %zu messages, %zu errors\n", n_sent, n_errors);
    kp_free_run(&g_kp);
}

/* ---- seeds ------------------------------------------------------------------------- */
static uint64_t seed_task;
/* Appends a record and plays it. */
static void put_rec(buf *b, int op, Vflclip__V1__AggregatorMessage *m) {
    if (m) m->task_id = ++seed_task;
    put_rec_pb(b, op, m ? &m->base : NULL);
}
static void run_setup(buf *b, const char *id, uint64_t resume, const char *optimizer, int csc, const char *pos) {
    Vflclip__V1__RunSetup rs = VFLCLIP__V1__RUN_SETUP__INIT;
    rs.run_id = (char *)id;
    rs.n_ctx = 2;
    rs.csc = csc;
    rs.class_pos = (char *)pos;
    rs.optimizer = (char *)optimizer;
    rs.seed = 3;
    rs.resume_step = resume;
    rs.momentum = 0.9f;
    Vflclip__V1__AggregatorMessage m = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    m.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_RUN_SETUP;
    m.run_setup = &rs;
    put_rec(b, 0, &m);
}
static void text_backward(buf *b, uint64_t step, int rows, int cols, float lr) {
    float *d = calloc((size_t)(rows * cols) + 1, sizeof *d);
    uint32_t shape[2] = {(uint32_t)rows, (uint32_t)cols};
    for (int i = 0; i < rows * cols; i++) d[i] = 0.01f * (float)((i * 7) % 11 - 5);
    Vflclip__V1__Tensor t = VFLCLIP__V1__TENSOR__INIT;
    t.n_shape = 2, t.shape = shape, t.n_data = (size_t)(rows * cols), t.data = d;
    Vflclip__V1__TextBackward tb = VFLCLIP__V1__TEXT_BACKWARD__INIT;
    tb.step = step, tb.grad_text_features = &t, tb.learning_rate = lr;
    Vflclip__V1__AggregatorMessage m = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    m.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_TEXT_BACKWARD;
    m.text_backward = &tb;
    put_rec(b, 0, &m);
    free(d);
}
static void checkpoint(buf *b, Vflclip__V1__CheckpointAction action, uint64_t step, int epoch, double auc) {
    Vflclip__V1__Checkpoint ck = VFLCLIP__V1__CHECKPOINT__INIT;
    ck.action = action, ck.step = step, ck.epoch = (uint32_t)epoch, ck.val_auc = auc;
    Vflclip__V1__AggregatorMessage m = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    m.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_CHECKPOINT;
    m.checkpoint = &ck;
    put_rec(b, 0, &m);
}
static void shutdown_msg(buf *b) {
    Vflclip__V1__Shutdown s = VFLCLIP__V1__SHUTDOWN__INIT;
    s.reason = "run done";
    Vflclip__V1__AggregatorMessage m = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    m.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_SHUTDOWN;
    m.shutdown = &s;
    put_rec(b, 0, &m);
}
static void welcome(buf *b) {
    Vflclip__V1__Welcome w = VFLCLIP__V1__WELCOME__INIT;
    w.aggregator_name = "agg.fuzz";
    Vflclip__V1__AggregatorMessage m = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    m.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME;
    m.welcome = &w;
    put_rec(b, 0, &m);
}
static void encode_split(buf *b) {   /* an image party's task: refused here */
    Vflclip__V1__EncodeSplit es = VFLCLIP__V1__ENCODE_SPLIT__INIT;
    es.split = "train";
    es.chunk_size = 4;
    Vflclip__V1__AggregatorMessage m = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    m.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_ENCODE_SPLIT;
    m.encode_split = &es;
    put_rec(b, 0, &m);
}

static void write_seeds(const char *dir) {
    const int C = g_kp.n_classes;
    buf b = {0};
    begin();
    /* a whole run: set-up, steps, save, best, restore, export, shutdown */
    welcome(&b);
    run_setup(&b, "fuzzrun", 0, "adam", 0, "end");
    const int D = vf_coop_feature_dim(g_kp.coop);
    text_backward(&b, 0, C, D, 0.002f);
    text_backward(&b, 1, C, D, 0.002f);
    checkpoint(&b, VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_SAVE, 2, 1, 0);
    checkpoint(&b, VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_MARK_BEST, 2, 1, 0.75);
    text_backward(&b, 2, C, D, 0.002f);
    checkpoint(&b, VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_RESTORE_BEST, 3, 0, 0);
    checkpoint(&b, VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_EXPORT, 3, 0, 0);
    shutdown_msg(&b);
    seed_file_and_restart(dir, "whole-run", &b);
    /* resume from a saved step (the aggregator's RunSetup after a restart) */
    run_setup(&b, "fuzzrun", 0, "sgd", 1, "middle");
    text_backward(&b, 0, C, D, 0.01f);
    checkpoint(&b, VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_SAVE, 1, 0, 0);
    put_rec(&b, 1, NULL);   /* link down */
    run_setup(&b, "fuzzrun", 1, "sgd", 1, "middle");
    text_backward(&b, 1, C, D, 0.01f);
    run_setup(&b, "fuzzrun", 7, "sgd", 1, "middle");   /* no such checkpoint */
    seed_file_and_restart(dir, "resume", &b);
    /* wrong shapes, bad numbers, tasks before set-up, tasks of another party */
    text_backward(&b, 0, C, D, 0.002f);   /* no run yet */
    encode_split(&b);
    run_setup(&b, "../escape", 0, "adam", 0, "end");
    run_setup(&b, "r2", 0, "nesterov", 0, "end");
    run_setup(&b, "r2", 0, "adam", 0, "front");
    text_backward(&b, 0, C, D + 1, 0.002f);
    text_backward(&b, 0, D, C, 0.002f);
    text_backward(&b, 0, C, D, -1.0f);
    text_backward(&b, 0, C, D, NAN);
    checkpoint(&b, (Vflclip__V1__CheckpointAction)99, 0, 0, 0);
    checkpoint(&b, VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_EXPORT, 0, 0, 0);
    seed_file_and_restart(dir, "refusals", &b);
    fprintf(stderr, "fuzz_knowledge_party seeds: written to %s\n", dir);
}

