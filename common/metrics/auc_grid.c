/* auc_grid: the score histograms' bins (see auc_grid.h). */
#include "metrics/auc_grid.h"

#include <math.h>
#include <string.h>

void vf_auc_grid_default(vf_auc_grid *g, int C) {
    g->C = C;
    for (int c = 0; c < C; c++) {
        g->lo[c] = -VF_AUC_Z_LIMIT;
        g->hi[c] = VF_AUC_Z_LIMIT;
    }
}

int vf_auc_grid_set(vf_auc_grid *g, int C, const double *lo, const double *hi, vf_error *err) {
    if (C < 2 || C > VF_METRICS_MAX_CLASSES) return vf_fail(err, "histogram grid of %d classes", C);
    for (int c = 0; c < C; c++)
        if (!(lo[c] < hi[c]) || !(lo[c] >= -VF_AUC_Z_LIMIT) || !(hi[c] <= VF_AUC_Z_LIMIT))
            return vf_fail(err, "histogram grid of class %d is [%g, %g] (want lo < hi within +-%g)", c, lo[c], hi[c], VF_AUC_Z_LIMIT);
    g->C = C;
    memcpy(g->lo, lo, (size_t)C * sizeof *lo);
    memcpy(g->hi, hi, (size_t)C * sizeof *hi);
    return 0;
}

double vf_auc_logodds(float p) {
    if (!(p > 0)) return -INFINITY;
    if (p >= 1) return INFINITY;
    double q = p;
    return log(q) - log1p(-q);
}

int vf_auc_grid_bin(const vf_auc_grid *g, int c, float p, int bins) {
    double z = vf_auc_logodds(p);
    if (z == -INFINITY) return 0;
    if (z == INFINITY) return bins - 1;
    double x = 1 + floor((z - g->lo[c]) / (g->hi[c] - g->lo[c]) * (bins - 2));
    if (x < 1) return 1;
    if (x > bins - 2) return bins - 2;
    return (int)x;
}

double vf_auc_grid_bin_low(const vf_auc_grid *g, int c, int b, int bins) {
    if (b <= 0) return 0;
    if (b >= bins - 1) return 1;
    double z = g->lo[c] + (g->hi[c] - g->lo[c]) * (b - 1) / (bins - 2);
    return 1 / (1 + exp(-z));
}

void vf_score_moments_add(double *moments, int C, const float *probs, int N) {
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++) {
            double z = vf_auc_logodds(probs[(size_t)i * C + c]);
            if (!isfinite(z)) continue;
            moments[3 * c] += 1;
            moments[3 * c + 1] += z;
            moments[3 * c + 2] += z * z;
        }
}

int vf_auc_grid_from_moments(vf_auc_grid *g, int C, const double *moments, vf_error *err) {
    if (C < 2 || C > VF_METRICS_MAX_CLASSES) return vf_fail(err, "histogram grid of %d classes", C);
    vf_auc_grid_default(g, C);
    for (int c = 0; c < C; c++) {
        double n = moments[3 * c], s = moments[3 * c + 1], ss = moments[3 * c + 2];
        if (!isfinite(n) || !isfinite(s) || !isfinite(ss) || n < 0)
            return vf_fail(err, "score range of class %d: count %g, sum %g, sum of squares %g", c, n, s, ss);
        if (n < 1) continue;
        double mean = s / n, var = ss / n - mean * mean;
        if (!(mean >= -VF_AUC_Z_LIMIT && mean <= VF_AUC_Z_LIMIT) || var < -1e-6 * (1 + mean * mean))
            return vf_fail(err, "score range of class %d: mean %g, variance %g are not those of log-odds", c, mean, var);
        double sd = sqrt(var > 0 ? var : 0), half = VF_AUC_GRID_SIGMAS * sd;
        if (half < 1e-6) half = 1e-6;   /* every score the same: any narrow grid keeps them in one bin */
        g->lo[c] = fmax(-VF_AUC_Z_LIMIT, mean - half);
        g->hi[c] = fmin(VF_AUC_Z_LIMIT, mean + half);
        if (!(g->lo[c] < g->hi[c])) {
            g->lo[c] = -VF_AUC_Z_LIMIT;
            g->hi[c] = VF_AUC_Z_LIMIT;
        }
    }
    return 0;
}
