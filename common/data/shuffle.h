/* shuffle: the seeded, platform-independent permutations behind data splits
 * and batch orders (util/rng.h's stream; Fisher-Yates with rejection sampling,
 * so a seed gives the same order on every machine and compiler). */
#ifndef VF_SHUFFLE_H
#define VF_SHUFFLE_H

#include <stdint.h>
#include "util/rng.h"

/* Shuffles a[0..n) in place. */
void vf_shuffle_ints(vf_rng *r, int *a, int n);
/* The order of epoch `epoch` under `seed`: a permutation of 0..n-1 that
 * depends only on (seed, epoch, n). */
void vf_epoch_order(uint64_t seed, int epoch, int *order, int n);

#endif
