/* rdp: a Rényi-DP accountant for the (Poisson-subsampled) Gaussian mechanism,
 * the epsilon every privacy report of a run quotes.
 *
 * One release of a Gaussian mechanism with L2 sensitivity 1 and noise
 * standard deviation sigma, applied to a Poisson sample of rate q, has RDP
 * of order alpha equal to log(A_alpha) / (alpha - 1) with (integer alpha)
 *   A_alpha = sum_{i=0..alpha} C(alpha,i) q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 sigma^2))
 * (Mironov, Talwar, Zhang 2019); q = 1 gives alpha / (2 sigma^2).  Steps
 * compose by adding RDP; epsilon at delta is the minimum over the orders of
 *   rdp + log(1 - 1/alpha) - log(delta * alpha) / (alpha - 1)
 * (Balle et al. 2020, Prop. 12), the same conversion as Google's
 * dp-accounting RdpAccountant, which the tests compare against with the same
 * integer orders. */
#ifndef VF_PRIVACY_RDP_H
#define VF_PRIVACY_RDP_H

/* The integer orders the accountant evaluates. */
#define VF_RDP_N_ORDERS 67
extern const int vf_rdp_orders[VF_RDP_N_ORDERS];

/* RDP of one subsampled Gaussian release at every order into rdp[VF_RDP_N_ORDERS].
 * sigma <= 0 gives +inf (no privacy); q <= 0 gives 0. */
void vf_rdp_subsampled_gaussian(double q, double sigma, double *rdp);

/* Epsilon at delta from accumulated RDP values; *order (may be NULL) gets the
 * optimal order.  +inf when no order gives a finite bound. */
double vf_rdp_to_epsilon(const double *rdp, double delta, int *order);

/* Epsilon after `steps` releases of rate q and noise multiplier sigma. */
double vf_rdp_epsilon(double q, double sigma, long steps, double delta);

#endif
