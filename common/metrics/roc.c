/* roc: one-vs-rest ROC points per class from scores or from the binned
 * counts of metrics/eval_counts.h; JSON output via cJSON. */
#include "metrics/roc.h"
#include "metrics/eval_counts.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { float score; int positive; } roc_item;

static int cmp_desc(const void *a, const void *b) {
    float x = ((const roc_item *)a)->score, y = ((const roc_item *)b)->score;
    return (x < y) - (x > y);
}

void vf_roc_free(vf_roc *r) {
    if (r->curve)
        for (int k = 0; k < r->n_classes; k++) {
            free(r->curve[k].fpr);
            free(r->curve[k].tpr);
            free(r->curve[k].threshold);
        }
    free(r->curve);
    memset(r, 0, sizeof *r);
}

static int roc_alloc(vf_roc *r, int C, vf_error *err) {
    memset(r, 0, sizeof *r);
    if (C < 1) return vf_fail(err, "roc: %d classes", C);
    r->curve = calloc(C, sizeof *r->curve);
    if (!r->curve) return vf_fail(err, "roc: out of memory for %d classes", C);
    r->n_classes = C;
    return 0;
}

static int curve_alloc(vf_roc_curve *c, int cap, vf_error *err) {
    c->fpr = malloc((size_t)cap * sizeof *c->fpr);
    c->tpr = malloc((size_t)cap * sizeof *c->tpr);
    c->threshold = malloc((size_t)cap * sizeof *c->threshold);
    if (!c->fpr || !c->tpr || !c->threshold) return vf_fail(err, "roc: out of memory for %d points", cap);
    return 0;
}

/* Appends the point after the cumulative counts (fp, tp); area2 collects
 * twice the trapezoid area in count units. */
static void add_point(vf_roc_curve *c, int64_t fp, int64_t tp, double thr, int64_t *prev_fp, int64_t *prev_tp,
                      int64_t *area2) {
    *area2 += (fp - *prev_fp) * (tp + *prev_tp);
    c->fpr[c->n_points] = (double)fp / (double)c->negatives;
    c->tpr[c->n_points] = (double)tp / (double)c->positives;
    c->threshold[c->n_points] = thr;
    c->n_points++;
    *prev_fp = fp;
    *prev_tp = tp;
}

int vf_roc_from_scores(vf_roc *r, const float *scores, const int *labels, int N, int C, vf_error *err) {
    if (roc_alloc(r, C, err)) return -1;
    if (N <= 0) return vf_fail(err, "roc: no samples");
    for (int i = 0; i < N; i++) {
        if (labels[i] < 0 || labels[i] >= C)
            return vf_fail(err, "roc: label %d of sample %d is outside 0..%d", labels[i], i, C - 1);
        for (int k = 0; k < C; k++)
            if (!isfinite(scores[(size_t)i * C + k])) return vf_fail(err, "roc: score [%d][%d] is not finite", i, k);
    }
    roc_item *it = malloc((size_t)N * sizeof *it);
    if (!it) return vf_fail(err, "roc: out of memory for %d samples", N);
    int rc = 0;
    for (int k = 0; k < C && !rc; k++) {
        vf_roc_curve *c = &r->curve[k];
        for (int i = 0; i < N; i++) {
            it[i].score = scores[(size_t)i * C + k];
            it[i].positive = labels[i] == k;
            c->positives += it[i].positive;
        }
        c->negatives = N - c->positives;
        c->auc = NAN;
        if (c->positives == 0 || c->negatives == 0) continue;
        if ((rc = curve_alloc(c, N + 1, err))) break;
        qsort(it, N, sizeof *it, cmp_desc);
        int64_t fp = 0, tp = 0, pfp = 0, ptp = 0, area2 = 0;
        add_point(c, 0, 0, INFINITY, &pfp, &ptp, &area2);
        for (int i = 0; i < N;) {
            int j = i;
            while (j < N && it[j].score == it[i].score) { tp += it[j].positive; fp += !it[j].positive; j++; }
            add_point(c, fp, tp, it[i].score, &pfp, &ptp, &area2);
            i = j;
        }
        c->auc = (double)area2 / (2.0 * (double)c->positives * (double)c->negatives);
    }
    free(it);
    return rc;
}

int vf_roc_from_counts(vf_roc *r, const uint64_t *counts, int C, const vf_auc_grid *grid, vf_error *err) {
    vf_auc_grid def;
    if (!grid) vf_auc_grid_default(&def, C);
    if (roc_alloc(r, C, err)) return -1;
    r->from_histogram = 1;
    /* the layout of metrics/eval_counts.h */
    const uint64_t n = counts[0];
    const uint64_t *confusion = counts + 1;
    const uint64_t *pos_hist = confusion + (size_t)C * C, *neg_hist = pos_hist + (size_t)C * VF_AUC_BINS;
    for (int k = 0; k < C; k++) {
        vf_roc_curve *c = &r->curve[k];
        const uint64_t *ph = pos_hist + (size_t)k * VF_AUC_BINS, *nh = neg_hist + (size_t)k * VF_AUC_BINS;
        uint64_t row = 0, P = 0, Ng = 0;
        for (int j = 0; j < C; j++) row += confusion[(size_t)k * C + j];
        for (int b = 0; b < VF_AUC_BINS; b++) { P += ph[b]; Ng += nh[b]; }
        if (P != row || P + Ng != n || P > INT64_MAX / 4 || Ng > INT64_MAX / 4)
            return vf_fail(err, "roc: class %d's histograms hold %llu positives and %llu negatives, but the confusion "
                           "matrix has %llu of the class among %llu examples", k, (unsigned long long)P,
                           (unsigned long long)Ng, (unsigned long long)row, (unsigned long long)n);
        c->positives = (int64_t)P;
        c->negatives = (int64_t)Ng;
        c->auc = NAN;
        if (P == 0 || Ng == 0) continue;
        if (curve_alloc(c, VF_AUC_BINS + 1, err)) return -1;
        int64_t fp = 0, tp = 0, pfp = 0, ptp = 0, area2 = 0;
        add_point(c, 0, 0, INFINITY, &pfp, &ptp, &area2);
        for (int b = VF_AUC_BINS - 1; b >= 0; b--) {
            if (!ph[b] && !nh[b]) continue;
            tp += (int64_t)ph[b];
            fp += (int64_t)nh[b];
            add_point(c, fp, tp, vf_auc_grid_bin_low(grid ? grid : &def, k, b, VF_AUC_BINS), &pfp, &ptp, &area2);
        }
        /* area2 <= 2 * P * N can pass int64 only for counts beyond any data set; long double keeps the ratio */
        c->auc = (double)((long double)area2 / (2.0L * (long double)P * (long double)Ng));
    }
    return 0;
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

char *vf_roc_to_json(const vf_roc *r, const char *const *class_names) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "source", r->from_histogram ? "histogram" : "scores");
    cJSON *arr = cJSON_AddArrayToObject(o, "classes");
    for (int k = 0; arr && k < r->n_classes; k++) {
        const vf_roc_curve *c = &r->curve[k];
        cJSON *co = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, co);
        char name[32];
        snprintf(name, sizeof name, "class %d", k);
        cJSON_AddStringToObject(co, "name", class_names ? class_names[k] : name);
        cJSON_AddItemToObject(co, "auc", num_or_null(c->auc));
        cJSON_AddNumberToObject(co, "positives", (double)c->positives);
        cJSON_AddNumberToObject(co, "negatives", (double)c->negatives);
        cJSON *f = cJSON_AddArrayToObject(co, "fpr"), *t = cJSON_AddArrayToObject(co, "tpr");
        cJSON *th = cJSON_AddArrayToObject(co, "thresholds");
        for (int i = 0; i < c->n_points; i++) {
            cJSON_AddItemToArray(f, cJSON_CreateNumber(c->fpr[i]));
            cJSON_AddItemToArray(t, cJSON_CreateNumber(c->tpr[i]));
            cJSON_AddItemToArray(th, num_or_null(c->threshold[i]));
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

int vf_roc_write_json(const char *path, const vf_roc *r, const char *const *class_names, vf_error *err) {
    char *s = vf_roc_to_json(r, class_names);
    if (!s) return vf_fail(err, "%s: out of memory", path);
    size_t n = strlen(s);
    s[n] = '\n';   /* replaces the NUL; the length is passed */
    int rc = vf_write_atomic(path, s, n + 1, err);
    free(s);
    return rc;
}
