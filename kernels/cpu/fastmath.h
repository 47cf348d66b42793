/* fastmath: a branch-free expf that the compiler vectorises inside
 * `#pragma omp simd` loops (glibc's expf is scalar without -ffast-math).
 * Cephes' single-precision polynomial after reduction by ln 2: relative
 * error about 2e-7 over the clamped range [-87.3, 88.3]. */
#ifndef VF_CPU_FASTMATH_H
#define VF_CPU_FASTMATH_H

#include <stdint.h>

static inline float vf_expf(float x) {
    x = x < -87.3f ? -87.3f : x > 88.3f ? 88.3f : x; /* 2^n stays a normal float */
    /* round to nearest by adding and removing 1.5 * 2^23 (floorf does not vectorise) */
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    /* 2^n from t's own bits (t = 1.5 * 2^23 + n, so its low bits are n): a
     * float-to-int conversion would be undefined for NaN, which must come out
     * as NaN, not as a crash under UBSan or a made-up number */
    union { float f; int32_t i; } bits = {.f = t};
    float r = x - n * 0.693359375f + n * 2.12194440e-4f; /* ln 2 split in two for exactness */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {.i = (int32_t)((uint32_t)(bits.i - 0x4B400000 + 127) << 23)}; /* 2^n */
    return p * scale.f;
}

#endif
