/* rng: splitmix64, named streams and the Box-Muller step (see rng.h). */
#include "util/rng.h"

#include <math.h>

void vf_rng_seed(vf_rng *r, uint64_t seed) { r->state = seed; }

uint64_t vf_rng_next(vf_rng *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t vf_rng_below(vf_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;   /* largest multiple of n */
    uint64_t x;
    do x = vf_rng_next(r); while (x >= limit);
    return x % n;
}

uint64_t vf_rng_name_seed(uint64_t seed, const char *name) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

void vf_rng_box_muller(vf_rng *r, double *radius, double *angle) {
    double u1 = ((vf_rng_next(r) >> 11) + 1.0) * 0x1.0p-53, u2 = (vf_rng_next(r) >> 11) * 0x1.0p-53;
    *radius = sqrt(-2.0 * log(u1));
    *angle = 2 * M_PI * u2;
}
