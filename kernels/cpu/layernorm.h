/* layernorm: LayerNorm forward over the last dimension, plain C. */
#ifndef VF_CPU_LAYERNORM_H
#define VF_CPU_LAYERNORM_H

/* out (N, C) = (inp - mean) * rstd * weight + bias, per row of C.
 * mean, rstd (N) are saved for the backward pass; either may be NULL. */
void vf_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                          const float *bias, int N, int C, float eps);

#endif
