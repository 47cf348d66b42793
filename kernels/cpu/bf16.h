/* bf16: one float's rounding to bfloat16 and back, for the loops that write
 * bf16 activations themselves (layer norm, softmax) and the conversions of
 * cpu/matmul_bf16.h.  Inline so that `#pragma omp simd` loops vectorise it. */
#ifndef VF_CPU_BF16_H
#define VF_CPU_BF16_H

#include <stdint.h>
#include <string.h>

/* Round to nearest, ties to even; NaN stays a (quiet) NaN. */
static inline uint16_t vf_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float vf_bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
