/* backward: input-gradient backward passes of layer norm, linear layers,
 * GELU variants, residual adds and causal attention (see backward.h). */
#include "cpu/backward.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void vf_layernorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
                           const float *mean, const float *rstd, float eps, int BT, int C) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < BT; r++) {
        const float *x = inp + (size_t)r * C;
        const float *dy = dout + (size_t)r * C;
        float *dx = dinp + (size_t)r * C;
        float mu, rs;
        if (mean && rstd) { mu = mean[r]; rs = rstd[r]; }
        else {
            double s = 0, s2 = 0;
            for (int i = 0; i < C; i++) s += x[i];
            mu = (float)(s / C);
            for (int i = 0; i < C; i++) { double d = x[i] - mu; s2 += d * d; }
            rs = (float)(1.0 / sqrt(s2 / C + eps));
        }
        /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight */
        float mean_g = 0, mean_gx = 0;
        for (int i = 0; i < C; i++) {
            float g = dy[i] * weight[i];
            mean_g += g;
            mean_gx += g * (x[i] - mu) * rs;
        }
        mean_g /= C;
        mean_gx /= C;
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - mu) * rs;
            dx[i] += rs * (dy[i] * weight[i] - mean_g - xhat * mean_gx);
        }
    }
}

void vf_matmul_backward_input(float *dinp, const float *dout, const float *weight, int BT, int IC, int OC) {
    // dinp (BT, IC) += dout (BT, OC) @ weight (OC, IC)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BT, IC, OC, 1.0f, dout, OC, weight, IC, 1.0f, dinp, IC);
}

void vf_quick_gelu_backward(float *dinp, const float *inp, const float *dout, long N) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < N; i++) {
        float x = inp[i];
        float s = 1.0f / (1.0f + expf(-1.702f * x));
        dinp[i] += dout[i] * (s + x * 1.702f * s * (1.0f - s));
    }
}

void vf_gelu_backward(float *dinp, const float *inp, const float *dout, long N) {
    const float inv_sqrt2 = 0.70710678118654752f, inv_sqrt_2pi = 0.39894228040143268f;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < N; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * inv_sqrt2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

void vf_gelu_tanh_backward(float *dinp, const float *inp, const float *dout, long N) {
    const float k = 0.79788456080286536f; /* sqrt(2/pi) */
#pragma omp parallel for schedule(static)
    for (long i = 0; i < N; i++) {
        float x = inp[i];
        float u = k * (x + 0.044715f * x * x * x);
        float th = tanhf(u);
        float du = k * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du);
    }
}

void vf_residual_backward(float *da, float *db, const float *dout, long N) {
    for (long i = 0; i < N; i++) {
        if (da) da[i] += dout[i];
        if (db) db[i] += dout[i];
    }
}

/* Softmax probabilities of one (b, h) slice: att (T, T), rows s <= t. */
static void attention_probs(float *att, const float *q, const float *k, int T, int hs, int ld, float scale) {
    for (int t = 0; t < T; t++) {
        const float *qt = q + (size_t)t * ld;
        float *row = att + (size_t)t * T;
        float maxv = -INFINITY;
        for (int s = 0; s <= t; s++) {
            const float *ks = k + (size_t)s * ld;
            float dot = 0;
            for (int i = 0; i < hs; i++) dot += qt[i] * ks[i];
            row[s] = dot * scale;
            if (row[s] > maxv) maxv = row[s];
        }
        float sum = 0;
        for (int s = 0; s <= t; s++) { row[s] = expf(row[s] - maxv); sum += row[s]; }
        for (int s = 0; s <= t; s++) row[s] /= sum;
        for (int s = t + 1; s < T; s++) row[s] = 0;
    }
}

void vf_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                           const float *q, const float *k, const float *v, const float *att,
                           int B, int T, int C, int NH, int ld, float scale, const vf_row_ranges *rows) {
    int hs = C / NH;
    /* Gradient rows: full layout (row b*T + t, stride ld; dout stride C), or
     * packed (row off[b] + t - lo[b], stride C) for t in [lo[b], hi[b]). */
    const int gld = rows ? C : ld;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const int lo = rows ? rows->lo[b] : 0, hi = rows ? rows->hi[b] : T;
            const long g0 = rows ? (long)rows->off[b] - lo : (long)b * T;   // gradient row of t is g0 + t (t >= lo)
            size_t off = (size_t)b * T * ld + (size_t)h * hs;
            const float *qb = q + off, *kb = k + off, *vb = v + off;
#define GROW(buf, t, stride) ((buf) + (size_t)(g0 + (t)) * (stride) + (size_t)h * hs)
            const float *a;   // (T, T) probabilities of this (b, h)
            if (att) a = att + ((size_t)b * NH + h) * T * T;
            else {
                float *recomputed = scratch + ((size_t)b * NH + h) * T * T;
                attention_probs(recomputed, qb, kb, T, hs, ld, scale);
                a = recomputed;
            }
            for (int t = lo; t < hi; t++) {
                const float *dot_ = GROW(dout, t, C);
                const float *arow = a + (size_t)t * T;
                /* datt[t,s] = dout[t] . v[s]; dv[s] += att[t,s] dout[t] (rows below lo are not wanted) */
                float dpre[T];   // d(att[t, :]), T <= max positions (77)
                float row_dot = 0;
                for (int s = 0; s <= t; s++) {
                    const float *vs = vb + (size_t)s * ld;
                    float d = 0, w = arow[s];
                    for (int i = 0; i < hs; i++) d += dot_[i] * vs[i];
                    if (s >= lo) {
                        float *dvs = GROW(dv, s, gld);
                        for (int i = 0; i < hs; i++) dvs[i] += w * dot_[i];
                    }
                    dpre[s] = d;
                    row_dot += w * d;
                }
                /* softmax backward, then the scaled dot product */
                const float *qt = qb + (size_t)t * ld;
                float *dqt = GROW(dq, t, gld);
                for (int s = 0; s <= t; s++) {
                    float g = arow[s] * (dpre[s] - row_dot) * scale;
                    const float *ks = kb + (size_t)s * ld;
                    for (int i = 0; i < hs; i++) dqt[i] += g * ks[i];
                    if (s >= lo) {
                        float *dks = GROW(dk, s, gld);
                        for (int i = 0; i < hs; i++) dks[i] += g * qt[i];
                    }
                }
            }
#undef GROW
        }
}
