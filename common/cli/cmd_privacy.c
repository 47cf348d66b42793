/* cmd_privacy: `vflclip dp-epsilon` — the RDP accountant of the federation
 * (privacy/rdp.h) on the command line: epsilon at delta for a noise
 * multiplier, sampling rate and number of steps, so an operator can choose
 * text_grad_noise / epsilon_budget before a run, and the tests can compare
 * the accountant with Google's dp-accounting. */
#include "cli/commands.h"
#include "privacy/rdp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *o) {
    fprintf(o, "usage: vflclip dp-epsilon --noise SIGMA --sampling-rate Q --steps N [--delta D (default 1e-5)]\n"
               "  prints {\"epsilon\": E, \"order\": A} for N releases of the Poisson-subsampled Gaussian mechanism\n"
               "  (RDP, integer orders 2..64,128,256,512,1024; epsilon null when infinite)\n");
}

static int number(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    double d = strtod(v, &end);
    if (*end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "vflclip dp-epsilon: %s '%s' must be a number in [%g, %g]\n", opt, v, lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

int vf_cmd_dp_epsilon(int argc, char **argv) {
    double sigma = -1, q = -1, steps = -1, delta = 1e-5;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { usage(stdout); return 0; }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip dp-epsilon: %s needs a value (or is unknown)\n", o); return 2; }
        const char *v = argv[++i];
        int bad;
        if (!strcmp(o, "--noise")) bad = number(o, v, 0, 1e6, &sigma);
        else if (!strcmp(o, "--sampling-rate")) bad = number(o, v, 0, 1, &q);
        else if (!strcmp(o, "--steps")) bad = number(o, v, 0, 1e12, &steps);
        else if (!strcmp(o, "--delta")) bad = number(o, v, 1e-300, 0.999999, &delta);
        else { fprintf(stderr, "vflclip dp-epsilon: unknown option %s\n", o); usage(stderr); return 2; }
        if (bad) return 2;
    }
    if (sigma < 0 || q < 0 || steps < 0) { fprintf(stderr, "vflclip dp-epsilon: --noise, --sampling-rate and --steps are required\n"); return 2; }
    double rdp[VF_RDP_N_ORDERS];
    vf_rdp_subsampled_gaussian(q, sigma, rdp);
    for (int k = 0; k < VF_RDP_N_ORDERS; k++) rdp[k] *= floor(steps);
    int order;
    double eps = vf_rdp_to_epsilon(rdp, delta, &order);
    if (isfinite(eps)) printf("{\"epsilon\":%.17g,\"order\":%d}\n", eps, order);
    else printf("{\"epsilon\":null,\"order\":null}\n");
    return 0;
}
