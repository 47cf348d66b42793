/* eval_counts: metrics from counts that sum across sites (layout and grid in
 * eval_counts.h).  The confusion-derived metrics repeat vf_metrics_compute's
 * arithmetic step for step, so they are bit-identical to it; the AUC is the
 * Mann-Whitney statistic of two histograms, summed exactly in 64-bit
 * integers (twice U, so the half-counted ties stay integral). */
#include "metrics/eval_counts.h"

#include <limits.h>
#include <math.h>
#include <string.h>

size_t vf_eval_counts_len(int C) {
    if (C < 2 || C > VF_METRICS_MAX_CLASSES) return 0;
    return 1 + (size_t)C * C + 2 * (size_t)C * VF_AUC_BINS;
}

int vf_eval_counts_add(uint64_t *counts, int C, const float *probs, const int *labels, int N, const vf_auc_grid *grid,
                       vf_error *err) {
    if (C < 2 || C > VF_METRICS_MAX_CLASSES)
        return vf_fail(err, "eval counts: %d classes (need 2..%d)", C, VF_METRICS_MAX_CLASSES);
    if (N < 0) return vf_fail(err, "eval counts: %d examples", N);
    for (int i = 0; i < N; i++) {   /* all checks first: a refused batch leaves counts as they were */
        if (labels[i] < 0 || labels[i] >= C)
            return vf_fail(err, "eval counts: label %d of example %d is outside 0..%d", labels[i], i, C - 1);
        for (int k = 0; k < C; k++)
            if (!isfinite(probs[(size_t)i * C + k]))
                return vf_fail(err, "eval counts: score [%d][%d] is not finite", i, k);
    }
    vf_auc_grid def;
    if (!grid) vf_auc_grid_default(&def, C);
    uint64_t *confusion = counts + 1;
    uint64_t *pos = confusion + (size_t)C * C;
    uint64_t *neg = pos + (size_t)C * VF_AUC_BINS;
    for (int i = 0; i < N; i++) {
        const float *p = probs + (size_t)i * C;
        int best = 0;
        for (int k = 1; k < C; k++) if (p[k] > p[best]) best = k;   /* first maximum, as vf_metrics_compute */
        counts[0]++;
        confusion[(size_t)labels[i] * C + best]++;
        for (int k = 0; k < C; k++)
            (k == labels[i] ? pos : neg)[(size_t)k * VF_AUC_BINS + vf_auc_grid_bin(grid ? grid : &def, k, p[k], VF_AUC_BINS)]++;
    }
    return 0;
}

/* Twice the Mann-Whitney U of positives over negatives, pairs in one bin
 * counted half.  Exact: every term is at most n^2 / 2 < 2^61 in total. */
static uint64_t twice_u(const uint64_t *pos, const uint64_t *neg) {
    uint64_t below = 0, u2 = 0;
    for (int b = 0; b < VF_AUC_BINS; b++) {
        u2 += pos[b] * (2 * below + neg[b]);
        below += neg[b];
    }
    return u2;
}

int vf_metrics_from_counts(vf_metrics *m, const uint64_t *counts, vf_error *err) {
    const int C = m->n_classes;
    if (C < 2 || C > VF_METRICS_MAX_CLASSES || !m->confusion || !m->class_auc || !m->class_recall)
        return vf_fail(err, "eval counts: metrics not initialised for 2..%d classes", VF_METRICS_MAX_CLASSES);
    const uint64_t n = counts[0];
    if (n == 0) return vf_fail(err, "eval counts: no examples to evaluate");
    if (n > INT_MAX)
        return vf_fail(err, "eval counts: example count %llu is past %d (a sum whose masks did not cancel?)",
                       (unsigned long long)n, INT_MAX);
    const uint64_t *confusion = counts + 1;
    const uint64_t *pos = confusion + (size_t)C * C;
    const uint64_t *neg = pos + (size_t)C * VF_AUC_BINS;

    /* Every word is at most n (< 2^31), so none of the sums below can wrap. */
    uint64_t total = 0;
    for (size_t i = 0; i < (size_t)C * C; i++) {
        if (confusion[i] > n)
            return vf_fail(err, "eval counts: confusion [%zu][%zu] = %llu is more than the %llu examples",
                           i / C, i % C, (unsigned long long)confusion[i], (unsigned long long)n);
        total += confusion[i];
    }
    if (total != n)
        return vf_fail(err, "eval counts: confusion adds up to %llu, not the %llu examples",
                       (unsigned long long)total, (unsigned long long)n);
    for (int k = 0; k < C; k++) {
        uint64_t row = 0, hp = 0, hn = 0;
        for (int j = 0; j < C; j++) row += confusion[(size_t)k * C + j];
        for (int b = 0; b < VF_AUC_BINS; b++) {
            uint64_t a = pos[(size_t)k * VF_AUC_BINS + b], z = neg[(size_t)k * VF_AUC_BINS + b];
            if (a > n || z > n)
                return vf_fail(err, "eval counts: class %d bin %d holds %llu examples, more than the %llu in all",
                               k, b, (unsigned long long)(a > n ? a : z), (unsigned long long)n);
            hp += a;
            hn += z;
        }
        if (hp != row || hn != n - row)
            return vf_fail(err, "eval counts: class %d has %llu examples in the confusion but score histograms "
                           "of %llu positives and %llu negatives (need %llu and %llu)",
                           k, (unsigned long long)row, (unsigned long long)hp, (unsigned long long)hn,
                           (unsigned long long)row, (unsigned long long)(n - row));
    }

    /* From here on, vf_metrics_compute's own arithmetic. */
    const int N = (int)n;
    int64_t correct = 0;
    for (size_t i = 0; i < (size_t)C * C; i++) m->confusion[i] = (int64_t)confusion[i];
    for (int k = 0; k < C; k++) correct += m->confusion[(size_t)k * C + k];
    m->n = N;
    m->acc = (double)correct / N;

    double auc_sum = 0;
    m->auc_classes = 0;
    for (int k = 0; k < C; k++) {
        uint64_t P = 0;
        for (int j = 0; j < C; j++) P += confusion[(size_t)k * C + j];
        uint64_t Q = n - P;
        if (P == 0 || Q == 0) {
            m->class_auc[k] = NAN;
            continue;
        }
        uint64_t u2 = twice_u(pos + (size_t)k * VF_AUC_BINS, neg + (size_t)k * VF_AUC_BINS);
        m->class_auc[k] = (double)u2 / (2.0 * (double)P * (double)Q);
        auc_sum += m->class_auc[k];
        m->auc_classes++;
    }
    m->auc = m->auc_classes ? auc_sum / m->auc_classes : NAN;

    vf_metrics_recall_from_confusion(m);
    return 0;
}
