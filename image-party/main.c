/* vflclip-image-party: the daemon of one hospital.  At start it opens its
 * data set (npz, or image folder + labels CSV) and the frozen CLIP vision
 * tower, dials the aggregator and, in a worker thread, encodes every split
 * once (through the embedding cache in its state directory), then frees the
 * tower.  While it encodes, which takes hours for a real data set on a CPU,
 * it logs images done / total, rate and time left every few seconds and
 * sends the aggregator the same as EncodingProgress, so `vflclip status`
 * shows the hospital as "encoding 3,412/7,007 eta 1:02:03"; an EncodeSplit
 * that arrives meanwhile is answered once the embeddings are ready.  It
 * answers EncodeSplit tasks by streaming EmbeddingsChunks: embeddings, labels
 * and party-local ids, nothing else.  Pixels never leave this process, and the
 * only tasks it accepts carry no tensor (EncodeSplit, Shutdown): anything
 * else is refused, except, after a run whose [run] share_classifier is
 * image-parties, that run's classifier, kept in <state>/classifiers/, and,
 * in a run with [run] loss_at = image-parties, SecureSumTasks: the text
 * features T, answered with this party's masked share of the loss, dL/dT or
 * evaluation counts (secure_share.c), so embeddings and labels stay here.  With [privacy] embed_clip (and embed_noise) every
 * embedding is clipped and noised once, after encoding and before anything is
 * sent (privacy/embed_dp.h); the noise seed is [privacy] seed or a random one
 * kept in the state directory, so a restart re-sends the same noisy rows
 * instead of spending privacy on fresh noise. */
#include "util/name_list.h"
#include "clip/model_preprocess.h"
#include "clip/clip_model.h"
#include "coop/classifier.h"
#include "daemon/daemon_setup.h"
#include "data/model_encoder.h"
#include "daemon/notify.h"
#include "daemon/peer_limits.h"
#include "data/dataset.h"
#include "data/embed_cache.h"
#include "device/device.h"
#include "image/image_io.h"
#include "image/preprocess.h"
#include "privacy/embed_dp.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/sha256.h"
#include "secure_share.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGRAM "vflclip-image-party"
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#define MAX_PIXELS_TEXT STRINGIFY(VF_IMAGE_DEFAULT_MAX_PIXELS)   /* one default, image_io.h's */

static const vf_ini_key schema[] = {
    VF_INI_TLS_KEYS,
    VF_INI_DIAL_KEYS,
    {"model", "dir", VF_INI_PATH, 1, NULL, "CLIP checkpoint directory (Hugging Face or OpenCLIP); the vision tower is used"},
    {"data", "path", VF_INI_PATH, 1, NULL, "dermamnist*.npz, a labels CSV (image_id, dx[, split]) or a folder holding labels.csv"},
    {"data", "class_codes", VF_INI_STR, 0, NULL, "CSV dx codes in label order (default akiec,bcc,bkl,df,mel,nv,vasc)"},
    {"data", "image_dir", VF_INI_PATH, 0, NULL, "where the CSV's images are (default: beside the CSV)"},
    {"data", "split_seed", VF_INI_INT, 0, "0", "seed of the 7:1:2 split of a CSV without a split column"},
    {"data", "max_pixels", VF_INI_INT, 0, MAX_PIXELS_TEXT,
     "refuse an image whose header declares more pixels (width x height) than this, before decoding it"},
    {"encode", "batch", VF_INI_INT, 0, "32", "images per vision-tower batch"},
    {"encode", "cache", VF_INI_BOOL, 0, "true", "keep embeddings in <state>/embeddings so a restart does not re-encode"},
    {"encode", "device", VF_INI_STR, 0, "auto", "where images are encoded: auto (a GPU when there is one) | cpu | cuda"},
    {"encode", "precision", VF_INI_STR, 0, "default",
     "image encoding precision: default (bf16 on CUDA, fp32 on the CPU) | auto (bf16 on CUDA or a CPU with AVX512_BF16/AMX, "
     "else fp32) | bf16 | fp32 | tf32 (CUDA); part of the preprocessing fingerprint"},
    {"privacy", "embed_clip", VF_INI_FLOAT, 0, "0", "L2 bound of every embedding sent (0: embeddings leave unchanged)"},
    {"privacy", "embed_noise", VF_INI_FLOAT, 0, "0", "Gaussian noise on every coordinate, std = this * embed_clip"},
    {"privacy", "seed", VF_INI_INT, 0, NULL, "noise seed (keep it secret); default: random, kept in <state>/privacy_seed"},
    {"privacy", "dp_delta", VF_INI_FLOAT, 0, "1e-5", "delta of the (epsilon, delta) reported for the embeddings"},
    VF_INI_STATE_KEYS,
    {NULL, NULL, 0, 0, NULL, NULL},
};

typedef struct party {
    vf_dataset ds;
    int D;
    float *emb[VF_SPLIT_COUNT];    /* (n, D) per split */
    char fingerprint[65], pp_fingerprint[65];
    vf_embed_privacy privacy;
    /* the EncodeSplit being streamed */
    int streaming;
    uint64_t task;
    vf_split split;
    uint32_t view, chunk;
    int next;
    int32_t *labels_buf;
    char **ids_buf;
    char *ids_storage;
    /* encoding, in a worker thread (uv_queue_work) */
    int ready;                     /* every split is encoded (and privatised) */
    int64_t enc_done, enc_total;   /* images so far / in all splits; enc_done written by the worker (atomic) */
    int enc_split;                 /* split being encoded (atomic) */
    int enc_failed, progress_sent;
    vf_error enc_err;
    vf_progress progress;          /* the log lines and the EncodingProgress sent */
    uv_timer_t progress_timer;
    uv_work_t work;
    int have_pending;              /* an EncodeSplit that came before the embeddings were ready */
    uint64_t pending_task;
    Vflclip__V1__EncodeSplit pending;
    char pending_split[16];
    uint8_t *pending_sum;          /* a SecureSumTask that came before the embeddings were ready, packed */
    size_t pending_sum_len;
    uint64_t pending_sum_task;
} party;

static party g_p;
static vf_party_link *g_link;

static void send_error(uint64_t task, int code, const char *msg) {
    vf_log(VF_WARN, "event=task_refused task=%" PRIu64 " error=\"%s\"", task, msg);
    Vflclip__V1__Error e = VFLCLIP__V1__ERROR__INIT;
    e.code = code;
    e.message = (char *)msg;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.task_id = task;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR;
    pm.error = &e;
    vf_error err;
    vf_party_link_send(g_link, &pm, &err);
}

/* Sends chunks while less than 1 MiB is queued; the link's drain resumes. */
static void pump(void) {
    if (!g_p.streaming) return;
    const vf_split_data *sd = &g_p.ds.split[g_p.split];
    const int n = sd->n, D = g_p.D;
    vf_error err;
    while (g_p.streaming && vf_party_link_queued(g_link) < (1u << 20)) {
        int first = g_p.next, count = n - first < (int)g_p.chunk ? n - first : (int)g_p.chunk;
        size_t used = 0;
        for (int i = 0; i < count; i++) {
            g_p.labels_buf[i] = sd->labels[first + i];
            g_p.ids_buf[i] = g_p.ids_storage + used;
            if (sd->ids) used += (size_t)snprintf(g_p.ids_buf[i], 128, "%.120s", sd->ids[first + i]) + 1;
            else used += (size_t)snprintf(g_p.ids_buf[i], 128, "%s-%d", vf_split_name(g_p.split), first + i) + 1;
        }
        Vflclip__V1__EmbeddingsChunk ch = VFLCLIP__V1__EMBEDDINGS_CHUNK__INIT;
        ch.split = (char *)vf_split_name(g_p.split);
        ch.view = g_p.view;
        ch.offset = (uint64_t)first;
        ch.count = (uint32_t)count;
        ch.dim = (uint32_t)D;
        ch.n_data = (size_t)count * D;
        ch.data = n ? g_p.emb[g_p.split] + (size_t)first * D : NULL;
        ch.n_labels = (size_t)count;
        ch.labels = g_p.labels_buf;
        ch.n_ids = (size_t)count;
        ch.ids = g_p.ids_buf;
        ch.total = (uint64_t)n;
        ch.last = first + count >= n;
        Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
        pm.task_id = g_p.task;
        pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_EMBEDDINGS;
        pm.embeddings = &ch;
        if (vf_party_link_send(g_link, &pm, &err)) {
            vf_log(VF_WARN, "event=send_failed task=%" PRIu64 " error=\"%s\"", g_p.task, err.msg);
            g_p.streaming = 0;
            return;
        }
        g_p.next = first + count;
        if (ch.last) {
            g_p.streaming = 0;
            vf_log(VF_INFO, "event=split_sent task=%" PRIu64 " split=%s images=%d dim=%d", g_p.task, ch.split, n, D);
        }
    }
}

static void on_encode(uint64_t task, const Vflclip__V1__EncodeSplit *es) {
    if (!g_p.ready) {   /* answered when the embeddings are ready (encode_done) */
        if (g_p.have_pending) { send_error(task, VF_GRPC_ABORTED, "another split is waiting for the encoding to finish"); return; }
        g_p.have_pending = 1;
        g_p.pending_task = task;
        g_p.pending = *es;
        snprintf(g_p.pending_split, sizeof g_p.pending_split, "%s", es->split ? es->split : "");
        g_p.pending.split = g_p.pending_split;
        vf_log(VF_INFO, "event=encode_split_deferred task=%" PRIu64 " split=%s detail=\"still encoding the data set\"", task,
               g_p.pending_split);
        return;
    }
    vf_split s;
    if (vf_split_parse(es->split, &s)) { send_error(task, VF_GRPC_INVALID_ARGUMENT, "EncodeSplit: split must be train, val or test"); return; }
    if (es->view != 0) { send_error(task, VF_GRPC_INVALID_ARGUMENT, "augmentation views are not supported by this image party (view 0 only)"); return; }
    if (g_p.streaming) { send_error(task, VF_GRPC_ABORTED, "another split is being sent"); return; }
    uint32_t chunk = es->chunk_size ? es->chunk_size : 256;
    if (chunk > 8192) chunk = 8192;
    free(g_p.labels_buf); free(g_p.ids_buf); free(g_p.ids_storage);
    g_p.labels_buf = malloc(chunk * sizeof *g_p.labels_buf);
    g_p.ids_buf = malloc(chunk * sizeof *g_p.ids_buf);
    g_p.ids_storage = malloc((size_t)chunk * 128);
    if (!g_p.labels_buf || !g_p.ids_buf || !g_p.ids_storage) { send_error(task, VF_GRPC_RESOURCE_EXHAUSTED, "out of memory"); return; }
    g_p.streaming = 1;
    g_p.task = task;
    g_p.split = s;
    g_p.view = es->view;
    g_p.chunk = chunk;
    g_p.next = 0;
    pump();
}

static char g_state_dir[4096];

/* A finished run's classifier ([run] share_classifier = image-parties): kept
 * as <state>/classifiers/<run id>.safetensors once it is checked (size,
 * format, this party's model and preprocessing fingerprints, width); a run's
 * second copy, or one that fails a check, is logged and dropped.  Nothing is
 * sent back. */
static void on_classifier(const Vflclip__V1__ClassifierFile *cf) {
    vf_error err;
    char dir[4200], path[4400], tmp[4500];
    const char *id = cf->run_id ? cf->run_id : "";
    vf_classifier k;
    int loaded = 0;
    if (vf_peer_check_name("classifier run id", id, &err) || vf_peer_check_classifier(cf->data.len, 0, (unsigned)g_p.D, &err))
        goto refuse;
    if (!id[0] || id[0] == '.' || strchr(id, '/')) { vf_fail(&err, "classifier run id '%s' is not a valid name", id); goto refuse; }
    snprintf(dir, sizeof dir, "%s/classifiers", g_state_dir);
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, id);
    if (access(path, F_OK) == 0) { vf_fail(&err, "%s exists: a run's classifier is received once", path); goto refuse; }
    snprintf(tmp, sizeof tmp, "%s/%s.tmp.received.safetensors", dir, id);
    if (vf_mkdirs(dir, 0700, &err) || vf_write_atomic(tmp, cf->data.data, cf->data.len, &err)) goto refuse;
    if (vf_classifier_load(&k, tmp, &err)) { unlink(tmp); goto refuse; }
    loaded = 1;
    if (strcmp(k.model_fingerprint, g_p.fingerprint) || strcmp(k.preprocessing_fingerprint, g_p.pp_fingerprint) ||
        k.D != g_p.D || strcmp(k.run_id, id)) {
        vf_fail(&err, "classifier of run %s is for model %.16s / preprocessing %.16s / width %d / run %s, this party is %.16s / %.16s / %d",
                id, k.model_fingerprint, k.preprocessing_fingerprint, k.D, k.run_id, g_p.fingerprint, g_p.pp_fingerprint, g_p.D);
        unlink(tmp);
        goto refuse;
    }
    if (rename(tmp, path)) { vf_fail_errno(&err, path); unlink(tmp); goto refuse; }
    vf_log(VF_INFO, "event=classifier_received run=%s file=%s classes=%d temperature=%.6g", id, path, k.C, (double)k.temperature);
    vf_classifier_free(&k);
    return;
refuse:
    if (loaded) vf_classifier_free(&k);
    vf_log(VF_WARN, "event=classifier_refused run=%s error=\"%s\"", id[0] ? id : "-", err.msg);
}

/* loss_at = image-parties: this party's masked share of a secure sum. */
static void on_secure_sum(uint64_t task, const Vflclip__V1__SecureSumTask *st) {
    if (!g_p.ready) {   /* answered when the embeddings are ready (encode_done); a newer task replaces an older one */
        size_t n = vflclip__v1__secure_sum_task__get_packed_size(st);
        uint8_t *buf = malloc(n ? n : 1);
        if (!buf) { send_error(task, VF_GRPC_RESOURCE_EXHAUSTED, "out of memory"); return; }
        vflclip__v1__secure_sum_task__pack(st, buf);
        free(g_p.pending_sum);
        g_p.pending_sum = buf;
        g_p.pending_sum_len = n;
        g_p.pending_sum_task = task;
        vf_log(VF_INFO, "event=secure_sum_deferred task=%" PRIu64 " sum=%" PRIu64 " detail=\"still encoding the data set\"", task, st->sum_id);
        return;
    }
    vf_embedded_split sp[VF_SPLIT_COUNT];
    for (int k = 0; k < VF_SPLIT_COUNT; k++) sp[k] = (vf_embedded_split){g_p.ds.split[k].n, g_p.D, g_p.emb[k], g_p.ds.split[k].labels};
    Vflclip__V1__MaskedShare ms = VFLCLIP__V1__MASKED_SHARE__INIT;
    int code;
    vf_error err;
    if (ip_secure_answer(st, sp, &ms, &code, &err)) { send_error(task, code, err.msg); return; }
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.task_id = task;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_MASKED_SHARE;
    pm.masked_share = &ms;
    if (vf_party_link_send(g_link, &pm, &err))
        vf_log(VF_WARN, "event=send_failed task=%" PRIu64 " error=\"%s\"", task, err.msg);
    else
        vf_log(VF_DEBUG, "event=secure_share_sent task=%" PRIu64 " sum=%" PRIu64 " words=%zu", task, ms.sum_id, ms.n_values);
}

static void answer_pending_sum(void) {
    if (!g_p.pending_sum) return;
    Vflclip__V1__SecureSumTask *st = vflclip__v1__secure_sum_task__unpack(NULL, g_p.pending_sum_len, g_p.pending_sum);
    free(g_p.pending_sum);
    g_p.pending_sum = NULL;
    if (!st) return;
    on_secure_sum(g_p.pending_sum_task, st);
    vflclip__v1__secure_sum_task__free_unpacked(st, NULL);
}

static void on_message(vf_party_link *l, const Vflclip__V1__AggregatorMessage *m, void *ud) {
    switch (m->body_case) {
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME: break;
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_ENCODE_SPLIT: on_encode(m->task_id, m->encode_split); break;
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_SHUTDOWN: g_p.streaming = 0; break;
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_CLASSIFIER_FILE: on_classifier(m->classifier_file); break;
    case VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_SECURE_SUM: on_secure_sum(m->task_id, m->secure_sum); break;
    default: send_error(m->task_id, VF_GRPC_UNIMPLEMENTED, "an image party accepts only EncodeSplit and SecureSum tasks"); break;
    }
}

static void on_drain(vf_party_link *l, void *ud) { pump(); }
static void on_down(vf_party_link *l, const char *why, void *ud) {
    g_p.streaming = 0;
    free(g_p.pending_sum);   /* a sum of the old connection: its masks are void */
    g_p.pending_sum = NULL;
}

static void fill_hello(Vflclip__V1__Hello *h, void *ud) {
    static Vflclip__V1__SplitSize sizes[VF_SPLIT_COUNT];
    static Vflclip__V1__SplitSize *ptrs[VF_SPLIT_COUNT];
    for (int k = 0; k < VF_SPLIT_COUNT; k++) {
        vflclip__v1__split_size__init(&sizes[k]);
        sizes[k].split = (char *)vf_split_name((vf_split)k);
        sizes[k].count = (uint64_t)g_p.ds.split[k].n;
        ptrs[k] = &sizes[k];
    }
    h->model_fingerprint = g_p.fingerprint;
    h->software_version = VF_VERSION;
    h->n_splits = VF_SPLIT_COUNT;
    h->splits = ptrs;
    h->embed_dim = (uint32_t)g_p.D;
    h->preprocessing_fingerprint = g_p.pp_fingerprint;
    if (g_p.privacy.clip > 0) {   /* a party without embedding DP sends the Hello it always did */
        h->embed_clip = g_p.privacy.clip;
        h->embed_noise_multiplier = g_p.privacy.noise_multiplier;
        h->dp_delta = g_p.privacy.delta;
    }
    vf_error err;
    if (ip_secure_hello(h, &err))   /* the Hello goes without it; a loss_at = image-parties run then refuses to start */
        vf_log(VF_ERROR, "event=mask_key_failed error=\"%s\"", err.msg);
}

/* The noise seed: [privacy] seed, else a random one made once and kept in the state directory. */
static int privacy_seed(const vf_ini *ini, const char *state, uint64_t *seed, vf_error *err) {
    long v;
    if (vf_ini_given(ini, "privacy", "seed")) {
        if (vf_ini_int(ini, "privacy", "seed", 0, 1L << 62, &v, err)) return -1;
        *seed = (uint64_t)v;
        return 0;
    }
    char path[4200], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/privacy_seed", state);
    vf_error ignored;
    if (vf_read_file(path, &text, &len, &ignored) == 0) {
        int ok = sscanf(text, "%" SCNu64, seed) == 1;
        free(text);
        if (!ok) return vf_fail(err, "%s: not a seed", path);
        return 0;
    }
    if (getrandom(seed, sizeof *seed, 0) != sizeof *seed) return vf_fail_errno(err, "getrandom for the privacy seed");
    char line[32];
    int n = snprintf(line, sizeof line, "%" PRIu64 "\n", *seed);
    return vf_write_atomic(path, line, (size_t)n, err);
}

static int load_privacy(const vf_ini *ini, const char *state, vf_error *err) {
    double clip, noise, delta;
    if (vf_ini_double(ini, "privacy", "embed_clip", 0, 1e30, &clip, err) ||
        vf_ini_double(ini, "privacy", "embed_noise", 0, 1e30, &noise, err) ||
        vf_ini_double(ini, "privacy", "dp_delta", 1e-300, 0.999999, &delta, err))
        return -1;
    g_p.privacy = (vf_embed_privacy){(float)clip, (float)noise, 0, delta};
    if (vf_embed_privacy_check(&g_p.privacy, ini->name, err)) return -1;
    if (clip > 0 && privacy_seed(ini, state, &g_p.privacy.seed, err)) return -1;
    return 0;
}

static void on_stop(int sig) {
    vf_log(VF_INFO, "event=stopping signal=%d", sig);
    if (g_p.enc_total && !g_p.ready && !g_p.enc_failed) {
        /* the worker cannot be interrupted; splits already encoded are in the cache */
        vf_log(VF_INFO, "event=encoding_interrupted done=%lld total=%lld", (long long)__atomic_load_n(&g_p.enc_done, __ATOMIC_RELAXED),
               (long long)g_p.enc_total);
        _exit(0);
    }
    g_p.streaming = 0;
    vf_party_link_stop(g_link);
}

static int parse_codes(const char *csv, char ***codes, int *n, vf_error *err) {
    *codes = NULL;
    *n = 0;
    vf_name_list l;
    if (vf_name_list_parse(&l, csv, "[data] class_codes", 2, err)) return -1;
    if (l.n > VF_DATASET_MAX_CLASSES) {
        vf_name_list_free(&l);
        return vf_fail(err, "[data] class_codes: %d codes (at most %d)", l.n, VF_DATASET_MAX_CLASSES);
    }
    *codes = calloc((size_t)(l.n ? l.n : 1), sizeof **codes);
    for (int i = 0; *codes && i < l.n; i++) (*codes)[i] = strdup(l.names[i]);
    *n = l.n;
    vf_name_list_free(&l);
    return *codes ? 0 : vf_fail(err, "out of memory");
}

/* What the worker thread encodes with: the tower on its device, the
 * preprocessing and the cache; freed when the encoding is done. */
static struct {
    vf_checkpoint ck;        /* the model directory, read once; the encoder's tower borrows its weights */
    vf_model_encoder me;     /* preprocessing, tower and device, opened at start-up */
    int cache;
    char cache_dir[4200];
    char **codes;
    int n_codes;
} g_enc;

/* Opens the data set, the vision tower on the configured device and the
 * cache: everything the Hello needs; the encoding itself is start_encoding. */
static int load_embeddings(const vf_ini *ini, const char *state, vf_error *err) {
    char model[4096], data[4096], image_dir[4096];
    long split_seed, batch, max_pixels;
    int cache;
    char **codes;
    int n_codes;
    if (vf_ini_path(ini, "model", "dir", 1, model, sizeof model, err) ||
        vf_ini_path(ini, "data", "path", 1, data, sizeof data, err) ||
        vf_ini_path(ini, "data", "image_dir", 0, image_dir, sizeof image_dir, err) ||
        vf_ini_int(ini, "data", "split_seed", 0, 1L << 62, &split_seed, err) ||
        vf_ini_int(ini, "data", "max_pixels", 1, 1L << 40, &max_pixels, err) ||
        vf_ini_int(ini, "encode", "batch", 1, 4096, &batch, err) || vf_ini_bool(ini, "encode", "cache", &cache, err) ||
        parse_codes(vf_ini_get(ini, "data", "class_codes"), &codes, &n_codes, err))
        return -1;
    vf_device_kind device;
    vf_device_precision precision;
    if (vf_device_kind_parse(vf_ini_get(ini, "encode", "device"), "[encode] device", &device, err) ||
        vf_device_precision_parse(vf_ini_get(ini, "encode", "precision"), "[encode] precision", &precision, err))
        return vf_error_prefix(err, "%s", ini->name);
    vf_image_set_max_pixels((uint64_t)max_pixels);   /* before the first image is decoded */
    vf_dataset_options o = {.class_codes = (const char *const *)codes, .n_classes = n_codes,
                            .image_dir = image_dir[0] ? image_dir : NULL, .split_seed = (unsigned long long)split_seed};
    if (vf_dataset_open(&g_p.ds, data, &o, err)) return -1;
    if (vf_checkpoint_open(&g_enc.ck, model, err)) return -1;
    if (vf_model_encoder_open_from(&g_enc.me, &g_enc.ck, (int)batch, device, precision, err)) {
        vf_checkpoint_close(&g_enc.ck);
        return -1;
    }
    if (g_enc.me.vt.random_weights)
        vf_log(VF_WARN, "event=random_weights model=%s detail=\"RANDOM weights: metrics mean nothing about dermatology\"", model);
    vf_fingerprint_hex(g_enc.me.vt.fingerprint, g_p.fingerprint);
    g_p.D = g_enc.me.vt.embed_dim;
    vf_preprocess_fingerprint(&g_enc.me.pp, g_p.pp_fingerprint);   /* the device is left out: a GPU party may train with a CPU one */
    if (g_enc.me.dev.precision != VF_PREC_FP32) { /* but not in another precision (issue 18): refused at Hello; fp32 unchanged */
        char text[128];
        unsigned char d[32];
        int n = snprintf(text, sizeof text, "%s precision=%s", g_p.pp_fingerprint, vf_device_precision_name(g_enc.me.dev.precision));
        vf_sha256(text, (size_t)n, d);
        vf_sha256_to_hex(d, g_p.pp_fingerprint);
    }
    snprintf(g_enc.cache_dir, sizeof g_enc.cache_dir, "%s/embeddings", state);
    g_enc.cache = cache;
    g_enc.codes = codes;
    g_enc.n_codes = n_codes;
    g_p.enc_total = 0;
    for (int k = 0; k < VF_SPLIT_COUNT; k++) g_p.enc_total += g_p.ds.split[k].n;
    return 0;
}

/* Worker thread: every split through the vision tower (or the cache), the
 * count of images done kept in g_p.enc_done for the loop's progress timer. */
static void on_split_progress(void *ctx, vf_split s, int done, int total) {
    int64_t base = *(const int64_t *)ctx;
    __atomic_store_n(&g_p.enc_done, base + done, __ATOMIC_RELAXED);
}

static void encode_work(uv_work_t *w) {
    int rc = 0;
    vf_error *err = &g_p.enc_err;
    int64_t base = 0;
    for (int k = 0; k < VF_SPLIT_COUNT && rc == 0; k++) {
        int n = g_p.ds.split[k].n;
        if (n == 0) continue;
        __atomic_store_n(&g_p.enc_split, k, __ATOMIC_RELAXED);
        g_p.emb[k] = malloc((size_t)n * g_p.D * sizeof(float));
        if (!g_p.emb[k]) { rc = vf_fail(err, "out of memory for %d embeddings", n); break; }
        vf_embed_stats st;
        rc = vf_embed_split(&g_p.ds, (vf_split)k, &g_enc.me.enc, &g_enc.me.pp, g_enc.cache ? g_enc.cache_dir : NULL, g_p.emb[k], &st,
                            on_split_progress, &base, err);
        base += n;
        __atomic_store_n(&g_p.enc_done, base, __ATOMIC_RELAXED);
        if (!rc) vf_log(VF_INFO, "event=split_encoded split=%s images=%d cache_hit=%d encoded=%d compute=%s", vf_split_name((vf_split)k),
                        n, st.cache_hit, st.encoded, g_enc.me.enc.compute);
    }
    if (rc == 0 && g_p.privacy.clip > 0) {
        for (int k = 0; k < VF_SPLIT_COUNT; k++)
            if (g_p.emb[k]) vf_embed_privatize(&g_p.privacy, k, 0, g_p.emb[k], g_p.ds.split[k].n, g_p.D);
        vf_log(VF_INFO, "event=embeddings_privatized clip=%g noise_multiplier=%g delta=%g epsilon=%.4f", g_p.privacy.clip,
               g_p.privacy.noise_multiplier, g_p.privacy.delta, vf_embed_epsilon(&g_p.privacy));
    }
    g_p.enc_failed = rc != 0;
}

/* The loop's side: a progress line in the log and an EncodingProgress to the
 * aggregator (when connected) every interval, and once at the end. */
static void send_progress(void) {
    int64_t done = __atomic_load_n(&g_p.enc_done, __ATOMIC_RELAXED);
    vf_progress_set(&g_p.progress, done);
    Vflclip__V1__EncodingProgress ep = VFLCLIP__V1__ENCODING_PROGRESS__INIT;
    ep.done = (uint64_t)done;
    ep.total = (uint64_t)g_p.enc_total;
    ep.split = (char *)vf_split_name((vf_split)__atomic_load_n(&g_p.enc_split, __ATOMIC_RELAXED));
    ep.images_per_s = vf_progress_rate(&g_p.progress);
    ep.eta_s = vf_progress_eta(&g_p.progress);
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_ENCODING_PROGRESS;
    pm.encoding_progress = &ep;
    vf_error err;
    if (vf_party_link_send(g_link, &pm, &err) == 0) g_p.progress_sent = 1;   /* not connected yet: the next one goes */
}

static void on_progress_timer(uv_timer_t *t) {
    send_progress();
    vf_progress_report(&g_p.progress);
}

static void encode_done(uv_work_t *w, int status) {
    uv_timer_stop(&g_p.progress_timer);
    uv_close((uv_handle_t *)&g_p.progress_timer, NULL);
    vf_model_encoder_close(&g_enc.me);
    vf_checkpoint_close(&g_enc.ck);   /* after the encoder whose tower borrowed it */
    for (int i = 0; i < g_enc.n_codes; i++) free(g_enc.codes[i]);
    free(g_enc.codes);
    g_enc.codes = NULL;
    if (g_p.enc_failed || status) {
        if (status) vf_fail(&g_p.enc_err, "encoding did not run (%s)", uv_strerror(status));
        g_p.enc_failed = 1;
        vf_log(VF_ERROR, "event=encoding_failed error=\"%s\"", g_p.enc_err.msg);
        if (g_p.have_pending) send_error(g_p.pending_task, VF_GRPC_INTERNAL, g_p.enc_err.msg);
        vf_party_link_stop(g_link);
        return;
    }
    if (g_p.progress_sent) send_progress();   /* the aggregator was told it encodes: now it is done */
    else vf_progress_set(&g_p.progress, __atomic_load_n(&g_p.enc_done, __ATOMIC_RELAXED));
    vf_progress_end(&g_p.progress);
    g_p.ready = 1;
    vf_notify_status("embeddings ready");
    if (g_p.have_pending) {
        g_p.have_pending = 0;
        on_encode(g_p.pending_task, &g_p.pending);
    }
    answer_pending_sum();
}

static int start_encoding(uv_loop_t *loop, vf_error *err) {
    vf_progress_begin(&g_p.progress, "encoding images", "img", g_p.enc_total, VF_PROGRESS_LOG);
    uv_timer_init(loop, &g_p.progress_timer);
    uint64_t every_ms = (uint64_t)(g_p.progress.interval_s * 1000);
    uv_timer_start(&g_p.progress_timer, on_progress_timer, every_ms, every_ms);
    int rc = uv_queue_work(loop, &g_p.work, encode_work, encode_done);
    if (rc) return vf_fail(err, "cannot start the encoding thread: %s", uv_strerror(rc));
    return 0;
}

static const vf_daemon_spec spec = {
    PROGRAM,
    "An image party (one per hospital): encodes its images with the frozen CLIP vision tower\n"
    "and sends the aggregator embeddings and labels, never pixels.",
    schema, 1};

int main(int argc, char **argv) {
    vf_daemon d;
    int rc = vf_daemon_start(&d, &spec, argc, argv);
    if (rc >= 0) return rc;
    vf_error err;
    if (d.check_only) {
        char p[4096];
        long max_pixels;
        if (vf_ini_path(&d.ini, "model", "dir", 1, p, sizeof p, &err) ||
            vf_ini_path(&d.ini, "data", "path", 1, p, sizeof p, &err) ||
            vf_ini_int(&d.ini, "data", "max_pixels", 1, 1L << 40, &max_pixels, &err))
            return vf_daemon_fail(&d, &err);
        printf("%s: configuration %s is valid\n", PROGRAM, d.config);
        vf_daemon_end(&d);
        return 0;
    }
    vf_notify_status("loading the data set and the model");
    snprintf(g_state_dir, sizeof g_state_dir, "%s", d.paths.state);
    if (load_privacy(&d.ini, d.paths.state, &err) || load_embeddings(&d.ini, d.paths.state, &err) ||
        ip_secure_open(d.paths.cert, d.paths.key, d.paths.ca, &err))
        return vf_daemon_fail(&d, &err);
    uv_loop_t *loop = uv_default_loop();
    vf_party_link_handlers h = {fill_hello, on_message, on_down, on_drain, NULL};
    if (vf_party_link_start(loop, &d.link, &h, &g_link, &err) || start_encoding(loop, &err)) return vf_daemon_fail(&d, &err);
    vf_log(VF_INFO, "event=started data=%s train=%d val=%d test=%d dim=%d fingerprint=%.16s aggregator=%s:%d",
           g_p.ds.source, g_p.ds.split[0].n, g_p.ds.split[1].n, g_p.ds.split[2].n, g_p.D, g_p.fingerprint, d.host,
           d.link.client.port);
    vf_daemon_run(&d, loop, "dialling the aggregator; encoding the data set", on_stop);
    if (g_p.enc_failed) return vf_daemon_fail(&d, &g_p.enc_err);
    for (int k = 0; k < VF_SPLIT_COUNT; k++) free(g_p.emb[k]);
    free(g_p.labels_buf); free(g_p.ids_buf); free(g_p.ids_storage);
    free(g_p.pending_sum);
    ip_secure_close();
    vf_dataset_close(&g_p.ds);
    vf_daemon_end(&d);
    return 0;
}
