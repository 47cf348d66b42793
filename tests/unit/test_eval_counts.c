/* test_eval_counts: metrics from summable counts (common/metrics/eval_counts)
 * against vf_metrics_compute on the same scores.  Counts of a split equal
 * the sum of the counts of its parts; ACC, confusion, recall and balanced
 * accuracy are bit-identical to vf_metrics_compute; the AUC from the score
 * histograms is within 1e-4 of the exact one on DermaMNIST-like data
 * (N = 2005, 7 classes, one of them 67%) for realistic, poor, nearly perfect
 * and saturated (softmax outputs exactly 0 or 1) classifiers; a class
 * without positives is NaN and left out as there; a vector whose counts do
 * not add up is refused with a message. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/eval_counts.h"
#include "metrics/metrics.h"
#include "util/rng.h"

enum { C = 7, N = 2005 };
static const int class_sizes[C] = {66, 103, 220, 23, 223, 1341, 29};   /* DermaMNIST test split */

enum kind { REALISTIC, POOR, NEARLY_PERFECT, SATURATED, KINDS };
static const char *kind_name[KINDS] = {"realistic", "poor", "nearly perfect", "saturated"};

static double uniform(vf_rng *r, double a, double b) {
    return a + (b - a) * (double)(vf_rng_next(r) >> 11) * 0x1p-53;
}

/* Labels in DermaMNIST's proportions, shuffled; probs = float32 softmax of
 * 100 * cos, cos = 0.25 + sigma * normal + sigma * r_c on the true class c. */
static void make_split(uint64_t seed, enum kind kind, float *probs, int *labels) {
    vf_rng r;
    vf_rng_seed(&r, seed * 4 + kind);
    int i = 0;
    for (int c = 0; c < C; c++) for (int j = 0; j < class_sizes[c]; j++) labels[i++] = c;
    for (int k = N - 1; k > 0; k--) {
        int j = (int)vf_rng_below(&r, (uint64_t)k + 1), t = labels[k];
        labels[k] = labels[j];
        labels[j] = t;
    }
    static const double sig_lo[KINDS] = {0.02, 0.02, 0.05, 0.4}, sig_hi[KINDS] = {0.15, 0.15, 0.2, 0.8};
    static const double r_lo[KINDS] = {0.4, 0.1, 2.8, 0.5}, r_hi[KINDS] = {2.5, 0.3, 3.6, 3.0};
    double sigma = uniform(&r, sig_lo[kind], sig_hi[kind]), margin[C];
    for (int c = 0; c < C; c++) margin[c] = sigma * uniform(&r, r_lo[kind], r_hi[kind]);
    for (int k = 0; k < N * C; k += 2) {
        double rad, ang;
        vf_rng_box_muller(&r, &rad, &ang);
        probs[k] = (float)(100 * (0.25 + sigma * rad * cos(ang)));
        if (k + 1 < N * C) probs[k + 1] = (float)(100 * (0.25 + sigma * rad * sin(ang)));
    }
    for (int n = 0; n < N; n++) probs[(size_t)n * C + labels[n]] += (float)(100 * margin[labels[n]]);
    vf_softmax_rows(probs, probs, N, C);
}

static uint64_t *counts_on(const float *probs, const int *labels, int n, const vf_auc_grid *grid) {
    uint64_t *v = calloc(vf_eval_counts_len(C), sizeof *v);
    vf_error err;
    assert_non_null(v);
    if (vf_eval_counts_add(v, C, probs, labels, n, grid, &err)) fail_msg("%s", err.msg);
    return v;
}

static uint64_t *counts_of(const float *probs, const int *labels, int n) { return counts_on(probs, labels, n, NULL); }

/* Everything but the AUC bit for bit; the AUC within tol.  Returns the
 * mean-AUC difference. */
static double compare(const vf_metrics *a, const vf_metrics *b, double tol) {
    const int k = a->n_classes;
    assert_int_equal(a->n, b->n);
    assert_memory_equal(&a->acc, &b->acc, sizeof a->acc);
    assert_memory_equal(&a->balanced_acc, &b->balanced_acc, sizeof a->balanced_acc);
    assert_memory_equal(a->class_recall, b->class_recall, k * sizeof *a->class_recall);
    assert_memory_equal(a->confusion, b->confusion, (size_t)k * k * sizeof *a->confusion);
    assert_int_equal(a->auc_classes, b->auc_classes);
    for (int c = 0; c < k; c++) {
        assert_int_equal(isnan(a->class_auc[c]), isnan(b->class_auc[c]));
        if (!isnan(a->class_auc[c]) && fabs(a->class_auc[c] - b->class_auc[c]) > 20 * tol)
            fail_msg("class %d AUC %.8f from counts, %.8f exact", c, b->class_auc[c], a->class_auc[c]);
    }
    if (isnan(a->auc)) {
        assert_true(isnan(b->auc));
        return 0;
    }
    double d = fabs(a->auc - b->auc);
    if (d > tol) fail_msg("AUC %.8f from counts, %.8f exact: %.2e apart", b->auc, a->auc, d);
    return d;
}

static void check_split_on(const float *probs, const int *labels, int n, const vf_auc_grid *grid, double tol,
                           double *max_diff) {
    vf_metrics exact, pooled;
    vf_error err;
    assert_int_equal(vf_metrics_init(&exact, C, &err), 0);
    assert_int_equal(vf_metrics_init(&pooled, C, &err), 0);
    if (vf_metrics_compute(&exact, probs, labels, n, &err)) fail_msg("%s", err.msg);
    uint64_t *v = counts_on(probs, labels, n, grid);
    if (vf_metrics_from_counts(&pooled, v, &err)) fail_msg("%s", err.msg);
    double d = compare(&exact, &pooled, tol);
    if (d > *max_diff) *max_diff = d;
    free(v);
    vf_metrics_free(&exact);
    vf_metrics_free(&pooled);
}

static void check_split(const float *probs, const int *labels, int n, double tol, double *max_diff) {
    check_split_on(probs, labels, n, NULL, tol, max_diff);
}

/* The two-pass evaluation a federation runs (auc_grid.h): the moments of
 * each class's log-odds, summed over three sites, give a normal fit whose
 * equal-probability bins hold about the same share of the scores each, so
 * few positive-negative pairs share one: within 2e-5 of the exact AUC where
 * the one-pass default grid needs 1e-4. */
static void test_auc_on_the_grid_from_moments(void **state) {
    enum { SEEDS = 100 };
    float *probs = malloc((size_t)N * C * sizeof *probs);
    int *labels = malloc(N * sizeof *labels);
    double worst_all = 0;
    for (int kind = 0; kind < KINDS; kind++) {
        double worst = 0;
        for (int seed = 0; seed < SEEDS; seed++) {
            make_split(1000 + seed, kind, probs, labels);
            double m[3 * C] = {0};
            static const int cut[4] = {0, 611, 1432, N};
            for (int s = 0; s < 3; s++) vf_score_moments_add(m, C, probs + (size_t)cut[s] * C, cut[s + 1] - cut[s]);
            vf_auc_grid g;
            vf_error err;
            if (vf_auc_grid_from_moments(&g, C, m, &err)) fail_msg("%s", err.msg);
            check_split_on(probs, labels, N, &g, 2e-5, &worst);
        }
        printf("  %-14s grid from moments: max |AUC from counts - exact| %.2e over %d seeds\n", kind_name[kind], worst, SEEDS);
        if (worst > worst_all) worst_all = worst;
    }
    printf("  max over all, grid from moments: %.2e (bound 2e-5)\n", worst_all);
    free(probs);
    free(labels);
}

/* The bin of p and the lowest score of bin b on the default grid (auc_grid.h). */
static int default_bin(float p) {
    vf_auc_grid g;
    vf_auc_grid_default(&g, 2);
    return vf_auc_grid_bin(&g, 0, p, VF_AUC_BINS);
}

static double default_bin_low(int b) {
    vf_auc_grid g;
    vf_auc_grid_default(&g, 2);
    return vf_auc_grid_bin_low(&g, 0, b, VF_AUC_BINS);
}

static void test_bins(void **state) {
    assert_int_equal(default_bin(0.0f), 0);
    assert_int_equal(default_bin(-0.0f), 0);
    assert_int_equal(default_bin(-1e-3f), 0);
    assert_int_equal(default_bin(1.0f), VF_AUC_BINS - 1);
    assert_int_equal(default_bin(1.5f), VF_AUC_BINS - 1);
    assert_int_equal(default_bin(NAN), 0);
    /* every float strictly inside (0, 1) is on the grid, off the end bins */
    int lo = default_bin(FLT_TRUE_MIN), hi = default_bin(nextafterf(1.0f, 0.0f));
    printf("  bins: smallest positive float -> %d, largest float below 1 -> %d, 0.5 -> %d (of %d)\n",
           lo, hi, default_bin(0.5f), VF_AUC_BINS);
    assert_true(lo >= 1 && lo < 200);
    assert_true(hi <= VF_AUC_BINS - 2 && hi > VF_AUC_BINS / 2);
    int prev = 0;   /* monotone */
    for (float p = FLT_TRUE_MIN; p < 1; p = p < 1e-6f ? nextafterf(p * 1.37f, 1.0f) : nextafterf(p + (1 - p) * 1e-3f, 1.0f)) {
        int b = default_bin(p);
        assert_true(b >= prev);
        prev = b;
    }
    /* bin b's lower edge, as a float, lands in bin b or (rounded) just below
     * it, where floats are finer than bins (1e-30 < p < 1 - 1e-5) */
    assert_true(default_bin_low(0) == 0 && default_bin_low(VF_AUC_BINS - 1) == 1);
    for (int b = default_bin(1e-30f); b <= default_bin(1 - 1e-5f); b += 7) {
        float e = (float)default_bin_low(b), above = nextafterf((float)default_bin_low(b + 1), 0.0f);
        assert_true(default_bin(e) >= b - 1 && default_bin(e) <= b);
        assert_true(default_bin(above) <= b + 1);
    }
    assert_int_equal(vf_eval_counts_len(C), 1 + C * C + 2 * C * VF_AUC_BINS);
    assert_int_equal(vf_eval_counts_len(1), 0);
    printf("  one counts vector for %d classes: %zu words, %zu bytes\n", C, vf_eval_counts_len(C),
           vf_eval_counts_len(C) * sizeof(uint64_t));
}

static void test_sites_sum_to_the_whole(void **state) {
    float *probs = malloc((size_t)N * C * sizeof *probs);
    int *labels = malloc(N * sizeof *labels);
    const size_t len = vf_eval_counts_len(C);
    for (int kind = 0; kind < KINDS; kind++) {
        make_split(7, kind, probs, labels);
        uint64_t *whole = counts_of(probs, labels, N);
        static const int cut[4] = {0, 611, 1432, N};   /* three sites */
        uint64_t *sum = calloc(len, sizeof *sum);
        for (int s = 0; s < 3; s++) {
            uint64_t *part = counts_of(probs + (size_t)cut[s] * C, labels + cut[s], cut[s + 1] - cut[s]);
            assert_int_equal(part[0], cut[s + 1] - cut[s]);
            for (size_t i = 0; i < len; i++) sum[i] += part[i];
            free(part);
        }
        assert_memory_equal(whole, sum, len * sizeof *sum);
        /* and adding into one vector site by site gives the same */
        memset(sum, 0, len * sizeof *sum);
        vf_error err;
        for (int s = 0; s < 3; s++)
            assert_int_equal(vf_eval_counts_add(sum, C, probs + (size_t)cut[s] * C, labels + cut[s],
                                                cut[s + 1] - cut[s], NULL, &err), 0);
        assert_int_equal(vf_eval_counts_add(sum, C, probs, labels, 0, NULL, &err), 0);
        assert_memory_equal(whole, sum, len * sizeof *sum);
        free(whole);
        free(sum);
    }
    free(probs);
    free(labels);
}

static void test_auc_within_1e4_of_exact(void **state) {
    enum { SEEDS = 100 };
    float *probs = malloc((size_t)N * C * sizeof *probs);
    int *labels = malloc(N * sizeof *labels);
    double worst_all = 0;
    for (int kind = 0; kind < KINDS; kind++) {
        double worst = 0, lo_auc = 1, hi_auc = 0;
        int zeros = 0, ones = 0;
        for (int seed = 0; seed < SEEDS; seed++) {
            make_split(1000 + seed, kind, probs, labels);
            for (int i = 0; i < N * C; i++) { zeros += probs[i] == 0; ones += probs[i] == 1; }
            vf_metrics m;
            vf_error err;
            assert_int_equal(vf_metrics_init(&m, C, &err), 0);
            assert_int_equal(vf_metrics_compute(&m, probs, labels, N, &err), 0);
            if (m.auc < lo_auc) lo_auc = m.auc;
            if (m.auc > hi_auc) hi_auc = m.auc;
            vf_metrics_free(&m);
            check_split(probs, labels, N, 1e-4, &worst);
        }
        printf("  %-14s AUC %.4f..%.4f, %d scores exactly 0 and %d exactly 1: max |AUC from counts - exact| %.2e over %d seeds\n",
               kind_name[kind], lo_auc, hi_auc, zeros, ones, worst, SEEDS);
        if (kind == SATURATED) assert_true(zeros > 0 && ones > 0);
        if (worst > worst_all) worst_all = worst;
    }
    printf("  max |AUC from counts - exact| over all: %.2e (bound 1e-4)\n", worst_all);
    free(probs);
    free(labels);
}

/* Scores on a coarse grid: many tied scores and tied argmaxes (first maximum
 * wins, as in vf_metrics_compute); distinct values land in distinct bins, so
 * even the AUC is exact. */
static void test_ties_are_exact(void **state) {
    float *probs = malloc((size_t)N * C * sizeof *probs);
    int *labels = malloc(N * sizeof *labels);
    make_split(3, REALISTIC, probs, labels);
    for (int i = 0; i < N * C; i++) probs[i] = roundf(probs[i] * 4) / 4;
    int tied = 0;
    for (int n = 0; n < N; n++) {
        float mx = 0;
        int k_at = 0;
        for (int k = 0; k < C; k++) if (probs[n * C + k] > mx) mx = probs[n * C + k];
        for (int k = 0; k < C; k++) k_at += probs[n * C + k] == mx;
        tied += k_at > 1;
    }
    assert_true(tied > 100);
    double d = 0;
    check_split(probs, labels, N, 1e-12, &d);
    printf("  %d examples with a tied argmax; AUC %.1e from exact\n", tied, d);
    free(probs);
    free(labels);
}

static void test_class_without_positives(void **state) {
    float *probs = malloc((size_t)N * C * sizeof *probs);
    int *labels = malloc(N * sizeof *labels);
    make_split(11, REALISTIC, probs, labels);
    for (int n = 0; n < N; n++) if (labels[n] == 3) labels[n] = 5;
    vf_metrics exact, pooled;
    vf_error err;
    assert_int_equal(vf_metrics_init(&exact, C, &err), 0);
    assert_int_equal(vf_metrics_init(&pooled, C, &err), 0);
    assert_int_equal(vf_metrics_compute(&exact, probs, labels, N, &err), 0);
    uint64_t *v = counts_of(probs, labels, N);
    assert_int_equal(vf_metrics_from_counts(&pooled, v, &err), 0);
    assert_true(isnan(pooled.class_auc[3]) && isnan(pooled.class_recall[3]));
    assert_int_equal(pooled.auc_classes, C - 1);
    compare(&exact, &pooled, 1e-4);
    free(v);
    vf_metrics_free(&exact);
    vf_metrics_free(&pooled);

    /* two classes, every label 0: class 0 has no negatives, class 1 no positives */
    float p2[6] = {0.9f, 0.1f, 0.4f, 0.6f, 0.5f, 0.5f};
    int l2[3] = {0, 0, 0};
    assert_int_equal(vf_metrics_init(&exact, 2, &err), 0);
    assert_int_equal(vf_metrics_init(&pooled, 2, &err), 0);
    assert_int_equal(vf_metrics_compute(&exact, p2, l2, 3, &err), 0);
    uint64_t *v2 = calloc(vf_eval_counts_len(2), sizeof *v2);
    assert_int_equal(vf_eval_counts_add(v2, 2, p2, l2, 3, NULL, &err), 0);
    assert_int_equal(vf_metrics_from_counts(&pooled, v2, &err), 0);
    assert_int_equal(pooled.auc_classes, 0);
    assert_true(isnan(pooled.auc));
    compare(&exact, &pooled, 0);
    free(v2);
    vf_metrics_free(&exact);
    vf_metrics_free(&pooled);
    free(probs);
    free(labels);
}

static void expect_refused(const uint64_t *v, const char *needle) {
    vf_metrics m;
    vf_error err = {{0}};
    assert_int_equal(vf_metrics_init(&m, C, &err), 0);
    assert_int_equal(vf_metrics_from_counts(&m, v, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
    printf("  refused: %s\n", err.msg);
    vf_metrics_free(&m);
}

static void test_corrupt_vectors_are_refused(void **state) {
    float *probs = malloc((size_t)N * C * sizeof *probs);
    int *labels = malloc(N * sizeof *labels);
    make_split(5, REALISTIC, probs, labels);
    uint64_t *v = counts_of(probs, labels, N);
    const size_t len = vf_eval_counts_len(C);
    uint64_t *w = malloc(len * sizeof *w);
    uint64_t *pos = w + 1 + C * C, *neg = pos + (size_t)C * VF_AUC_BINS;

    memcpy(w, v, len * sizeof *w);
    w[0]++;
    expect_refused(w, "confusion adds up to 2005, not the 2006 examples");
    memcpy(w, v, len * sizeof *w);
    w[1 + 5 * C + 5]--;   /* one example fewer in class 5's row and in all, histograms kept */
    w[0]--;
    expect_refused(w, "class 0 has 66 examples in the confusion but score histograms of 66 positives and 1939 negatives");
    memcpy(w, v, len * sizeof *w);
    int b = default_bin(probs[0]);   /* move one count from the positives' to the negatives' histogram */
    int c = 0;
    uint64_t *h = labels[0] == c ? pos : neg, *o = labels[0] == c ? neg : pos;
    h[b]--;
    o[b]++;
    expect_refused(w, "class 0");
    memcpy(w, v, len * sizeof *w);
    w[1 + 2] += 0x9e3779b97f4a7c15ull;   /* a mask that did not cancel */
    expect_refused(w, "confusion [0][2]");
    memcpy(w, v, len * sizeof *w);
    neg[3 * VF_AUC_BINS + 100] += 0x9e3779b97f4a7c15ull;
    expect_refused(w, "class 3 bin 100");
    memcpy(w, v, len * sizeof *w);
    w[0] = 1ull << 40;
    expect_refused(w, "example count");
    memset(w, 0, len * sizeof *w);
    expect_refused(w, "no examples");

    /* bad input to add: refused, counts untouched */
    vf_error err = {{0}};
    memcpy(w, v, len * sizeof *w);
    labels[17] = C;
    assert_int_equal(vf_eval_counts_add(w, C, probs, labels, N, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "label 7 of example 17"));
    labels[17] = 0;
    probs[40] = NAN;
    assert_int_equal(vf_eval_counts_add(w, C, probs, labels, N, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "score [5][5] is not finite"));
    assert_memory_equal(w, v, len * sizeof *w);
    assert_int_equal(vf_eval_counts_add(w, 1, probs, labels, N, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "1 classes"));
    free(v);
    free(w);
    free(probs);
    free(labels);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bins),
        cmocka_unit_test(test_sites_sum_to_the_whole),
        cmocka_unit_test(test_auc_within_1e4_of_exact),
        cmocka_unit_test(test_auc_on_the_grid_from_moments),
        cmocka_unit_test(test_ties_are_exact),
        cmocka_unit_test(test_class_without_positives),
        cmocka_unit_test(test_corrupt_vectors_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
