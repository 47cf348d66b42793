/* fuzz_image_party: the image party's AggregatorMessage handler
 * (image-party/main.c: on_message -> on_encode and the chunk pump,
 * on_classifier, Shutdown, the refusals), with the daemon's state set up as
 * its main() sets it up.
 *
 * The daemon's main.c is compiled into this target as it is (#include below,
 * its main() renamed), so its static handlers are reachable without touching
 * the daemon.  The network side is a fake: the macros below rename the
 * party-link calls main.c makes (vf_party_link_send, _queued, _start, _stop)
 * to this file's fakes, which pack every message the party sends and decode
 * it again, count the bytes "queued" (pump() stops at 1 MiB queued until a
 * drain), and fail while the fake link is down, as the real link does with
 * no stream.  Renaming, rather than defining vf_party_link_* here, keeps
 * the link simple: the fuzz library's party_link.o (pulled in by
 * daemon_setup.o) is linked too, and its symbols never clash with ours.
 *
 * At start-up (once per process): a tiny random-weight CLIP model
 * (vf_make_model "tiny") in the private temporary directory, the fixture
 * data set tests/fuzz/fixtures/image-party.npz (6/2/2 images, written by
 * make_corpus.py), and the daemon's own load_privacy(), load_embeddings()
 * and start_encoding() reading an INI (CPU, embedding cache on, embedding
 * clipping and noise on with a fixed seed); the loop runs until the worker
 * has encoded every split, so the party is ready as after a real start.
 *
 * The input is a list of records
 *   [op] [len: 2 bytes big-endian] [len bytes]
 * op % 7: 0 the bytes are an AggregatorMessage, unpacked with protobuf-c and
 * handed to on_message as the link hands it over (undecodable bytes are
 * dropped, as the link cancels the stream); 6 the same, but a SecureSumTask
 * in it gets this party's own name and mask key among its participants and
 * the next sum id (so the fuzzer reaches the share's computation and
 * masking without guessing a random key; the party's certificate is the
 * fixture aggregator's, under the fixture CA); 1 the queue drains (on_drain);
 * 2 the link goes down (on_down; sends fail); 3 it comes back; 4 the party
 * is "still encoding" (ready = 0: an EncodeSplit is deferred); 5 the
 * encoding "finishes" (what encode_done does then: ready = 1 and the
 * deferred EncodeSplit is answered).  Each input starts ready, link up,
 * nothing queued or streaming, no received classifier.
 *
 * VF_FUZZ_WRITE_SEEDS=DIR writes seed inputs and exits; VF_FUZZ_VERBOSE=1
 * prints each message the party sends. */
#include "fuzz_records.h"
#include "fuzz_util.h"

#define vf_party_link_send fuzz_link_send
#define vf_party_link_queued fuzz_link_queued
#define vf_party_link_start fuzz_link_start
#define vf_party_link_stop fuzz_link_stop
#define main vf_ip_main_unused
#include "../../image-party/main.c"
#undef main

#include "clip/make_model.h"

#include <ftw.h>

/* ---- the fake party link -------------------------------------------------------- */
static size_t queued, n_sent, n_errors;
static int link_up;
int fuzz_link_send(vf_party_link *l, const Vflclip__V1__PartyMessage *m, vf_error *err) {
    if (!link_up) return vf_fail(err, "fuzz: no stream to the aggregator");
    size_t n = vflclip__v1__party_message__get_packed_size(m);
    uint8_t *p = malloc(n + 1);
    if (!p) abort();
    vflclip__v1__party_message__pack(m, p);
    Vflclip__V1__PartyMessage *back = vflclip__v1__party_message__unpack(NULL, n, p);
    if (!back) abort();   /* the party sent something that does not decode */
    if (back->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR) n_errors++;
    if (getenv("VF_FUZZ_VERBOSE")) {
        fprintf(stderr, "image party sends task %llu body %d (%zu bytes)", (unsigned long long)back->task_id,
                (int)back->body_case, n);
        if (back->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR) fprintf(stderr, ": %s", back->error->message);
        if (back->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_EMBEDDINGS)
            fprintf(stderr, ": %s offset %llu count %u last %d", back->embeddings->split,
                    (unsigned long long)back->embeddings->offset, back->embeddings->count, back->embeddings->last);
        fprintf(stderr, "\n");
    }
    vflclip__v1__party_message__free_unpacked(back, NULL);
    free(p);
    queued += n;
    n_sent++;
    return 0;
}
size_t fuzz_link_queued(const vf_party_link *l) { return queued; }
int fuzz_link_start(uv_loop_t *loop, const vf_party_link_config *cfg, const vf_party_link_handlers *h, vf_party_link **out,
                    vf_error *err) {
    return vf_fail(err, "fuzz: no link");
}
void fuzz_link_stop(vf_party_link *l) { link_up = 0; }

/* ---- set-up ----------------------------------------------------------------------- */
static char classifiers_dir[700];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) { return remove(p); }

static char self_name[128];
static ProtobufCBinaryData self_pub;
static uint64_t sum_id;

static void setup(void) {
    vf_error err;
    const char *fx = getenv("VF_FUZZ_FIXTURES") ? getenv("VF_FUZZ_FIXTURES") : "tests/fuzz/fixtures";
    char model_dir[600], state[600], data[700], text[3000];
    snprintf(model_dir, sizeof model_dir, "%s/model", fuzz_dir());
    snprintf(state, sizeof state, "%s/ip-state", fuzz_dir());
    snprintf(classifiers_dir, sizeof classifiers_dir, "%s/classifiers", state);
    if (!realpath(fx, data)) {
        fprintf(stderr, "fuzz_image_party: no fixtures at %s (run from the repository root or set VF_FUZZ_FIXTURES)\n", fx);
        abort();
    }
    strncat(data, "/image-party.npz", sizeof data - strlen(data) - 1);
    if (vf_make_model("tiny", 7, VF_DT_F32, model_dir, 0, &err)) {
        fprintf(stderr, "fuzz_image_party: make model: %s\n", err.msg);
        abort();
    }
    if (vf_mkdirs(state, 0700, &err)) abort();
    snprintf(text, sizeof text,
             "[aggregator]\nhost = agg.fuzz\n[model]\ndir = %s\n[data]\npath = %s\n[encode]\ndevice = cpu\nbatch = 4\n"
             "[privacy]\nembed_clip = 1.5\nembed_noise = 0.5\nseed = 11\n[state]\ndir = %s\n",
             model_dir, data, state);
    static vf_ini ini;
    if (vf_ini_load_string(&ini, text, "<fuzz image-party.ini>", fuzz_dir(), schema, &err)) {
        fprintf(stderr, "fuzz_image_party: ini: %s\n", err.msg);
        abort();
    }
    snprintf(g_state_dir, sizeof g_state_dir, "%s", state);
    uv_loop_t *loop = uv_default_loop();
    if (load_privacy(&ini, state, &err) || load_embeddings(&ini, state, &err) || start_encoding(loop, &err)) {
        fprintf(stderr, "fuzz_image_party: set-up: %s\n", err.msg);
        abort();
    }
    /* secure sums: the fixture aggregator's certificate stands in for this party's */
    char cert[700], key[700], ca[700];
    snprintf(cert, sizeof cert, "%s/pki/aggregator-cert.pem", fx);
    snprintf(key, sizeof key, "%s/pki/aggregator-key.pem", fx);
    snprintf(ca, sizeof ca, "%s/pki/ca.crt", fx);
    Vflclip__V1__Hello h = VFLCLIP__V1__HELLO__INIT;
    mbedtls_x509_crt own;
    mbedtls_x509_crt_init(&own);
    vf_peer_identity id;
    if (ip_secure_open(cert, key, ca, &err) || ip_secure_hello(&h, &err) || mbedtls_x509_crt_parse_file(&own, cert) ||
        vf_pki_identity_from_crt(&own, &id, &err)) {
        fprintf(stderr, "fuzz_image_party: secure-sum set-up: %s\n", err.msg);
        abort();
    }
    mbedtls_x509_crt_free(&own);
    snprintf(self_name, sizeof self_name, "%s", id.name);
    self_pub = h.mask_public_key;   /* points into the party's key, which lives as long as the process */
    uv_run(loop, UV_RUN_DEFAULT);   /* until encode_done has closed the progress timer */
    if (!g_p.ready) {
        fprintf(stderr, "fuzz_image_party: the encoding failed: %s\n", g_p.enc_err.msg);
        abort();
    }
    vf_log_set_level(getenv("VF_FUZZ_VERBOSE") ? VF_INFO : VF_ERROR + 1);   /* the daemon's log lines with VF_FUZZ_VERBOSE */
}

static void begin(void) {
    nftw(classifiers_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    queued = n_sent = n_errors = 0;
    link_up = 1;
    g_p.ready = 1;
    g_p.streaming = 0;
    g_p.have_pending = 0;
}

static void apply(int op, const uint8_t *data, size_t n) {
    switch (op % 7) {
    case 6: {
        Vflclip__V1__AggregatorMessage *m = vflclip__v1__aggregator_message__unpack(NULL, n, data);
        if (!m) return;
        if (m->body_case != VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_SECURE_SUM) {
            on_message(NULL, m, NULL);
        } else {   /* a copy with this party in it; the unpacked message keeps its own pointers */
            Vflclip__V1__SecureSumTask st = *m->secure_sum;
            Vflclip__V1__AggregatorMessage am = *m;
            Vflclip__V1__MaskPeer self = VFLCLIP__V1__MASK_PEER__INIT, *list[65];
            size_t k = 0;
            self.name = self_name;
            self.public_key = self_pub;
            list[k++] = &self;
            for (size_t i = 0; i < st.n_participants && k < 65; i++)
                if (strcmp(st.participants[i]->name, self_name)) list[k++] = st.participants[i];
            st.participants = list;
            st.n_participants = k;
            st.sum_id = ++sum_id;
            am.secure_sum = &st;
            on_message(NULL, &am, NULL);
        }
        vflclip__v1__aggregator_message__free_unpacked(m, NULL);
        return;
    }
    case 0: {
        Vflclip__V1__AggregatorMessage *m = vflclip__v1__aggregator_message__unpack(NULL, n, data);
        if (!m) return;
        on_message(NULL, m, NULL);
        vflclip__v1__aggregator_message__free_unpacked(m, NULL);
        return;
    }
    case 1: queued = 0; on_drain(NULL, NULL); return;
    case 2: link_up = 0; on_down(NULL, "fuzz: link down", NULL); return;
    case 3: link_up = 1; return;
    case 4: g_p.ready = 0; return;
    case 5:   /* encode_done's end, the tower already freed */
        if (g_p.ready) return;
        g_p.ready = 1;
        if (g_p.have_pending) {
            g_p.have_pending = 0;
            on_encode(g_p.pending_task, &g_p.pending);
        }
        return;
    }
}

static void end(void) {
    if (getenv("VF_FUZZ_VERBOSE")) fprintf(stderr, "image party sent %zu messages, %zu errors\n", n_sent, n_errors);
    g_p.streaming = 0;
    g_p.have_pending = 0;
}

/* ---- seeds ------------------------------------------------------------------------- */
static uint64_t seed_task;
static void put_rec(buf *b, int op, Vflclip__V1__AggregatorMessage *m) {
    if (m) m->task_id = ++seed_task;
    put_rec_pb(b, op, m ? &m->base : NULL);
}
static void encode(buf *b, const char *split, uint32_t chunk, uint32_t view) {
    Vflclip__V1__EncodeSplit es = VFLCLIP__V1__ENCODE_SPLIT__INIT;
    es.split = (char *)split;
    es.chunk_size = chunk;
    es.view = view;
    Vflclip__V1__AggregatorMessage m = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    m.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_ENCODE_SPLIT;
    m.encode_split = &es;
    put_rec(b, 0, &m);
}
static void classifier(buf *b, const char *run_id, const uint8_t *data, size_t len) {
    Vflclip__V1__ClassifierFile cf = VFLCLIP__V1__CLASSIFIER_FILE__INIT;
    cf.run_id = (char *)run_id;
    cf.data.data = (uint8_t *)data;
    cf.data.len = len;
    Vflclip__V1__AggregatorMessage m = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    m.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_CLASSIFIER_FILE;
    m.classifier_file = &cf;
    put_rec(b, 0, &m);
}
static void other(buf *b) {   /* a knowledge party's task: refused here */
    Vflclip__V1__Checkpoint ck = VFLCLIP__V1__CHECKPOINT__INIT;
    ck.action = VFLCLIP__V1__CHECKPOINT_ACTION__CHECKPOINT_SAVE;
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

/* A classifier for this party (its fingerprints and width), as a finished run shares it. */
static uint8_t *make_classifier(const char *run_id, int D, const char *model_fp, size_t *len) {
    static const char *const names[3] = {"nevus", "melanoma", "keratosis"};
    float text[3 * 64];
    if (D > 64) abort();
    for (int i = 0; i < 3 * D; i++) text[i] = (float)((i * 5) % 7) - 3;
    vf_classifier k;
    vf_error err;
    char path[700];
    snprintf(path, sizeof path, "%s/seed-classifier.safetensors", fuzz_dir());
    char *data = NULL;
    if (vf_classifier_init(&k, text, 3, D, 4.6f, names, "a photo of a {class}.", model_fp, g_p.pp_fingerprint, run_id,
                           NULL, &err) ||
        vf_classifier_save(&k, path, &err) || vf_read_file(path, &data, len, &err)) {
        fprintf(stderr, "fuzz_image_party seeds: classifier: %s\n", err.msg);
        abort();
    }
    vf_classifier_free(&k);
    return (uint8_t *)data;
}

/* A SecureSumTask for op 6 (which adds this party and the sum id): 3
 * classes of this party's width; with_stranger adds a participant whose key
 * nobody signed. */
static void secure_sum(buf *b, Vflclip__V1__SecureSumKind kind, const char *split, int with_stranger) {
    enum { C = 3 };
    static float t[C * 512];
    uint32_t shape[2] = {C, (uint32_t)g_p.D};
    for (int i = 0; i < C * g_p.D && i < C * 512; i++) t[i] = (float)((i * 7) % 11) - 5;
    Vflclip__V1__Tensor tensor = VFLCLIP__V1__TENSOR__INIT;
    tensor.n_shape = 2, tensor.shape = shape, tensor.n_data = (size_t)C * g_p.D, tensor.data = t;
    uint32_t idx[3] = {0, 2, 1};
    double mean[C] = {-1, -2, -3}, sd[C] = {1, 0.5, 2};
    static uint8_t pub[32] = {5}, sig[8] = {1}, der[8] = {2};
    Vflclip__V1__MaskPeer stranger = VFLCLIP__V1__MASK_PEER__INIT, *peers[1] = {&stranger};
    stranger.name = "hosp-z";
    stranger.public_key = (ProtobufCBinaryData){32, pub};
    stranger.signature = (ProtobufCBinaryData){sizeof sig, sig};
    stranger.certificate = (ProtobufCBinaryData){sizeof der, der};
    Vflclip__V1__SecureSumTask st = VFLCLIP__V1__SECURE_SUM_TASK__INIT;
    st.kind = kind;
    st.run_id = "fuzz";
    st.text_features = &tensor;
    st.logit_scale = 4.6f;
    st.n_participants = with_stranger ? 1 : 0;
    st.participants = peers;
    if (kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_STEP) {
        st.n_indices = 3, st.indices = idx, st.batch_size = 4, st.clip = with_stranger ? 0 : 0.5f;
    } else {
        st.split = (char *)split;
        if (kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL) {
            st.site_metrics = 1;
            st.n_grid_mean = st.n_grid_sd = C, st.grid_mean = mean, st.grid_sd = sd;
        }
    }
    Vflclip__V1__AggregatorMessage m = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    m.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_SECURE_SUM;
    m.secure_sum = &st;
    put_rec(b, 6, &m);
}

static void write_seeds(const char *dir) {
    buf b = {0};
    begin();
    /* every split, as a run asks for them; a drain in between */
    encode(&b, "train", 4, 0);
    put_rec(&b, 1, NULL);
    encode(&b, "val", 0, 0);
    encode(&b, "test", 1, 0);
    shutdown_msg(&b);
    seed_file_and_restart(dir, "splits", &b);
    /* asked while still encoding: deferred, a second refused, answered at the end; the link drops mid-stream */
    put_rec(&b, 4, NULL);
    encode(&b, "train", 2, 0);
    encode(&b, "val", 2, 0);
    put_rec(&b, 5, NULL);
    encode(&b, "val", 2, 0);
    put_rec(&b, 2, NULL);
    put_rec(&b, 3, NULL);
    encode(&b, "test", 8192, 0);
    seed_file_and_restart(dir, "deferred", &b);
    /* refusals */
    encode(&b, "holdout", 2, 0);
    encode(&b, "train", 2, 1);
    encode(&b, "", 0, 0);
    other(&b);
    seed_file_and_restart(dir, "refusals", &b);
    /* classifiers: this party's (kept), again (refused), another model's, not a classifier, a bad run id */
    size_t len1, len2;
    uint8_t *good = make_classifier("run-a", g_p.D, g_p.fingerprint, &len1);
    uint8_t *foreign = make_classifier("run-b", g_p.D, "0000000000000000000000000000000000000000000000000000000000000000", &len2);
    classifier(&b, "run-a", good, len1);
    classifier(&b, "run-a", good, len1);
    classifier(&b, "run-b", foreign, len2);
    classifier(&b, "run-c", good, len1);   /* run id inside is run-a */
    classifier(&b, "run-d", (const uint8_t *)"not a safetensors file", 22);
    classifier(&b, "../x", good, len1);
    seed_file_and_restart(dir, "classifiers", &b);
    /* secure sums (op 6): a step, a score range, an evaluation on a grid, a stranger's unsigned key */
    secure_sum(&b, VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_STEP, NULL, 0);
    secure_sum(&b, VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL_RANGE, "val", 0);
    secure_sum(&b, VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL, "test", 0);
    secure_sum(&b, VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_STEP, NULL, 1);
    seed_file_and_restart(dir, "secure-sums", &b);
    free(good);
    free(foreign);
    free(b.p);
    fprintf(stderr, "fuzz_image_party seeds: written to %s\n", dir);
}

