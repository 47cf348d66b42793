/* fastmath: a branch-free expf that the compiler vectorises inside
 * `#pragma omp simd` loops (glibc's expf is scalar without -ffast-math).
 * Cephes' single-precision polynomial after reduction by ln 2: relative
 * error about 2e-7 over the clamped range [-87.3, 88.7]. */
#ifndef VF_CPU_FASTMATH_H
#define VF_CPU_FASTMATH_H

#include <stdint.h>
#include <string.h>

#pragma omp declare simd
static inline float vf_expf(float x) {
    x = x < -87.3f ? -87.3f : x > 88.7f ? 88.7f : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f; /* ln 2 split in two for exactness */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

#endif
