/* rng: the project's one seeded random stream (splitmix64), the same on every
 * machine and compiler, so a seed names one data split, one batch order, one
 * random-weight model, one noise draw.  Callers that draw normals share the
 * Box-Muller step here; how they scale it stays theirs, because the order of
 * their multiplications decides the bytes of the files they write. */
#ifndef VF_RNG_H
#define VF_RNG_H

#include <stdint.h>

typedef struct vf_rng { uint64_t state; } vf_rng;

void vf_rng_seed(vf_rng *r, uint64_t seed);
uint64_t vf_rng_next(vf_rng *r);
/* Uniform in [0, n), n >= 1, without modulo bias. */
uint64_t vf_rng_below(vf_rng *r, uint64_t n);
/* The state of the stream named `name` under `seed` (FNV-1a over the name), so
 * each tensor of a random model has its own stream, independent of the order
 * in which tensors are generated. */
uint64_t vf_rng_name_seed(uint64_t seed, const char *name);
/* One Box-Muller draw from two 53-bit uniforms (u1 in (0, 1], so the log is
 * finite): the pair radius * cos(angle), radius * sin(angle) is two
 * independent N(0, 1) values. */
void vf_rng_box_muller(vf_rng *r, double *radius, double *angle);

#endif
