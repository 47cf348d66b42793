/* shuffle: Fisher-Yates over the seeded stream (see shuffle.h). */
#include "data/shuffle.h"

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
