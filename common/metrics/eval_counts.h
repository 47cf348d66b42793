/* eval_counts: evaluation metrics from counts that can be summed across
 * sites, so that a secure sum of every site's counts gives the pooled
 * metrics without any score or label leaving a site.
 *
 * A counts vector of one split (vf_eval_counts_len(C) uint64 words):
 *   [0]                               examples
 *   [1, 1 + C*C)                      confusion, row = true class, column = argmax
 *   then C * VF_AUC_BINS              per class c, examples of class c by the bin of their score p_c
 *   then C * VF_AUC_BINS              per class c, examples of other classes by the bin of p_c
 * A score p_c goes to a bin by its log-odds on a grid (auc_grid.h): bins
 * 1 .. VF_AUC_BINS - 2 uniform over [lo[c], hi[c]], p <= 0 alone in bin 0
 * and p >= 1 alone in the last, so softmax outputs that are exactly 0 or 1
 * (logits 100 * cos give plenty) stay ties, as in the exact AUC.  The
 * default grid (NULL) is [-VF_AUC_LOGODDS, VF_AUC_LOGODDS] for every class:
 * L = 104 holds every float in (0, 1) (the smallest positive float is at
 * -103.3, the largest below 1 at +16.6), so the denormal scores of a
 * saturated softmax are not lumped with p = 0.  A federation bins on
 * equal-probability bins of a normal fit of each class's log-odds instead (a
 * first secure sum of their moments), which keeps a weak model's crowded
 * scores apart.
 * The AUC of class c is the Mann-Whitney statistic of the two histograms,
 * pairs in the same bin counted half: it differs from the exact
 * AUC only through pairs whose scores share a bin.  The mean loss is not a
 * count: the caller sums it as fixed point beside this vector.
 *
 * Accuracy, as tests/unit/test_eval_counts.c measures it against
 * vf_metrics_compute (and prints it): N = 2005, C = 7 with DermaMNIST's test
 * class sizes 66/103/220/23/223/1341/29, float32 softmax of 100 * (0.25 +
 * sigma * normal + a per-class margin on the true class), 100 seeds each;
 * largest |mean AUC from counts - exact mean AUC| (run of 2026-12-08):
 *                                         default grid   normal fit from moments
 *   realistic (AUC 0.74-0.96)             2.4e-5         1.1e-5
 *   poor (AUC 0.52-0.58)                  3.5e-5         1.2e-5
 *   nearly perfect (AUC 0.993-0.999)      3.5e-6         5.9e-6
 *   saturated (most p exactly 0 or 1)     5.7e-6         6.2e-6
 * The error is positive-negative pairs sharing a bin, random in sign; the
 * normal fit's bins each hold about the same share of the scores, so few
 * pairs share one wherever the scores are.  The gain is largest where a weak
 * model's scores crowd into a sliver of log-odds: a tiny random model's
 * federated run on 96 training images was 4.6e-3 off on the default grid;
 * test_federation_secure.py, on 480, measures 8.5e-6 on the normal fit.
 * One vector for C = 7: 229426 words, 1.84 MB. */
#ifndef VF_METRICS_EVAL_COUNTS_H
#define VF_METRICS_EVAL_COUNTS_H

#include <stddef.h>
#include <stdint.h>

#include "metrics/auc_grid.h"
#include "metrics/metrics.h"
#include "util/vf_error.h"

#define VF_AUC_BINS 16384
#define VF_AUC_LOGODDS 104.0

/* Words of a counts vector for C classes (0 unless 2 <= C <= VF_METRICS_MAX_CLASSES). */
size_t vf_eval_counts_len(int C);

/* Adds N examples (softmax scores probs (N, C), labels (N) in 0..C-1) into
 * counts (vf_eval_counts_len(C) words, not cleared here).  N = 0 adds nothing.
 * A label outside 0..C-1 or a score that is not finite is refused before
 * anything is added. */
int vf_eval_counts_add(uint64_t *counts, int C, const float *probs, const int *labels, int N, const vf_auc_grid *grid,
                       vf_error *err);

/* m (vf_metrics_init'ed for C classes) from a summed counts vector: n, ACC,
 * confusion, per-class recall, balanced accuracy as vf_metrics_compute
 * defines them (exactly), per-class and mean AUC from the histograms
 * (classes without positives or negatives NaN and left out, as there).
 * m->loss is left alone.  A vector whose confusion does not add up to its
 * example count, or whose histograms do not match the confusion's class
 * totals, is an error (a sum whose masks did not cancel). */
int vf_metrics_from_counts(vf_metrics *m, const uint64_t *counts, vf_error *err);

#endif
