/* secure_sum: [run] loss_at = image-parties on the aggregator.  The
 * training session's LOSS (a batch's loss and dL/dT) and EVAL (a split's
 * counts) actions become one SecureSumTask to each connected image party of
 * the run; each answers a MaskedShare, a vector masked with pairwise masks
 * of all participants (secagg/masked_sum.h), and only their sum, which this
 * file adds up, is readable.  No embedding, label, score or single party's
 * gradient reaches the aggregator.
 *
 * Who takes part: every image party of the run that is connected, whether
 * or not the sum needs its data, so a batch drawn from one hospital is still
 * summed with the others' masks.  A party whose data the sum needs (its
 * examples are in the batch; it holds some of the split) must be connected,
 * else the run pauses for it.  A participant that leaves before it answered
 * voids the sum: it is asked again, with a new sum_id (fresh masks), of the
 * parties connected then. */
#include "agg.h"
#include "coop/party_share.h"
#include "daemon/peer_limits.h"
#include "metrics/eval_counts.h"
#include "secagg/masked_sum.h"
#include "util/fileio.h"
#include "util/log.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const split_names[3] = {"train", "val", "test"};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void agg_sum_reset(void) {
    agg_run *r = &g_agg.run;
    r->sum.active = 0;
    r->sum.n_part = r->sum.n_answered = 0;
    r->sum.grid_ready = 0;
    if (r->wait == WAIT_SUM) r->wait = WAIT_NONE;
}

void agg_sum_free(void) {
    agg_sum *s = &g_agg.run.sum;
    free(s->acc);
    free(s->own);
    free(s->grad);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < AGG_MAX_PARTIES; i++) free(s->site_json[k][i]);
    memset(s, 0, sizeof *s);
}

/* Does the sum need image party i's data? */
static int needs(const agg_run *r, vf_train_action a, int i) {
    const agg_img *im = &r->img[i];
    if (a == VF_TRAIN_EVAL) return im->n[r->sess.req_split] > 0;
    for (int b = 0; b < r->sess.req_B; b++) {
        uint64_t g = (uint64_t)r->sess.req_idx[b];
        if (g >= im->base[0] && g < im->base[0] + im->n[0]) return 1;
    }
    return 0;
}

/* The positions of party i's own examples in the batch, in batch order. */
static int own_indices(const agg_run *r, int i, uint32_t *out) {
    const agg_img *im = &r->img[i];
    int n = 0;
    for (int b = 0; b < r->sess.req_B; b++) {
        uint64_t g = (uint64_t)r->sess.req_idx[b];
        if (g >= im->base[0] && g < im->base[0] + im->n[0]) out[n++] = (uint32_t)(g - im->base[0]);
    }
    return n;
}

static int ensure_buffers(agg_sum *s, size_t len, int batch, vf_error *err) {
    if (s->len < len || !s->acc) {
        free(s->acc);
        s->acc = malloc(len * sizeof *s->acc);
        if (!s->acc) return vf_fail(err, "out of memory for a secure sum of %zu words", len);
    }
    if (!s->own) {
        s->own = malloc((size_t)(batch > 0 ? batch : 1) * sizeof(uint32_t));
        s->grad = malloc((size_t)g_agg.run.C * g_agg.run.D * sizeof(float));
        if (!s->own || !s->grad) return vf_fail(err, "out of memory");
    }
    s->len = len;
    memset(s->acc, 0, len * sizeof *s->acc);
    return 0;
}

void agg_sum_start(vf_train_action a) {
    agg_run *r = &g_agg.run;
    agg_sum *s = &r->sum;
    vf_error err;
    const int C = r->C, D = r->D;
    agg_party *who[AGG_MAX_PARTIES];
    s->n_part = s->n_answered = 0;
    for (int i = 0; i < r->n_img; i++) {
        agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, r->img[i].name);
        if (!p && needs(r, a, i))
            return agg_run_pause("waiting for image party '%s': %s", r->img[i].name,
                                 a == VF_TRAIN_EVAL ? "it holds examples of the split to evaluate" : "its examples are in the step's batch");
        if (!p) continue;
        who[s->n_part] = p;
        s->answered[s->n_part] = 0;
        s->part[s->n_part++] = i;
    }
    if (s->n_part == 0) return agg_run_pause("waiting for the image parties");
    /* an evaluation is two sums: where the scores lie (RANGE), then the histograms on a grid that fits them */
    size_t len;
    if (a == VF_TRAIN_LOSS) {
        s->kind = VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_STEP;
        len = vf_party_share_step_len(C, D);
    } else if (!s->grid_ready) {
        s->kind = VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL_RANGE;
        len = vf_party_share_range_len(C);
    } else {
        s->kind = VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL;
        len = vf_party_share_eval_len(C);
    }
    if (ensure_buffers(s, len, r->sess.batcher.batch_size, &err)) return agg_run_fail("%s", err.msg);
    if (s->min_participants == 0 || s->n_part < s->min_participants) s->min_participants = s->n_part;
    if (s->n_part == 1 && s->sums == 0)
        vf_log(VF_WARN, "event=secure_sum_single_party run=%s peer=%s detail=\"with one image party the sum is its own "
               "values: loss_at = image-parties adds no protection against the aggregator\"", r->id, who[0]->id.name);

    /* what every participant is told: the others' keys, T, the logit scale */
    Vflclip__V1__MaskPeer peers[AGG_MAX_PARTIES], *peer_ptrs[AGG_MAX_PARTIES];
    for (int j = 0; j < s->n_part; j++) {
        vflclip__v1__mask_peer__init(&peers[j]);
        peers[j].name = who[j]->id.name;
        peers[j].public_key = (ProtobufCBinaryData){who[j]->mask_pub_len, who[j]->mask_pub};
        peers[j].signature = (ProtobufCBinaryData){who[j]->mask_sig_len, who[j]->mask_sig};
        peers[j].certificate = (ProtobufCBinaryData){who[j]->mask_cert_len, who[j]->mask_cert};
        peer_ptrs[j] = &peers[j];
    }
    uint32_t shape[2] = {(uint32_t)C, (uint32_t)D};
    Vflclip__V1__Tensor t = VFLCLIP__V1__TENSOR__INIT;
    t.n_shape = 2;
    t.shape = shape;
    t.n_data = (size_t)C * D;
    t.data = r->sess.text;
    s->sum_id = ++g_agg.last_sum_id;
    s->active = 1;
    r->wait = WAIT_SUM;
    r->task = 0;
    if (a == VF_TRAIN_LOSS && r->sess.req_batch == 0) s->t0 = now_s();
    for (int j = 0; j < s->n_part; j++) {
        Vflclip__V1__SecureSumTask st = VFLCLIP__V1__SECURE_SUM_TASK__INIT;
        st.kind = (Vflclip__V1__SecureSumKind)s->kind;
        st.sum_id = s->sum_id;
        st.step = (uint64_t)r->sess.global_step;
        st.run_id = r->id;
        st.n_participants = (size_t)s->n_part;
        st.participants = peer_ptrs;
        st.text_features = &t;
        st.logit_scale = r->sess.logit_scale;
        if (a == VF_TRAIN_LOSS) {
            st.n_indices = (size_t)own_indices(r, s->part[j], s->own);
            st.indices = s->own;
            st.batch_size = (uint32_t)r->sess.req_B;
            st.clip = r->cfg.privacy.clip;
        } else {
            st.split = (char *)split_names[r->sess.req_split];
            if (s->kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL) {
                st.site_metrics = r->sess.req_final && r->sess.req_split > 0;
                st.n_grid_mean = st.n_grid_sd = (size_t)C;
                st.grid_mean = s->grid.a;
                st.grid_sd = s->grid.b;
            }
        }
        Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
        am.task_id = agg_new_task();
        am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_SECURE_SUM;
        am.secure_sum = &st;
        size_t bytes = vflclip__v1__aggregator_message__get_packed_size(&am) + 5;
        s->bytes_out += bytes;
        s->kind_bytes[a == VF_TRAIN_EVAL] += bytes;
        if (agg_send(who[j], &am, &err)) {
            vf_log(VF_WARN, "event=secure_sum_send_failed run=%s peer=%s error=\"%s\"", r->id, who[j]->id.name, err.msg);
            /* its leaving (join_done) voids the sum and starts it again */
        }
    }
    vf_log(VF_DEBUG, "event=secure_sum_sent run=%s sum=%" PRIu64 " kind=%s step=%ld participants=%d words=%zu", r->id, s->sum_id,
           a == VF_TRAIN_LOSS ? "step" : split_names[r->sess.req_split], r->sess.global_step, s->n_part, s->len);
}

/* A site's own metrics of split k (JSON from the party): only the fields of
 * a metrics object are kept, so a party cannot write anything else into the
 * run's files. */
static char *keep_site_metrics(const char *json, const char *who, int k) {
    static const char *const keys[] = {"n", "acc", "auc", "balanced_acc", "auc_classes", "class_auc", "class_recall", "confusion", "loss"};
    cJSON *in = cJSON_Parse(json), *out = cJSON_CreateObject();
    char *text = NULL;
    if (!cJSON_IsObject(in) || !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(in, "n"))) {
        vf_log(VF_WARN, "event=site_metrics_refused run=%s peer=%s split=%s reason=\"not a metrics object\"", g_agg.run.id, who,
               split_names[k]);
    } else {
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            cJSON *v = cJSON_GetObjectItemCaseSensitive(in, keys[i]);
            if (v) cJSON_AddItemToObject(out, keys[i], cJSON_Duplicate(v, 1));
        }
        text = cJSON_PrintUnformatted(out);
    }
    cJSON_Delete(in);
    cJSON_Delete(out);
    return text;
}

static void finish(void) {
    agg_run *r = &g_agg.run;
    agg_sum *s = &r->sum;
    vf_error err;
    s->active = 0;
    s->sums++;
    if (s->kind != VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL_RANGE)   /* an evaluation's bytes count its range sum too */
        s->kind_sums[s->kind != VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_STEP]++;
    r->wait = WAIT_NONE;
    int rc;
    if (s->kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_STEP) {
        double loss;
        uint64_t clipped;
        rc = vf_party_share_read_step(s->acc, r->C, r->D, &loss, s->grad, &clipped, &err) ||
             vf_train_session_set_loss(&r->sess, loss, s->grad, clipped, &err);
        if (rc == 0 && r->sess.req_batch + 1 >= r->cfg.privacy.accumulate) s->step_s += now_s() - s->t0;
    } else if (s->kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL_RANGE) {
        if (vf_party_share_read_range(s->acc, r->C, &s->grid, &err))
            return agg_run_fail("secure sum %" PRIu64 " (score range) of %d image parties: %s", s->sum_id, s->n_part, err.msg);
        s->grid_ready = 1;
        return agg_sum_start(VF_TRAIN_EVAL);
    } else {
        s->grid_ready = 0;
        rc = vf_train_session_set_eval(&r->sess, s->acc, vf_party_share_read_eval_loss(s->acc, r->C), &s->grid, &err);
    }
    if (rc) return agg_run_fail("secure sum %" PRIu64 " of %d image parties: %s", s->sum_id, s->n_part, err.msg);
    agg_run_drive();
}

void agg_sum_on_share(agg_party *p, uint64_t task, const Vflclip__V1__MaskedShare *ms, size_t wire) {
    agg_run *r = &g_agg.run;
    agg_sum *s = &r->sum;
    vf_error err;
    if (!s->active || r->wait != WAIT_SUM || ms->sum_id != s->sum_id) return;   /* a voided sum's share */
    int j = 0;
    while (j < s->n_part && strcmp(r->img[s->part[j]].name, p->id.name)) j++;
    if (j == s->n_part) return;
    if (s->answered[j]) return agg_run_fail("image party '%s' answered secure sum %" PRIu64 " twice", p->id.name, s->sum_id);
    if (vf_peer_check_masked_share(ms, s->len, &err))
        return agg_run_fail("image party '%s', secure sum %" PRIu64 ": %s", p->id.name, s->sum_id, err.msg);
    vf_masked_sum_add(s->acc, ms->values, s->len);
    s->answered[j] = 1;
    s->n_answered++;
    s->bytes_in += wire + 5;
    s->kind_bytes[s->kind != VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_STEP] += wire + 5;
    if (s->kind == VFLCLIP__V1__SECURE_SUM_KIND__SECURE_SUM_EVAL && r->sess.req_final && r->sess.req_split > 0 &&
        ms->site_metrics_json && ms->site_metrics_json[0]) {
        int i = s->part[j], k = r->sess.req_split;
        free(s->site_json[k][i]);
        s->site_json[k][i] = keep_site_metrics(ms->site_metrics_json, p->id.name, k);
    }
    (void)task;
    if (s->n_answered == s->n_part) finish();
}

void agg_sum_on_left(agg_party *p) {
    agg_run *r = &g_agg.run;
    agg_sum *s = &r->sum;
    if (!s->active) return;
    for (int j = 0; j < s->n_part; j++) {
        if (strcmp(r->img[s->part[j]].name, p->id.name)) continue;
        if (s->answered[j]) return;   /* its share is in: the others' masks with it still cancel */
        vf_log(VF_WARN, "event=secure_sum_redone run=%s sum=%" PRIu64 " peer=%s detail=\"a participant left before it "
               "answered; the sum starts again with fresh masks over the parties connected now\"", r->id, s->sum_id, p->id.name);
        s->redone++;
        agg_sum_reset();
        agg_run_continue();
        return;
    }
}

void agg_sum_write_site_metrics(void) {
    agg_run *r = &g_agg.run;
    agg_sum *s = &r->sum;
    char path[4500];
    vf_error err;
    snprintf(path, sizeof path, "%s/site_metrics.json", r->dir);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "context_epoch", r->sess.best_epoch);
    cJSON_AddStringToObject(o, "computed_by", "each site, from its own scores (loss_at = image-parties)");
    cJSON *names = cJSON_AddArrayToObject(o, "class_names");
    for (int c = 0; c < r->C; c++) cJSON_AddItemToArray(names, cJSON_CreateString(r->class_names[c]));
    cJSON *arr = cJSON_AddArrayToObject(o, "sites");
    for (int i = 0; i < r->n_img; i++) {
        cJSON *so = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, so);
        cJSON_AddStringToObject(so, "name", r->img[i].name);
        for (int k = 1; k < 3; k++) {
            cJSON *m = s->site_json[k][i] ? cJSON_Parse(s->site_json[k][i]) : NULL;
            if (m) cJSON_AddItemToObject(so, split_names[k], m);
            else cJSON_AddNullToObject(so, split_names[k]);
        }
    }
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) {
        vf_log(VF_ERROR, "event=site_metrics_failed run=%s error=\"out of memory\"", r->id);
        return;
    }
    size_t len = strlen(text);
    text[len] = '\n';
    if (vf_write_atomic(path, text, len + 1, &err)) vf_log(VF_ERROR, "event=site_metrics_failed run=%s error=\"%s\"", r->id, err.msg);
    else vf_log(VF_INFO, "event=site_metrics run=%s sites=%d file=%s reported_by=sites", r->id, r->n_img, path);
    free(text);
}
