/* rdp: the RDP accountant (see rdp.h). */
#include "privacy/rdp.h"

#include <math.h>
#include <stddef.h>

const int vf_rdp_orders[VF_RDP_N_ORDERS] = {
    2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45,
    46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 128, 256, 512, 1024};

static double log_add(double a, double b) {
    if (a == -INFINITY) return b;
    if (b == -INFINITY) return a;
    double hi = a > b ? a : b, lo = a > b ? b : a;
    return hi + log1p(exp(lo - hi));
}

static double log_comb(int n, int k) { return lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0); }

/* log A_alpha for integer alpha and 0 < q < 1: a log-sum-exp of the binomial expansion. */
static double log_a_int(double q, double sigma, int alpha) {
    double log_a = -INFINITY, lq = log(q), l1mq = log1p(-q);
    for (int i = 0; i <= alpha; i++)
        log_a = log_add(log_a, log_comb(alpha, i) + i * lq + (alpha - i) * l1mq + ((double)i * i - i) / (2 * sigma * sigma));
    return log_a;
}

void vf_rdp_subsampled_gaussian(double q, double sigma, double *rdp) {
    for (int k = 0; k < VF_RDP_N_ORDERS; k++) {
        int a = vf_rdp_orders[k];
        if (q <= 0) rdp[k] = 0;
        else if (sigma <= 0) rdp[k] = INFINITY;
        else if (q >= 1) rdp[k] = a / (2 * sigma * sigma);
        else rdp[k] = log_a_int(q, sigma, a) / (a - 1);
    }
}

double vf_rdp_to_epsilon(const double *rdp, double delta, int *order) {
    double best = INFINITY;
    int best_order = 0;
    for (int k = 0; k < VF_RDP_N_ORDERS; k++) {
        double a = vf_rdp_orders[k], r = rdp[k], eps;
        if (delta <= 0 || !(r < INFINITY)) eps = INFINITY;
        else if (r <= 0) eps = 0;
        else if (delta * delta + expm1(-r) > 0) eps = 0;   /* the KL bound already gives delta */
        else eps = r + log1p(-1 / a) - log(delta * a) / (a - 1);
        if (eps < best) {
            best = eps;
            best_order = (int)a;
        }
    }
    if (order) *order = best_order;
    return best > 0 ? best : 0;
}

double vf_rdp_epsilon(double q, double sigma, long steps, double delta) {
    double rdp[VF_RDP_N_ORDERS];
    vf_rdp_subsampled_gaussian(q, sigma, rdp);
    for (int k = 0; k < VF_RDP_N_ORDERS; k++) rdp[k] *= (double)steps;
    return vf_rdp_to_epsilon(rdp, delta, NULL);
}
