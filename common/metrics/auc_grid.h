/* auc_grid: where the score histograms of eval_counts.h put their bins.
 * A score p_c goes to a bin by its log-odds z = log(p / (1 - p)); bins
 * 1 .. VF_AUC_BINS - 2 cover [lo[c], hi[c]] uniformly (a z outside is
 * clamped into the first or last of them) and the end bins hold p = 0 and
 * p = 1 alone, so exact 0s and 1s stay ties, as in the exact AUC.
 *
 * The default grid is one range for every class wide enough for any float;
 * it is what a single pass can use.  It is too coarse where the scores of a
 * weak model crowd into a sliver of log-odds, so a federation first sums
 * each class's count, sum and sum of squares of z (vf_score_moments_add, a
 * few numbers per class that every site adds to), and bins the histograms
 * on mean +- 8 standard deviations (vf_auc_grid_from_moments): wherever the
 * scores are, a bin is 1/1000 of a standard deviation wide. */
#ifndef VF_METRICS_AUC_GRID_H
#define VF_METRICS_AUC_GRID_H

#include "metrics/metrics.h"
#include "util/vf_error.h"

#define VF_AUC_GRID_SIGMAS 8.0
#define VF_AUC_Z_LIMIT 104.0   /* |log-odds| of any float strictly between 0 and 1 is below this */

typedef struct vf_auc_grid {
    int C;
    double lo[VF_METRICS_MAX_CLASSES], hi[VF_METRICS_MAX_CLASSES];
} vf_auc_grid;

/* [-VF_AUC_Z_LIMIT, VF_AUC_Z_LIMIT] for every class. */
void vf_auc_grid_default(vf_auc_grid *g, int C);
/* The grid of C classes from lo/hi (as a peer sent them): finite, lo < hi,
 * inside +-VF_AUC_Z_LIMIT. */
int vf_auc_grid_set(vf_auc_grid *g, int C, const double *lo, const double *hi, vf_error *err);
/* The log-odds of p: -inf for p <= 0 (and NaN), +inf for p >= 1. */
double vf_auc_logodds(float p);
/* The bin (0 .. bins - 1) of score p of class c on g with `bins` bins. */
int vf_auc_grid_bin(const vf_auc_grid *g, int c, float p, int bins);
/* The lowest score of bin b of class c (0 for bin 0, 1 for the last). */
double vf_auc_grid_bin_low(const vf_auc_grid *g, int c, int b, int bins);

/* moments (3 C: per class count, sum and sum of squares of the finite
 * log-odds of p_c) += those of scores probs (N, C). */
void vf_score_moments_add(double *moments, int C, const float *probs, int N);
/* The grid mean +- VF_AUC_GRID_SIGMAS standard deviations per class from
 * summed moments (a class without finite scores gets the default range). */
int vf_auc_grid_from_moments(vf_auc_grid *g, int C, const double *moments, vf_error *err);

#endif
