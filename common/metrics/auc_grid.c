/* auc_grid: the score histograms' bins (see auc_grid.h). */
#include "metrics/auc_grid.h"

#include <math.h>
#include <string.h>

#define MIN_SD 1e-6

void vf_auc_grid_default(vf_auc_grid *g, int C) {
    g->C = C;
    g->normal = 0;
    for (int c = 0; c < C; c++) {
        g->a[c] = -VF_AUC_Z_LIMIT;
        g->b[c] = VF_AUC_Z_LIMIT;
    }
}

int vf_auc_grid_set(vf_auc_grid *g, int C, const double *mean, const double *sd, vf_error *err) {
    if (C < 2 || C > VF_METRICS_MAX_CLASSES) return vf_fail(err, "histogram grid of %d classes", C);
    for (int c = 0; c < C; c++)
        if (!(fabs(mean[c]) <= VF_AUC_Z_LIMIT) || !(sd[c] > 0 && sd[c] <= 2 * VF_AUC_Z_LIMIT))
            return vf_fail(err, "histogram grid of class %d: mean %g, sd %g (want |mean| <= %g, 0 < sd <= %g)", c, mean[c], sd[c],
                           VF_AUC_Z_LIMIT, 2 * VF_AUC_Z_LIMIT);
    g->C = C;
    g->normal = 1;
    memcpy(g->a, mean, (size_t)C * sizeof *mean);
    memcpy(g->b, sd, (size_t)C * sizeof *sd);
    return 0;
}

double vf_auc_logodds(float p) {
    if (!(p > 0)) return -INFINITY;
    if (p >= 1) return INFINITY;
    double q = p;
    return log(q) - log1p(-q);
}

/* Where z falls in (0, 1) on class c's grid. */
static double position(const vf_auc_grid *g, int c, double z) {
    if (g->normal) return 0.5 * erfc(-(z - g->a[c]) / (g->b[c] * M_SQRT2));
    return (z - g->a[c]) / (g->b[c] - g->a[c]);
}

int vf_auc_grid_bin(const vf_auc_grid *g, int c, float p, int bins) {
    double z = vf_auc_logodds(p);
    if (z == -INFINITY) return 0;
    if (z == INFINITY) return bins - 1;
    double x = 1 + floor(position(g, c, z) * (bins - 2));
    if (!(x >= 1)) return 1;
    if (x > bins - 2) return bins - 2;
    return (int)x;
}

double vf_auc_grid_bin_low(const vf_auc_grid *g, int c, int b, int bins) {
    if (b <= 0) return 0;
    if (b >= bins - 1) return 1;
    double u = (double)(b - 1) / (bins - 2), z;
    if (!g->normal) {
        z = g->a[c] + (g->b[c] - g->a[c]) * u;
    } else {   /* the inverse of position() by bisection: bin edges are labels for the ROC's thresholds */
        double lo = -VF_AUC_Z_LIMIT, hi = VF_AUC_Z_LIMIT;
        for (int i = 0; i < 80; i++) {
            double mid = 0.5 * (lo + hi);
            if (position(g, c, mid) < u) lo = mid;
            else hi = mid;
        }
        z = 0.5 * (lo + hi);
    }
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
    double mean[VF_METRICS_MAX_CLASSES], sd[VF_METRICS_MAX_CLASSES];
    for (int c = 0; c < C; c++) {
        double n = moments[3 * c], s = moments[3 * c + 1], ss = moments[3 * c + 2];
        if (!isfinite(n) || !isfinite(s) || !isfinite(ss) || n < 0)
            return vf_fail(err, "score range of class %d: count %g, sum %g, sum of squares %g", c, n, s, ss);
        mean[c] = 0;
        sd[c] = MIN_SD;
        if (n < 1) continue;
        double m = s / n, var = ss / n - m * m;
        if (!(fabs(m) <= VF_AUC_Z_LIMIT) || var < -1e-6 * (1 + m * m))
            return vf_fail(err, "score range of class %d: mean %g, variance %g are not those of log-odds", c, m, var);
        mean[c] = m;
        sd[c] = var > MIN_SD * MIN_SD ? sqrt(var) : MIN_SD;
        if (sd[c] > 2 * VF_AUC_Z_LIMIT) sd[c] = 2 * VF_AUC_Z_LIMIT;
    }
    return vf_auc_grid_set(g, C, mean, sd, err);
}
