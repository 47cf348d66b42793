/* gauss: seeded Gaussian noise (see gauss.h). */
#include "privacy/gauss.h"
#include "data/shuffle.h"

#include <math.h>

void vf_gauss_add(uint64_t seed, uint64_t stream, uint64_t counter, float stddev, float *out, long n) {
    vf_rng r;
    /* three splitmix steps fold (seed, stream, counter) into one unrelated state */
    vf_rng_seed(&r, seed);
    vf_rng_seed(&r, vf_rng_next(&r) ^ stream * 0x9E3779B97F4A7C15ull);
    vf_rng_seed(&r, vf_rng_next(&r) ^ (counter + 1) * 0xD1B54A32D192ED03ull);
    const double two_pi = 6.283185307179586;
    for (long i = 0; i < n; i += 2) {
        /* uniforms in (0, 1]: 53 random bits, never 0 so the log is finite */
        double u1 = ((double)(vf_rng_next(&r) >> 11) + 1.0) * 0x1.0p-53;
        double u2 = (double)(vf_rng_next(&r) >> 11) * 0x1.0p-53;
        double rad = sqrt(-2.0 * log(u1));
        out[i] += (float)(stddev * rad * cos(two_pi * u2));
        if (i + 1 < n) out[i + 1] += (float)(stddev * rad * sin(two_pi * u2));
    }
}
