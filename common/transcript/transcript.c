/* transcript: the aggregator's hash-chained, signed run transcript and the
 * parties' logs (see transcript.h).  Verification is in transcript_verify.c. */
#include "transcript/transcript.h"
#include "transcript/transcript_internal.h"
#include "pki/pki.h"
#include "pki/pki_issue.h"
#include "proto/federation.pb-c.h"
#include "pki/mbedtls_compat.h"
#include "util/fileio.h"
#include "util/sha256.h"

#include <cJSON.h>
#include <mbedtls/base64.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct sha_buffer {
    ProtobufCBuffer base;
    vf_sha256_ctx ctx;
} sha_buffer;

static void sha_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
    vf_sha256_add(&((sha_buffer *)b)->ctx, data, len);
}

void vf_pb_sha256(const ProtobufCMessage *m, unsigned char out[32]) {
    sha_buffer b = {.base = {sha_append}};
    vf_sha256_begin(&b.ctx);
    protobuf_c_message_pack_to_buffer(m, &b.base);
    vf_sha256_end(&b.ctx, out);
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
        if (a->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_CHECKPOINT) *step = a->checkpoint->step;
        if (a->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_SECURE_SUM) *step = a->secure_sum->step;
    } else if (m->descriptor == &vflclip__v1__party_message__descriptor) {
        const Vflclip__V1__PartyMessage *p = (const void *)m;
        body = (int)p->body_case;
        if (p->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_TEXT_FEATURES) *step = p->text_features->step;
        if (p->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_MASKED_SHARE) *step = p->masked_share->sum_id;
    } else {
        return "unknown";
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, (unsigned)body);
    return f ? f->name : "none";
}

/* ---- writing --------------------------------------------------------------------- */
static void genesis(const char *run_id, unsigned char out[32]) {
    vf_sha256_ctx c;
    vf_sha256_begin(&c);
    vf_sha256_add(&c, VF_TRANSCRIPT_MAGIC, strlen(VF_TRANSCRIPT_MAGIC));
    vf_sha256_add(&c, run_id, strlen(run_id));
    vf_sha256_end(&c, out);
}

void vf_transcript_genesis(const char *run_id, unsigned char out[32]) { genesis(run_id, out); }

void vf_transcript_chain_step(unsigned char head[32], uint64_t seq, const char *sender, const char *receiver, uint64_t task,
                              const char *kind, uint64_t step, const char *sha_hex, const char *loss) {
    char text[512];
    int n = snprintf(text, sizeof text, "%llu|%s|%s|%llu|%s|%llu|%s|%s", (unsigned long long)seq, sender, receiver,
                     (unsigned long long)task, kind, (unsigned long long)step, sha_hex, loss);
    vf_sha256_ctx c;
    vf_sha256_begin(&c);
    vf_sha256_add(&c, head, 32);
    vf_sha256_add(&c, text, (size_t)(n < (int)sizeof text ? n : (int)sizeof text - 1));
    vf_sha256_end(&c, head);
}

/* ---- strict line parsing (shared with transcript_verify.c) ------------------------ */
static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

cJSON *vf_transcript_parse_line(const char *buf, size_t len, const char **why) {
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        *why = "not JSON";
        return NULL;
    }
    for (; end && end < buf + len; end++)
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(o);
            *why = "text after the JSON object";
            return NULL;
        }
    const char *keys[32];
    size_t n = 0;
    for (const cJSON *c = o->child; c; c = c->next) {
        if (n == sizeof keys / sizeof *keys) {
            cJSON_Delete(o);
            *why = "more fields than any line of this format has";
            return NULL;
        }
        keys[n++] = c->string ? c->string : "";
    }
    qsort(keys, n, sizeof *keys, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(keys[i], keys[i - 1])) {
            cJSON_Delete(o);
            *why = "a field appears twice";
            return NULL;
        }
    return o;
}

int vf_transcript_num(const cJSON *o, const char *key, uint64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

const char *vf_transcript_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- continuing an existing transcript ------------------------------------------- */
/* <path>.head: {"run","entries","head"}, written at each commit. */
typedef struct head_mark {
    int present;
    uint64_t entries;
    char head[65];
} head_mark;

static void head_path(const vf_transcript *t, char *out, size_t size) { snprintf(out, size, "%s.head", t->path); }

static void read_head_mark(const vf_transcript *t, head_mark *m, char *why, size_t why_size) {
    char hp[4500], *text = NULL;
    size_t len;
    vf_error e;
    memset(m, 0, sizeof *m);
    head_path(t, hp, sizeof hp);
    if (access(hp, F_OK) != 0) return;
    m->present = 1;
    if (vf_read_file(hp, &text, &len, &e)) { snprintf(why, why_size, "%s", e.msg); return; }
    const char *bad = NULL;
    cJSON *o = vf_transcript_parse_line(text, len, &bad);
    free(text);
    const char *run = o ? vf_transcript_str(o, "run") : NULL, *head = o ? vf_transcript_str(o, "head") : NULL;
    if (!o || !run || !head || strlen(head) != 64 || vf_transcript_num(o, "entries", &m->entries))
        snprintf(why, why_size, "%s: not a transcript head mark (%s)", hp, bad ? bad : "run/entries/head missing");
    else if (strcmp(run, t->run_id))
        snprintf(why, why_size, "%s: the head mark of run %s, not of run %s", hp, run, t->run_id);
    else
        memcpy(m->head, head, 65);
    cJSON_Delete(o);
}

/* Reads an existing transcript: every complete line must continue the chain.
 * Sets *good to the end of the last line that does.  Returns 0 (why[] empty
 * when whole, else what is wrong: damage an operator may accept) or -1 for
 * what no decision can change (another run's file, already signed, I/O). */
static int scan(vf_transcript *t, const head_mark *mark, long *good, char *why, size_t why_size, vf_error *err) {
    FILE *f = fopen(t->path, "r");
    if (!f) return vf_fail_errno(err, t->path);
    char *line = NULL, chain_at_mark[65] = "";
    size_t cap = 0;
    ssize_t n;
    uint64_t lineno = 0;
    int rc = 0;
    *good = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] != '\n') break;   /* torn: written when the aggregator stopped */
        const char *bad = NULL;
        cJSON *o = vf_transcript_parse_line(line, (size_t)n, &bad);
        if (!o) { snprintf(why, why_size, "%s line %llu: %s", t->path, (unsigned long long)lineno, bad); break; }
        const char *run = vf_transcript_str(o, "run"), *chain = vf_transcript_str(o, "chain");
        if (lineno == 1) {
            int ours = run && !strcmp(run, t->run_id), header = run && vf_transcript_str(o, "transcript");
            cJSON_Delete(o);
            if (header && !ours) { rc = vf_fail(err, "%s: not the transcript of run %s", t->path, t->run_id); break; }
            if (!header) { snprintf(why, why_size, "%s line 1: not a vflclip transcript header", t->path); break; }
            *good = ftell(f);
            continue;
        }
        if (cJSON_GetObjectItemCaseSensitive(o, "end")) {
            cJSON_Delete(o);
            t->signed_ = 1;
            rc = vf_fail(err, "%s: the transcript is already signed", t->path);
            break;
        }
        uint64_t seq, task, step;
        const char *sender = vf_transcript_str(o, "sender"), *receiver = vf_transcript_str(o, "receiver"),
                   *kind = vf_transcript_str(o, "kind"), *sha = vf_transcript_str(o, "sha256"), *loss = vf_transcript_str(o, "loss");
        if (vf_transcript_num(o, "seq", &seq) || vf_transcript_num(o, "task", &task) || vf_transcript_num(o, "step", &step) ||
            !sender || !receiver || !kind || !sha || !loss || !chain) {
            snprintf(why, why_size, "%s line %llu: a field is missing or malformed", t->path, (unsigned long long)lineno);
        } else if (seq != t->entries + 1) {
            snprintf(why, why_size, "%s line %llu: entry %llu where %llu was due (entries were dropped or moved)", t->path,
                     (unsigned long long)lineno, (unsigned long long)seq, (unsigned long long)t->entries + 1);
        } else {
            unsigned char h[32];
            char hex[65];
            memcpy(h, t->head, 32);
            vf_transcript_chain_step(h, seq, sender, receiver, task, kind, step, sha, loss);
            vf_sha256_hex(h, hex);
            if (strcmp(hex, chain)) {
                snprintf(why, why_size, "%s line %llu: the hash chain breaks here", t->path, (unsigned long long)lineno);
            } else {
                memcpy(t->head, h, 32);
                t->entries = seq;
                if (seq == 1) snprintf(t->first_kind, sizeof t->first_kind, "%s", kind);
                if (mark->present && seq == mark->entries) memcpy(chain_at_mark, hex, 65);
                *good = ftell(f);
            }
        }
        cJSON_Delete(o);
        if (why[0]) break;
    }
    free(line);
    fclose(f);
    if (rc || why[0] || !mark->present || !mark->head[0]) return rc;
    if (t->entries < mark->entries)
        snprintf(why, why_size, "%s has %llu entries but %s.head (written at the last checkpoint) records %llu: "
                 "the transcript was truncated (its last %llu entries are missing)", t->path, (unsigned long long)t->entries,
                 t->path, (unsigned long long)mark->entries, (unsigned long long)(mark->entries - t->entries));
    else if (mark->entries > 0 && strcmp(chain_at_mark, mark->head))
        snprintf(why, why_size, "%s: entry %llu has chain %.16s but %s.head records %.16s: the transcript was rewritten",
                 t->path, (unsigned long long)mark->entries, chain_at_mark, t->path, mark->head);
    return 0;
}

/* A damaged transcript the operator chose to go on from is kept whole. */
static int keep_evidence(const vf_transcript *t, vf_error *err) {
    char *text;
    size_t len;
    char dst[4500];
    snprintf(dst, sizeof dst, "%s.damaged-%lld", t->path, (long long)time(NULL));
    if (vf_read_file(t->path, &text, &len, err)) return -1;
    int rc = vf_write_atomic(dst, text, len, err);
    free(text);
    return rc;
}

int vf_transcript_open_ex(vf_transcript *t, const char *path, const char *run_id, int flags, vf_error *err) {
    memset(t, 0, sizeof *t);
    snprintf(t->path, sizeof t->path, "%s", path);
    snprintf(t->run_id, sizeof t->run_id, "%s", run_id);
    genesis(run_id, t->head);
    int exists = access(path, F_OK) == 0;
    char why[600] = "", why_mark[600] = "";
    long good = 0;
    head_mark mark;
    /* A damaged head mark alone must not cost the lines of a sound transcript:
     * the file is scanned in full either way. */
    read_head_mark(t, &mark, why_mark, sizeof why_mark);
    if (!exists) {
        if (flags & VF_TRANSCRIPT_RESUME) snprintf(why, sizeof why, "%s is missing", path);
    } else if (scan(t, &mark, &good, why, sizeof why, err)) {
        return -1;
    }
    if (!why[0] && why_mark[0]) snprintf(why, sizeof why, "%s", why_mark);
    if (!why[0] && (flags & VF_TRANSCRIPT_RESUME)) {
        if (!mark.present)
            snprintf(why, sizeof why, "%s.head is missing (it is written when the run starts)", path);
        else if (strcmp(t->first_kind, VF_TRANSCRIPT_RUN_START) && strcmp(t->first_kind, VF_TRANSCRIPT_OPERATOR_DECISION))
            snprintf(why, sizeof why, "%s does not start with the run's start record (seq 1 is %s)", path,
                     t->first_kind[0] ? t->first_kind : "absent");
    }
    if (why[0]) {
        if (!(flags & VF_TRANSCRIPT_ACCEPT_DAMAGE)) return vf_fail(err, "%s", why);
        if (exists && keep_evidence(t, err)) return -1;
        snprintf(t->damage, sizeof t->damage, "%s", why);
        if (good == 0) {   /* nothing usable: a new chain */
            t->entries = 0;
            t->first_kind[0] = 0;
            genesis(run_id, t->head);
        }
    }
    if (exists && truncate(path, good)) return vf_fail_errno(err, path);
    t->f = fopen(path, "a");
    if (!t->f) return vf_fail_errno(err, path);
    if (ftell(t->f) == 0) {
        fprintf(t->f, "{\"transcript\":\"vflclip v1\",\"run\":\"%s\"}\n", run_id);
        fflush(t->f);
    }
    return 0;
}

int vf_transcript_open(vf_transcript *t, const char *path, const char *run_id, vf_error *err) {
    return vf_transcript_open_ex(t, path, run_id, 0, err);
}

int vf_transcript_commit(vf_transcript *t, vf_error *err) {
    if (!t->f) return vf_fail(err, "transcript is not open");
    if (fflush(t->f) || fsync(fileno(t->f))) return vf_fail_errno(err, t->path);
    char hp[4500], head[65], text[256];
    head_path(t, hp, sizeof hp);
    vf_sha256_hex(t->head, head);
    int n = snprintf(text, sizeof text, "{\"run\":\"%s\",\"entries\":%llu,\"head\":\"%s\"}\n", t->run_id,
                     (unsigned long long)t->entries, head);
    return vf_write_atomic(hp, text, (size_t)n, err);
}

int vf_transcript_append(vf_transcript *t, const vf_transcript_entry *e, vf_error *err) {
    if (!t->f) return vf_fail(err, "transcript is not open");
    char sha[65], loss[32] = "-", chain[65];
    vf_sha256_hex(e->sha256, sha);
    if (e->has_loss) snprintf(loss, sizeof loss, "%.9g", e->loss);
    uint64_t seq = ++t->entries;
    if (seq == 1) snprintf(t->first_kind, sizeof t->first_kind, "%s", e->kind);
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
    vf_sha256(text, (size_t)n, out);
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
    /* The run_end record: the signed head covers it, so a transcript cut at
     * the end cannot pass for a whole one without the aggregator's key. */
    vf_peer_identity me;
    if (vf_pki_identity_from_crt(&crt, &me, err)) { vf_error_prefix(err, "%s", cert_path); goto out; }
    vf_transcript_entry end = {.sender = me.serial_hex, .receiver = "-", .kind = VF_TRANSCRIPT_RUN_END};
    if (vf_transcript_append(t, &end, err)) goto out;
    if (vf_pki_rng_init(&rng, err)) goto out;
    rng_ok = 1;
    vf_sha256_hex(t->head, head);
    vf_transcript_signed_hash(t->run_id, t->entries, head, hash);
    int ret = vf_mbedtls_pk_sign(&key, MBEDTLS_MD_SHA256, hash, 0, sig, sizeof sig, &sig_len, mbedtls_ctr_drbg_random, &rng.drbg);
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
    memset(l, 0, sizeof *l);
    l->f = fopen(path, "a");
    if (!l->f) return vf_fail_errno(err, path);
    if (ftell(l->f) == 0) fprintf(l->f, "{\"party\":\"%s\",\"serial\":\"%s\"}\n", name, serial);
    fflush(l->f);
    return 0;
}

/* The run a message from the aggregator names (Welcome, RunSetup), or NULL. */
static const char *names_run(const ProtobufCMessage *m) {
    if (m->descriptor != &vflclip__v1__aggregator_message__descriptor) return NULL;
    const Vflclip__V1__AggregatorMessage *a = (const void *)m;
    if (a->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME && a->welcome)
        return a->welcome->run_id ? a->welcome->run_id : "";
    if (a->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_RUN_SETUP && a->run_setup)
        return a->run_setup->run_id ? a->run_setup->run_id : "";
    return NULL;
}

void vf_party_log_record(vf_party_log *l, int sent, const ProtobufCMessage *m, const uint8_t *raw, size_t raw_len) {
    if (!l || !l->f) return;
    const char *run = sent ? NULL : names_run(m);
    if (run && (!l->run_known || strncmp(l->run, run, sizeof l->run - 1))) {
        /* The run id comes off the wire: written through cJSON, which escapes it. */
        cJSON *o = cJSON_CreateObject();
        char *text = o && cJSON_AddStringToObject(o, "run", run) ? cJSON_PrintUnformatted(o) : NULL;
        if (text) fprintf(l->f, "%s\n", text);
        free(text);
        cJSON_Delete(o);
        snprintf(l->run, sizeof l->run, "%s", run);
        l->run_known = 1;
    }
    unsigned char h[32];
    char hex[65];
    if (raw) vf_sha256(raw, raw_len, h);
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
