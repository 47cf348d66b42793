/* shuffle: splitmix64 and Fisher-Yates. */
#include "data/shuffle.h"

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

void vf_shuffle_ints(vf_rng *r, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)vf_rng_below(r, (uint64_t)i + 1);
        int t = a[i]; a[i] = a[j]; a[j] = t;
    }
}

void vf_epoch_order(uint64_t seed, int epoch, int *order, int n) {
    vf_rng r;
    /* One splitmix step over (seed, epoch) keeps nearby pairs unrelated. */
    vf_rng_seed(&r, seed);
    vf_rng_seed(&r, vf_rng_next(&r) ^ ((uint64_t)epoch + 1) * 0xD1B54A32D192ED03ull);
    for (int i = 0; i < n; i++) order[i] = i;
    vf_shuffle_ints(&r, order, n);
}
