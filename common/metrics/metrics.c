/* metrics: ACC, AUC (ties counted half), recall, balanced accuracy and the
 * confusion matrix from scores and labels; JSON output via cJSON. */
#include "metrics/metrics.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int vf_metrics_init(vf_metrics *m, int n_classes, vf_error *err) {
    memset(m, 0, sizeof *m);
    if (n_classes < 2 || n_classes > VF_METRICS_MAX_CLASSES)
        return vf_fail(err, "metrics: %d classes (need 2..%d)", n_classes, VF_METRICS_MAX_CLASSES);
    m->n_classes = n_classes;
    m->class_auc = calloc(n_classes, sizeof *m->class_auc);
    m->class_recall = calloc(n_classes, sizeof *m->class_recall);
    m->confusion = calloc((size_t)n_classes * n_classes, sizeof *m->confusion);
    m->loss = NAN;
    if (!m->class_auc || !m->class_recall || !m->confusion) {
        vf_metrics_free(m);
        return vf_fail(err, "metrics: out of memory for %d classes", n_classes);
    }
    return 0;
}

void vf_metrics_free(vf_metrics *m) {
    free(m->class_auc);
    free(m->class_recall);
    free(m->confusion);
    m->class_auc = m->class_recall = NULL;
    m->confusion = NULL;
}

void vf_softmax_rows(const float *logits, float *probs, int N, int C) {
    for (int i = 0; i < N; i++) {
        const float *x = logits + (size_t)i * C;
        float *p = probs + (size_t)i * C;
        float mx = x[0];
        for (int k = 1; k < C; k++) if (x[k] > mx) mx = x[k];
        double sum = 0;
        for (int k = 0; k < C; k++) { p[k] = expf(x[k] - mx); sum += p[k]; }
        for (int k = 0; k < C; k++) p[k] = (float)(p[k] / sum);
    }
}

typedef struct { float score; int positive; } scored;

static int cmp_scored(const void *a, const void *b) {
    float x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x > y) - (x < y);
}

/* One-vs-rest ROC AUC by ranks: a group of tied scores shares the mean of its
 * ranks, which is exactly "ties count half" in the pairwise definition. */
static double auc_by_ranks(scored *s, int N) {
    qsort(s, N, sizeof *s, cmp_scored);
    double rank_sum_pos = 0;
    long long n_pos = 0;
    for (int i = 0; i < N;) {
        int j = i;
        int pos_in_group = 0;
        while (j < N && s[j].score == s[i].score) pos_in_group += s[j++].positive;
        double mean_rank = 0.5 * ((double)(i + 1) + (double)j);   /* ranks i+1 .. j */
        rank_sum_pos += mean_rank * pos_in_group;
        n_pos += pos_in_group;
        i = j;
    }
    long long n_neg = N - n_pos;
    if (n_pos == 0 || n_neg == 0) return NAN;
    return (rank_sum_pos - (double)n_pos * (n_pos + 1) / 2.0) / ((double)n_pos * (double)n_neg);
}

int vf_metrics_compute(vf_metrics *m, const float *scores, const int *labels, int N, vf_error *err) {
    const int C = m->n_classes;
    if (N <= 0) return vf_fail(err, "metrics: no samples to evaluate");
    for (int i = 0; i < N; i++) {
        if (labels[i] < 0 || labels[i] >= C)
            return vf_fail(err, "metrics: label %d of sample %d is outside 0..%d", labels[i], i, C - 1);
        for (int k = 0; k < C; k++)
            if (!isfinite(scores[(size_t)i * C + k]))
                return vf_fail(err, "metrics: score [%d][%d] is not finite", i, k);
    }
    scored *s = malloc((size_t)N * sizeof *s);
    if (!s) return vf_fail(err, "metrics: out of memory for %d samples", N);

    memset(m->confusion, 0, (size_t)C * C * sizeof *m->confusion);
    int64_t correct = 0;
    for (int i = 0; i < N; i++) {
        const float *p = scores + (size_t)i * C;
        int best = 0;
        for (int k = 1; k < C; k++) if (p[k] > p[best]) best = k;   /* first maximum, as numpy argmax */
        m->confusion[(size_t)labels[i] * C + best]++;
        correct += best == labels[i];
    }
    m->n = N;
    m->acc = (double)correct / N;

    double auc_sum = 0;
    m->auc_classes = 0;
    for (int k = 0; k < C; k++) {
        for (int i = 0; i < N; i++) { s[i].score = scores[(size_t)i * C + k]; s[i].positive = labels[i] == k; }
        m->class_auc[k] = auc_by_ranks(s, N);
        if (!isnan(m->class_auc[k])) { auc_sum += m->class_auc[k]; m->auc_classes++; }
    }
    m->auc = m->auc_classes ? auc_sum / m->auc_classes : NAN;
    free(s);

    vf_metrics_recall_from_confusion(m);
    return 0;
}

void vf_metrics_recall_from_confusion(vf_metrics *m) {
    const int C = m->n_classes;
    double recall_sum = 0;
    int recall_classes = 0;
    for (int k = 0; k < C; k++) {
        int64_t support = 0;
        for (int j = 0; j < C; j++) support += m->confusion[(size_t)k * C + j];
        m->class_recall[k] = support ? (double)m->confusion[(size_t)k * C + k] / support : NAN;
        if (support) { recall_sum += m->class_recall[k]; recall_classes++; }
    }
    m->balanced_acc = recall_classes ? recall_sum / recall_classes : NAN;
}

int vf_metrics_for_rows(vf_metrics *m, const float *scores, const int *labels, int first, int n, vf_error *err) {
    if (first < 0 || n <= 0) return vf_fail(err, "metrics: rows %d..%d are not a range of samples", first, first + n);
    return vf_metrics_compute(m, scores + (size_t)first * m->n_classes, labels + first, n, err);
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

int vf_metrics_add_to_json(void *obj_, const vf_metrics *m, const char *const *class_names) {
    cJSON *o = obj_;
    const int C = m->n_classes;
    cJSON_AddNumberToObject(o, "n", m->n);
    cJSON_AddItemToObject(o, "acc", num_or_null(m->acc));
    cJSON_AddItemToObject(o, "auc", num_or_null(m->auc));
    cJSON_AddItemToObject(o, "balanced_acc", num_or_null(m->balanced_acc));
    if (!isnan(m->loss)) cJSON_AddNumberToObject(o, "loss", m->loss);
    cJSON *auc = cJSON_AddArrayToObject(o, "class_auc");
    cJSON *rec = cJSON_AddArrayToObject(o, "class_recall");
    cJSON *cm = cJSON_AddArrayToObject(o, "confusion");
    if (!auc || !rec || !cm) return -1;
    for (int k = 0; k < C; k++) {
        cJSON_AddItemToArray(auc, num_or_null(m->class_auc[k]));
        cJSON_AddItemToArray(rec, num_or_null(m->class_recall[k]));
        cJSON *row = cJSON_CreateArray();
        for (int j = 0; j < C; j++) cJSON_AddItemToArray(row, cJSON_CreateNumber((double)m->confusion[(size_t)k * C + j]));
        cJSON_AddItemToArray(cm, row);
    }
    if (class_names) {
        cJSON *names = cJSON_AddArrayToObject(o, "class_names");
        for (int k = 0; k < C; k++) cJSON_AddItemToArray(names, cJSON_CreateString(class_names[k]));
    }
    return 0;
}

char *vf_metrics_to_json(const vf_metrics *m, const char *const *class_names, int pretty) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    char *s = NULL;
    if (vf_metrics_add_to_json(o, m, class_names) == 0) s = pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
