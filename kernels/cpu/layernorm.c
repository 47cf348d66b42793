/* layernorm: LayerNorm forward (see layernorm.h). */
#include "cpu/layernorm.h"
#include "cpu/bf16.h"
#include "cpu/cpu_dispatch.h"

#include <math.h>

/* A row's mean and 1/sqrt(var + eps): two passes (mean, then centred
 * variance), as PyTorch does, so that large offsets do not cost precision. */
static inline void row_stats(const float *x, int C, float eps, float *mean, float *rstd) {
    float m = 0.0f;
#pragma omp simd reduction(+ : m)
    for (int i = 0; i < C; i++) m += x[i];
    m /= (float)C;
    float v = 0.0f;
#pragma omp simd reduction(+ : v)
    for (int i = 0; i < C; i++) { float d = x[i] - m; v += d * d; }
    v /= (float)C;
    *mean = m;
    *rstd = 1.0f / sqrtf(v + eps);
}

/* Rows of (inp - mean) * rstd * weight + bias, written to out (fp32) or, when
 * out16 is set, rounded to bf16 into out16. */
VF_CPU_DISPATCH static void layernorm_rows(float *out, uint16_t *out16, float *mean, float *rstd, const float *inp,
                                           const float *weight, const float *bias, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (long)n * C;
        float m, s;
        row_stats(x, C, eps, &m, &s);
        if (out16) {
            uint16_t *y = out16 + (long)n * C;
#pragma omp simd
            for (int i = 0; i < C; i++) y[i] = vf_f32_to_bf16((x[i] - m) * s * weight[i] + bias[i]);
        } else {
            float *y = out + (long)n * C;
#pragma omp simd
            for (int i = 0; i < C; i++) y[i] = (x[i] - m) * s * weight[i] + bias[i];
        }
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = s;
    }
}

void vf_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N,
                          int C, float eps) {
    layernorm_rows(out, NULL, mean, rstd, inp, weight, bias, N, C, eps);
}

void vf_layernorm_forward_bf16(uint16_t *out, const float *inp, const float *weight, const float *bias, int N, int C, float eps) {
    layernorm_rows(NULL, out, NULL, NULL, inp, weight, bias, N, C, eps);
}
