/* secure_share: the image party's answers to SecureSumTasks (see
 * secure_share.h). */
#include "secure_share.h"
#include "coop/party_share.h"
#include "daemon/peer_limits.h"
#include "data/dataset.h"
#include "metrics/metrics.h"
#include "pki/pki.h"
#include "rpc/rpc.h"
#include "secagg/mask_key.h"
#include "secagg/masked_sum.h"
#include "util/log.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PEERS 256

/* A peer key checked once: its name, key and certificate as relayed. */
typedef struct checked_peer {
    char name[128];
    uint8_t pub[VF_MASK_PUB_LEN];
} checked_peer;

static struct {
    int open;
    char name[128], key_path[4096];
    uint8_t *cert_der;
    size_t cert_len;
    mbedtls_x509_crt ca;
    vf_mask_key key;                 /* this connection's */
    uint64_t last_sum_id;            /* of this key: a sum_id must grow */
    checked_peer checked[MAX_PEERS];
    int n_checked;
    vf_party_share ps;
    int ps_ready, ps_C, ps_B;
    float ps_clip;
    uint64_t *vec;
    size_t vec_cap;
    float *probs;
    size_t probs_cap;
    char *site_json;
    const char *peer_names[MAX_PEERS];
    uint8_t peer_pubs[MAX_PEERS][VF_MASK_PUB_LEN];
} g_sec;

int ip_secure_open(const char *cert_path, const char *key_path, const char *ca_path, vf_error *err) {
    mbedtls_x509_crt own;
    mbedtls_x509_crt_init(&own);
    mbedtls_x509_crt_init(&g_sec.ca);
    vf_peer_identity id;
    if (mbedtls_x509_crt_parse_file(&own, cert_path) != 0) {
        mbedtls_x509_crt_free(&own);
        return vf_fail(err, "%s: cannot read this party's certificate", cert_path);
    }
    int rc = vf_pki_identity_from_crt(&own, &id, err);
    if (rc == 0) {
        g_sec.cert_len = own.raw.len;
        g_sec.cert_der = malloc(own.raw.len);
        if (!g_sec.cert_der) rc = vf_fail(err, "out of memory");
        else memcpy(g_sec.cert_der, own.raw.p, own.raw.len);
    }
    mbedtls_x509_crt_free(&own);
    if (rc) return -1;
    if (mbedtls_x509_crt_parse_file(&g_sec.ca, ca_path) != 0) return vf_fail(err, "%s: cannot read the federation CA", ca_path);
    snprintf(g_sec.name, sizeof g_sec.name, "%s", id.name);
    snprintf(g_sec.key_path, sizeof g_sec.key_path, "%s", key_path);
    g_sec.open = 1;
    return 0;
}

void ip_secure_close(void) {
    if (!g_sec.open) return;
    vf_mask_key_wipe(&g_sec.key);
    mbedtls_x509_crt_free(&g_sec.ca);
    free(g_sec.cert_der);
    if (g_sec.ps_ready) vf_party_share_free(&g_sec.ps);
    free(g_sec.vec);
    free(g_sec.probs);
    free(g_sec.site_json);
    memset(&g_sec, 0, sizeof g_sec);
}

int ip_secure_hello(Vflclip__V1__Hello *h, vf_error *err) {
    if (!g_sec.open) return 0;
    vf_mask_key_wipe(&g_sec.key);
    if (vf_mask_key_new(&g_sec.key, g_sec.name, g_sec.key_path, err)) return -1;
    g_sec.last_sum_id = 0;   /* a new key: its masks have never been used */
    h->mask_public_key = (ProtobufCBinaryData){VF_MASK_PUB_LEN, g_sec.key.pub};
    h->mask_key_signature = (ProtobufCBinaryData){g_sec.key.sig_len, g_sec.key.sig};
    h->certificate = (ProtobufCBinaryData){g_sec.cert_len, g_sec.cert_der};
    return 0;
}

/* The other participants' keys, each checked against the federation CA
 * (once per name and key), into g_sec.peer_names / peer_pubs. */
static int check_participants(const Vflclip__V1__SecureSumTask *st, int *n_peers, vf_error *err) {
    int self = 0, n = 0;
    if (st->n_participants < 1 || st->n_participants > MAX_PEERS)
        return vf_fail(err, "secure sum of %zu participants (1..%d)", st->n_participants, MAX_PEERS);
    for (size_t i = 0; i < st->n_participants; i++) {
        const Vflclip__V1__MaskPeer *p = st->participants[i];
        if (vf_peer_check_name("participant name", p->name, err)) return -1;
        if (p->public_key.len != VF_MASK_PUB_LEN) return vf_fail(err, "participant '%s' has a %zu-byte mask key", p->name, p->public_key.len);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(st->participants[j]->name, p->name)) return vf_fail(err, "participant '%s' is listed twice", p->name);
        if (!strcmp(p->name, g_sec.name)) {
            if (memcmp(p->public_key.data, g_sec.key.pub, VF_MASK_PUB_LEN))
                return vf_fail(err, "the aggregator relays a mask key for this party ('%s') that is not this connection's", p->name);
            self = 1;
            continue;
        }
        int known = 0;
        for (int c = 0; c < g_sec.n_checked && !known; c++)
            known = !strcmp(g_sec.checked[c].name, p->name) && !memcmp(g_sec.checked[c].pub, p->public_key.data, VF_MASK_PUB_LEN);
        if (!known) {
            vf_mask_peer mp = {p->name, p->public_key.data, p->public_key.len, p->signature.data, p->signature.len,
                               p->certificate.data, p->certificate.len};
            if (vf_mask_peer_verify(&mp, &g_sec.ca, err)) return -1;
            checked_peer *c = &g_sec.checked[g_sec.n_checked < MAX_PEERS ? g_sec.n_checked++ : MAX_PEERS - 1];
            snprintf(c->name, sizeof c->name, "%s", p->name);
            memcpy(c->pub, p->public_key.data, VF_MASK_PUB_LEN);
            vf_log(VF_INFO, "event=mask_key_accepted peer=%s detail=\"signed by its image-party certificate under the federation CA\"",
                   p->name);
        }
        g_sec.peer_names[n] = p->name;
        memcpy(g_sec.peer_pubs[n], p->public_key.data, VF_MASK_PUB_LEN);
        n++;
    }
    if (!self) return vf_fail(err, "this party ('%s') is not among the sum's participants", g_sec.name);
    *n_peers = n;
    return 0;
}

static int ensure(int C, int D, int B, float clip, size_t len, int n_probs, vf_error *err) {
    if (!g_sec.ps_ready || g_sec.ps_C != C || g_sec.ps.D != D || g_sec.ps_B < B || g_sec.ps_clip != clip) {
        if (g_sec.ps_ready) vf_party_share_free(&g_sec.ps);
        g_sec.ps_ready = 0;
        int B_max = B > 256 ? B : 256;
        if (vf_party_share_init(&g_sec.ps, C, D, B_max, clip, err)) return -1;
        g_sec.ps_ready = 1;
        g_sec.ps_C = C;
        g_sec.ps_B = B_max;
        g_sec.ps_clip = clip;
    }
    if (g_sec.vec_cap < len) {
        free(g_sec.vec);
        g_sec.vec = malloc(len * sizeof *g_sec.vec);
        g_sec.vec_cap = g_sec.vec ? len : 0;
        if (!g_sec.vec) return vf_fail(err, "out of memory for a share of %zu words", len);
    }
    size_t np = (size_t)n_probs * C;
    if (g_sec.probs_cap < np) {
        free(g_sec.probs);
        g_sec.probs = malloc(np * sizeof *g_sec.probs);
        g_sec.probs_cap = g_sec.probs ? np : 0;
        if (!g_sec.probs) return vf_fail(err, "out of memory for %d scores", n_probs);
    }
    return 0;
}

/* This site's own metrics of split sp from the scores just computed. */
static int site_metrics(const vf_embedded_split *sp, int C, double loss_sum, vf_error *err) {
    vf_metrics m;
    if (vf_metrics_init(&m, C, err)) return -1;
    int rc = vf_metrics_compute(&m, g_sec.probs, sp->labels, sp->n, err);
    if (rc == 0) {
        m.loss = loss_sum / sp->n;
        free(g_sec.site_json);
        g_sec.site_json = vf_metrics_to_json(&m, NULL, 0);
        if (!g_sec.site_json) rc = vf_fail(err, "out of memory");
    }
    vf_metrics_free(&m);
    return rc;
}

int ip_secure_answer(const Vflclip__V1__SecureSumTask *st, const vf_embedded_split split[3], Vflclip__V1__MaskedShare *out,
                     int *grpc_code, vf_error *err) {
    *grpc_code = VF_GRPC_INVALID_ARGUMENT;
    if (!g_sec.open) return vf_fail(err, "secure sums are not set up on this party");
    if (vf_peer_check_name("run id", st->run_id, err)) return -1;
    if (st->sum_id <= g_sec.last_sum_id) {
        *grpc_code = VF_GRPC_FAILED_PRECONDITION;
        return vf_fail(err, "secure sum %" PRIu64 " does not follow %" PRIu64 ": masks are never used twice", st->sum_id,
                       g_sec.last_sum_id);
    }
    const Vflclip__V1__Tensor *t = st->text_features;
    const int D = split[0].D;
    if (!t || t->n_shape != 2 || t->shape[1] != (uint32_t)D || t->shape[0] < 2 || t->shape[0] > VF_PEER_MAX_CLASSES ||
        t->n_data != (size_t)t->shape[0] * D)
        return vf_fail(err, "secure sum %" PRIu64 ": text features are not (C, %d)", st->sum_id, D);
    const int C = (int)t->shape[0];
    for (size_t i = 0; i < t->n_data; i++)
        if (!isfinite(t->data[i])) return vf_fail(err, "secure sum %" PRIu64 ": text feature %zu is not finite", st->sum_id, i);
    if (!isfinite(st->logit_scale) || !(st->clip >= 0) || !isfinite(st->clip))
        return vf_fail(err, "secure sum %" PRIu64 ": logit scale %g / clip %g", st->sum_id, st->logit_scale, st->clip);
    int n_peers = 0;
    if (check_participants(st, &n_peers, err)) {
        *grpc_code = VF_GRPC_PERMISSION_DENIED;
        return -1;
    }
    vf_mask_nonce nonce = {.run_id = st->run_id, .step = st->sum_id, .attempt = 0};
    size_t len;
    out->site_metrics_json = "";
    if (st->kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_STEP) {
        const vf_embedded_split *tr = &split[0];
        if (st->batch_size < 1 || st->batch_size > VF_PEER_MAX_SPLIT_EXAMPLES || st->n_indices > st->batch_size)
            return vf_fail(err, "secure sum %" PRIu64 ": %zu own examples of a batch of %u", st->sum_id, st->n_indices, st->batch_size);
        for (size_t i = 0; i < st->n_indices; i++)
            if (st->indices[i] >= (uint32_t)tr->n)
                return vf_fail(err, "secure sum %" PRIu64 ": example %u of %d", st->sum_id, st->indices[i], tr->n);
        len = vf_party_share_step_len(C, D);
        if (ensure(C, D, (int)st->n_indices, st->clip, len, 0, err)) return -1;
        nonce.purpose = VF_MASK_PURPOSE_STEP;
        if (vf_party_share_step_vector(&g_sec.ps, tr, (const int *)st->indices, (int)st->n_indices, (int)st->batch_size, t->data,
                                       st->logit_scale, g_sec.vec, err))
            return -1;
    } else if (st->kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL ||
               st->kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL_RANGE) {
        vf_split k;
        if (vf_split_parse(st->split, &k)) return vf_fail(err, "secure sum %" PRIu64 ": unknown split '%s'", st->sum_id, st->split);
        const vf_embedded_split *sp = &split[k];
        const int range = st->kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL_RANGE;
        len = range ? vf_party_share_range_len(C) : vf_party_share_eval_len(C);
        if (ensure(C, D, 0, 0, len, sp->n, err)) return -1;
        nonce.purpose = (range ? 3u : VF_MASK_PURPOSE_EVAL) | (uint32_t)k << 8;
        for (int i = 0; i < sp->n; i++)
            if (sp->labels[i] < 0 || sp->labels[i] >= C)
                return vf_fail(err, "%s example %d has label %d; the run has %d classes", st->split, i, sp->labels[i], C);
        if (range) {
            if (vf_party_share_range_vector(&g_sec.ps, sp, t->data, st->logit_scale, g_sec.probs, g_sec.vec, err)) return -1;
        } else {
            vf_auc_grid grid;
            if (st->n_grid_mean != (size_t)C || st->n_grid_sd != (size_t)C)
                return vf_fail(err, "secure sum %" PRIu64 ": a histogram grid of %zu/%zu classes for %d", st->sum_id, st->n_grid_mean,
                               st->n_grid_sd, C);
            if (vf_auc_grid_set(&grid, C, st->grid_mean, st->grid_sd, err)) return vf_error_prefix(err, "secure sum %" PRIu64, st->sum_id);
            if (vf_party_share_eval_vector(&g_sec.ps, sp, t->data, st->logit_scale, &grid, g_sec.probs, g_sec.vec, err))
                return -1;
        }
        if (!range && st->site_metrics && sp->n > 0) {
            if (site_metrics(sp, C, vf_party_share_read_eval_loss(g_sec.vec, C), err)) return -1;
            out->site_metrics_json = g_sec.site_json;
        }
    } else {
        return vf_fail(err, "secure sum %" PRIu64 " of unknown kind %d", st->sum_id, (int)st->kind);
    }
    if (vf_mask_vector(g_sec.vec, len, &g_sec.key, g_sec.peer_names, (const uint8_t(*)[VF_MASK_PUB_LEN])g_sec.peer_pubs, n_peers,
                       &nonce, err)) {
        *grpc_code = VF_GRPC_INTERNAL;
        return -1;
    }
    g_sec.last_sum_id = st->sum_id;
    out->sum_id = st->sum_id;
    out->n_values = len;
    out->values = g_sec.vec;
    return 0;
}
