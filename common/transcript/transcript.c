/* transcript: the aggregator's hash-chained, signed run transcript and the
 * parties' logs (see transcript.h).  Verification is in transcript_verify.c. */
#include "transcript/transcript.h"
#include "transcript/transcript_internal.h"
#include "pki/pki_issue.h"
#include "proto/federation.pb-c.h"

#include <cJSON.h>
#include <mbedtls/base64.h>
#include <mbedtls/sha256.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct sha_buffer {
    ProtobufCBuffer base;
    mbedtls_sha256_context ctx;
} sha_buffer;

static void sha_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
    mbedtls_sha256_update_ret(&((sha_buffer *)b)->ctx, data, len);
}

void vf_pb_sha256(const ProtobufCMessage *m, unsigned char out[32]) {
    sha_buffer b = {.base = {sha_append}};
    mbedtls_sha256_init(&b.ctx);
    mbedtls_sha256_starts_ret(&b.ctx, 0);
    protobuf_c_message_pack_to_buffer(m, &b.base);
    mbedtls_sha256_finish_ret(&b.ctx, out);
    mbedtls_sha256_free(&b.ctx);
}

void vf_sha256_hex(const unsigned char h[32], char hex[65]) {
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
}

const char *vf_transcript_kind(const ProtobufCMessage *m, uint64_t *step) {
    *step = 0;
    int body = 0;
    if (m->descriptor == &vflclip__v1__aggregator_message__descriptor) {
        const Vflclip__V1__AggregatorMessage *a = (const void *)m;
        body = (int)a->body_case;
        if (a->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_TEXT_BACKWARD) *step = a->text_backward->step;
        if (a->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_TEXT_FORWARD) *step = a->text_forward->step;
        if (a->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_CHECKPOINT) *step = a->checkpoint->step;
    } else if (m->descriptor == &vflclip__v1__party_message__descriptor) {
        const Vflclip__V1__PartyMessage *p = (const void *)m;
        body = (int)p->body_case;
        if (p->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_FEATURES) *step = p->text_features->step;
    } else {
        return "unknown";
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, (unsigned)body);
    return f ? f->name : "none";
}

/* ---- writing --------------------------------------------------------------------- */
static void genesis(const char *run_id, unsigned char out[32]) {
    mbedtls_sha256_context c;
    mbedtls_sha256_init(&c);
    mbedtls_sha256_starts_ret(&c, 0);
    mbedtls_sha256_update_ret(&c, (const unsigned char *)VF_TRANSCRIPT_MAGIC, strlen(VF_TRANSCRIPT_MAGIC));
    mbedtls_sha256_update_ret(&c, (const unsigned char *)run_id, strlen(run_id));
    mbedtls_sha256_finish_ret(&c, out);
    mbedtls_sha256_free(&c);
}

void vf_transcript_genesis(const char *run_id, unsigned char out[32]) { genesis(run_id, out); }

void vf_transcript_chain_step(unsigned char head[32], uint64_t seq, const char *sender, const char *receiver, uint64_t task,
                              const char *kind, uint64_t step, const char *sha_hex, const char *loss) {
    char text[512];
    int n = snprintf(text, sizeof text, "%llu|%s|%s|%llu|%s|%llu|%s|%s", (unsigned long long)seq, sender, receiver,
                     (unsigned long long)task, kind, (unsigned long long)step, sha_hex, loss);
    mbedtls_sha256_context c;
    mbedtls_sha256_init(&c);
    mbedtls_sha256_starts_ret(&c, 0);
    mbedtls_sha256_update_ret(&c, head, 32);
    mbedtls_sha256_update_ret(&c, (const unsigned char *)text, (size_t)(n < (int)sizeof text ? n : (int)sizeof text - 1));
    mbedtls_sha256_finish_ret(&c, head);
    mbedtls_sha256_free(&c);
}

static int hex32(const char *hex, unsigned char out[32]) {
    if (!hex || strlen(hex) != 64) return -1;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* An existing transcript of this run: take its head, cut a torn last line. */
static int resume(vf_transcript *t, vf_error *err) {
    FILE *f = fopen(t->path, "r");
    if (!f) return vf_fail_errno(err, t->path);
    char *line = NULL;
    size_t cap = 0;
    long good = 0;
    ssize_t n;
    int lineno = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] != '\n') break;   /* torn: written when the aggregator stopped */
        cJSON *o = cJSON_Parse(line);
        if (!o) break;
        cJSON *run = cJSON_GetObjectItem(o, "run"), *chain = cJSON_GetObjectItem(o, "chain");
        if (lineno == 1 && (!cJSON_IsString(run) || strcmp(run->valuestring, t->run_id))) {
            cJSON_Delete(o);
            fclose(f);
            free(line);
            return vf_fail(err, "%s: not the transcript of run %s", t->path, t->run_id);
        }
        if (cJSON_GetObjectItem(o, "end")) t->signed_ = 1;
        if (cJSON_IsString(chain) && hex32(chain->valuestring, t->head) == 0) t->entries++;
        cJSON_Delete(o);
        good = ftell(f);
    }
    free(line);
    fclose(f);
    if (t->signed_) return vf_fail(err, "%s: the transcript is already signed", t->path);
    if (truncate(t->path, good)) return vf_fail_errno(err, t->path);
    return 0;
}

int vf_transcript_open(vf_transcript *t, const char *path, const char *run_id, vf_error *err) {
    memset(t, 0, sizeof *t);
    snprintf(t->path, sizeof t->path, "%s", path);
    snprintf(t->run_id, sizeof t->run_id, "%s", run_id);
    genesis(run_id, t->head);
    int exists = access(path, F_OK) == 0;
    if (exists && resume(t, err)) return -1;
    t->f = fopen(path, "a");
    if (!t->f) return vf_fail_errno(err, path);
    if (!exists || ftell(t->f) == 0) {
        fprintf(t->f, "{\"transcript\":\"vflclip v1\",\"run\":\"%s\"}\n", run_id);
        fflush(t->f);
    }
    return 0;
}

int vf_transcript_append(vf_transcript *t, const vf_transcript_entry *e, vf_error *err) {
    if (!t->f) return vf_fail(err, "transcript is not open");
    char sha[65], loss[32] = "-", chain[65];
    vf_sha256_hex(e->sha256, sha);
    if (e->has_loss) snprintf(loss, sizeof loss, "%.9g", e->loss);
    uint64_t seq = ++t->entries;
    vf_transcript_chain_step(t->head, seq, e->sender, e->receiver, e->task, e->kind, e->step, sha, loss);
    vf_sha256_hex(t->head, chain);
    fprintf(t->f,
            "{\"seq\":%llu,\"sender\":\"%s\",\"receiver\":\"%s\",\"task\":%llu,\"kind\":\"%s\",\"step\":%llu,"
            "\"sha256\":\"%s\",\"loss\":\"%s\",\"chain\":\"%s\"}\n",
            (unsigned long long)seq, e->sender, e->receiver, (unsigned long long)e->task, e->kind,
            (unsigned long long)e->step, sha, loss, chain);
    if (fflush(t->f)) return vf_fail_errno(err, t->path);
    return 0;
}

void vf_transcript_signed_hash(const char *run_id, uint64_t entries, const char *head_hex, unsigned char out[32]) {
    char text[256];
    int n = snprintf(text, sizeof text, VF_TRANSCRIPT_MAGIC "%s|%llu|%s", run_id, (unsigned long long)entries, head_hex);
    mbedtls_sha256_ret((const unsigned char *)text, (size_t)n, out, 0);
}

int vf_transcript_sign(vf_transcript *t, const char *key_path, const char *cert_path, vf_error *err) {
    if (!t->f) return vf_fail(err, "transcript is not open");
    mbedtls_pk_context key;
    mbedtls_x509_crt crt;
    vf_pki_rng rng;
    mbedtls_pk_init(&key);
    mbedtls_x509_crt_init(&crt);
    int rc = -1, rng_ok = 0;
    unsigned char hash[32], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t sig_len = 0, b64_len = 0;
    char head[65], *b64 = NULL, sig_hex[2 * MBEDTLS_PK_SIGNATURE_MAX_SIZE + 1];
    if (vf_pki_load_key(key_path, &key, err) || vf_pki_load_crt(cert_path, &crt, err)) goto out;
    if (vf_pki_rng_init(&rng, err)) goto out;
    rng_ok = 1;
    vf_sha256_hex(t->head, head);
    vf_transcript_signed_hash(t->run_id, t->entries, head, hash);
    int ret = mbedtls_pk_sign(&key, MBEDTLS_MD_SHA256, hash, 0, sig, &sig_len, mbedtls_ctr_drbg_random, &rng.drbg);
    if (ret) { vf_fail(err, "%s: cannot sign the transcript (mbedtls -0x%04x)", key_path, -ret); goto out; }
    for (size_t i = 0; i < sig_len; i++) snprintf(sig_hex + 2 * i, 3, "%02x", sig[i]);
    mbedtls_base64_encode(NULL, 0, &b64_len, crt.raw.p, crt.raw.len);
    b64 = malloc(b64_len + 1);
    if (!b64 || mbedtls_base64_encode((unsigned char *)b64, b64_len + 1, &b64_len, crt.raw.p, crt.raw.len)) {
        vf_fail(err, "%s: cannot encode the certificate", cert_path);
        goto out;
    }
    fprintf(t->f,
            "{\"end\":true,\"run\":\"%s\",\"entries\":%llu,\"head\":\"%s\",\"alg\":\"ecdsa-p256-sha256\",\"signature\":\"%s\","
            "\"cert\":\"%s\"}\n",
            t->run_id, (unsigned long long)t->entries, head, sig_hex, b64);
    if (fflush(t->f) || fsync(fileno(t->f))) { vf_fail_errno(err, t->path); goto out; }
    t->signed_ = 1;
    rc = 0;
out:
    free(b64);
    if (rng_ok) vf_pki_rng_free(&rng);
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&crt);
    vf_transcript_close(t);
    return rc;
}

void vf_transcript_close(vf_transcript *t) {
    if (t->f) fclose(t->f);
    t->f = NULL;
}

/* ---- a party's log ------------------------------------------------------------------ */
int vf_party_log_open(vf_party_log *l, const char *path, const char *name, const char *serial, vf_error *err) {
    l->f = fopen(path, "a");
    if (!l->f) return vf_fail_errno(err, path);
    if (ftell(l->f) == 0) fprintf(l->f, "{\"party\":\"%s\",\"serial\":\"%s\"}\n", name, serial);
    fflush(l->f);
    return 0;
}

void vf_party_log_record(vf_party_log *l, int sent, const ProtobufCMessage *m, const uint8_t *raw, size_t raw_len) {
    if (!l || !l->f) return;
    unsigned char h[32];
    char hex[65];
    if (raw) mbedtls_sha256_ret(raw, raw_len, h, 0);
    else vf_pb_sha256(m, h);
    vf_sha256_hex(h, hex);
    uint64_t step;
    const char *kind = vf_transcript_kind(m, &step);
    uint64_t task = m->descriptor == &vflclip__v1__party_message__descriptor ? ((const Vflclip__V1__PartyMessage *)m)->task_id
                                                                             : ((const Vflclip__V1__AggregatorMessage *)m)->task_id;
    fprintf(l->f, "{\"dir\":\"%s\",\"task\":%llu,\"kind\":\"%s\",\"step\":%llu,\"sha256\":\"%s\"}\n", sent ? "sent" : "received",
            (unsigned long long)task, kind, (unsigned long long)step, hex);
    fflush(l->f);
}

void vf_party_log_close(vf_party_log *l) {
    if (l->f) fclose(l->f);
    l->f = NULL;
}
