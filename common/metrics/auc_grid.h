/* auc_grid: where the score histograms of eval_counts.h put their bins.
 * A score p_c goes to a bin by its log-odds z = log(p / (1 - p)); the end
 * bins hold p = 0 and p = 1 alone, so exact 0s and 1s stay ties, as in the
 * exact AUC, and bins 1 .. bins - 2 cover the rest in one of two ways:
 *
 *   uniform  z uniform over [lo[c], hi[c]] (clamped at the ends): the
 *            default grid, [-VF_AUC_Z_LIMIT, VF_AUC_Z_LIMIT] for every
 *            class, is what a single pass can use;
 *   normal   equal-probability bins of a normal fit N(mean[c], sd[c]^2) of
 *            the class's log-odds: bin 1 + floor(Phi((z - mean) / sd) *
 *            (bins - 2)).
 *
 * The AUC error is the pairs of a positive and a negative whose scores
 * share a bin (counted half).  Uniform bins wide enough for any float are
 * too coarse where the scores of a weak model crowd into a sliver of
 * log-odds; bins that each hold about the same share of the scores keep
 * the expected number of shared pairs near (positives x negatives) / bins
 * wherever the scores are.  A federation therefore first sums each class's
 * count, sum and sum of squares of z (vf_score_moments_add: three numbers
 * per class that every site adds to) and bins on the normal fit
 * (vf_auc_grid_from_moments). */
#ifndef VF_METRICS_AUC_GRID_H
#define VF_METRICS_AUC_GRID_H

#include "metrics/metrics.h"
#include "util/vf_error.h"

#define VF_AUC_Z_LIMIT 104.0   /* |log-odds| of any float strictly between 0 and 1 is below this */

typedef struct vf_auc_grid {
    int C, normal;                                     /* normal: equal-probability bins of N(a, b^2); else uniform over [a, b] */
    double a[VF_METRICS_MAX_CLASSES], b[VF_METRICS_MAX_CLASSES];
} vf_auc_grid;

/* Uniform over [-VF_AUC_Z_LIMIT, VF_AUC_Z_LIMIT] for every class. */
void vf_auc_grid_default(vf_auc_grid *g, int C);
/* The normal-fit grid of C classes from mean/sd (as a peer sent them):
 * finite, |mean| <= VF_AUC_Z_LIMIT, 0 < sd <= 2 VF_AUC_Z_LIMIT. */
int vf_auc_grid_set(vf_auc_grid *g, int C, const double *mean, const double *sd, vf_error *err);
/* The log-odds of p: -inf for p <= 0 (and NaN), +inf for p >= 1. */
double vf_auc_logodds(float p);
/* The bin (0 .. bins - 1) of score p of class c on g with `bins` bins. */
int vf_auc_grid_bin(const vf_auc_grid *g, int c, float p, int bins);
/* The lowest score of bin b of class c (0 for bin 0, 1 for the last). */
double vf_auc_grid_bin_low(const vf_auc_grid *g, int c, int b, int bins);

/* moments (3 C: per class count, sum and sum of squares of the finite
 * log-odds of p_c) += those of scores probs (N, C). */
void vf_score_moments_add(double *moments, int C, const float *probs, int N);
/* The normal-fit grid from summed moments (a class without finite scores,
 * or whose scores are all the same, gets sd 1e-6 around its mean or 0). */
int vf_auc_grid_from_moments(vf_auc_grid *g, int C, const double *moments, vf_error *err);

#endif
