/* gauss: seeded Gaussian noise for the privacy mechanisms.  The noise of a
 * release depends only on (seed, stream, counter) — e.g. (run seed, "text
 * gradient", step) or (party seed, split, example index) — so a resumed or
 * re-chunked run adds exactly the same noise, and one process and the
 * federation agree. */
#ifndef VF_PRIVACY_GAUSS_H
#define VF_PRIVACY_GAUSS_H

#include <stdint.h>

/* Streams keep the noise of different mechanisms independent. */
#define VF_NOISE_TEXT_GRAD 0x7465787447ull   /* dL/dT released by the aggregator */
#define VF_NOISE_EMBEDDING 0x656d6245ull     /* image embeddings released by an image party */

/* out[i] += stddev * N(0, 1) for i < n (Box-Muller over a splitmix64 stream). */
void vf_gauss_add(uint64_t seed, uint64_t stream, uint64_t counter, float stddev, float *out, long n);

#endif
