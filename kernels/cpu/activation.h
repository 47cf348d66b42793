/* activation: elementwise forward ops of the transformer layers. */
#ifndef VF_CPU_ACTIVATION_H
#define VF_CPU_ACTIVATION_H

#include "cpu/clip_shapes.h"

/* out (N) = act(inp); out may equal inp. */
void vf_quick_gelu_forward(float *out, const float *inp, long N); /* x * sigmoid(1.702 x) */
void vf_gelu_forward(float *out, const float *inp, long N);       /* 0.5 x (1 + erf(x / sqrt 2)) */
void vf_gelu_tanh_forward(float *out, const float *inp, long N);  /* tanh approximation */
void vf_activation_forward(vf_activation act, float *out, const float *inp, long N);

/* out (N) = a + b; out may equal a or b. */
void vf_residual_forward(float *out, const float *a, const float *b, long N);

#endif
