/* layernorm: LayerNorm forward over the last dimension, plain C. */
#ifndef VF_CPU_LAYERNORM_H
#define VF_CPU_LAYERNORM_H

#include <stdint.h>

/* out (N, C) = (inp - mean) * rstd * weight + bias, per row of C.
 * mean, rstd (N) are saved for the backward pass; either may be NULL. */
void vf_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                          const float *bias, int N, int C, float eps);

/* The same, computed in fp32, written in bf16 (cpu/bf16.h) for a bf16
 * product to read (inference: no mean or rstd). */
void vf_layernorm_forward_bf16(uint16_t *out, const float *inp, const float *weight, const float *bias, int N, int C,
                               float eps);

#endif
