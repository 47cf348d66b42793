/* attention: multi-head attention forward (see attention.h).  One OpenMP
 * task per (batch, head, query row); the dot products and the weighted sum
 * run over the head's contiguous hs floats, which the compiler vectorises. */
#include "cpu/attention.h"

#include <math.h>
#include <string.h>

void vf_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int C, int NH, int ld, float scale, int causal) {
    const int hs = C / NH;
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                float stack_p[T];
                float *p = att ? att + (((long)b * NH + h) * T + t) * T : stack_p;
                const float *qt = q + ((long)b * T + t) * ld + h * hs;
                const int n = causal ? t + 1 : T;
                float maxv = -INFINITY;
                for (int s = 0; s < n; s++) {
                    const float *ks = k + ((long)b * T + s) * ld + h * hs;
                    float d = 0.0f;
#pragma omp simd reduction(+ : d)
                    for (int i = 0; i < hs; i++) d += qt[i] * ks[i];
                    d *= scale;
                    p[s] = d;
                    if (d > maxv) maxv = d;
                }
                float sum = 0.0f;
                for (int s = 0; s < n; s++) { p[s] = expf(p[s] - maxv); sum += p[s]; }
                float inv = 1.0f / sum;
                for (int s = 0; s < n; s++) p[s] *= inv;
                for (int s = n; s < T; s++) p[s] = 0.0f;
                float *o = out + ((long)b * T + t) * C + h * hs;
                memset(o, 0, sizeof(float) * (size_t)hs);
                for (int s = 0; s < n; s++) {
                    const float *vs = v + ((long)b * T + s) * ld + h * hs;
                    const float w = p[s];
#pragma omp simd
                    for (int i = 0; i < hs; i++) o[i] += w * vs[i];
                }
            }
}
