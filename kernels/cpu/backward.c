/* backward: input-gradient backward passes of layer norm, linear layers,
 * GELU variants, residual adds and causal attention (see backward.h). */
#include "cpu/backward.h"
#include "cpu/cpu_dispatch.h"

#include "cpu/fastmath.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

VF_CPU_DISPATCH void vf_layernorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
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

VF_CPU_DISPATCH void vf_quick_gelu_backward(float *dinp, const float *inp, const float *dout, long N) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < N; i++) {
        float x = inp[i];
        float s = 1.0f / (1.0f + vf_expf(-1.702f * x));
        dinp[i] += dout[i] * (s + x * 1.702f * s * (1.0f - s));
    }
}

VF_CPU_DISPATCH void vf_gelu_backward(float *dinp, const float *inp, const float *dout, long N) {
    const float inv_sqrt2 = 0.70710678118654752f, inv_sqrt_2pi = 0.39894228040143268f;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < N; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * inv_sqrt2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

VF_CPU_DISPATCH void vf_gelu_tanh_backward(float *dinp, const float *inp, const float *dout, long N) {
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

VF_CPU_DISPATCH void vf_residual_backward(float *da, float *db, const float *dout, long N) {
    for (long i = 0; i < N; i++) {
        if (da) da[i] += dout[i];
        if (db) db[i] += dout[i];
    }
}

/* Softmax probabilities of one (b, h) slice: att (T, T), rows s <= t. */
VF_CPU_DISPATCH static void attention_probs(float *att, const float *q, const float *k, int T, int hs, int ld, float scale) {
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

/* One (b, h) slice, query rows t in [lo, hi) (keys s < hi):
 *   dP (n, hi) = dO @ V^T;  dV[lo:hi] += P[:, lo:hi]^T @ dO
 *   dS = P * (dP - rowsum(P * dP)) * scale
 *   dQ += dS @ K;           dK[lo:hi] += dS[:, lo:hi]^T @ Q[lo:hi]
 * P is (T, T) with masked entries 0, so the masked part of dP drops out.
 * dO, dQ, dK, dV point at row lo of their layouts (strides dld, gld). */
VF_CPU_DISPATCH static void attention_backward_head(float *dQ, float *dK, float *dV, const float *dO, const float *P, const float *Q,
                                    const float *K, const float *V, int lo, int hi, int T, int hs, int ld, int dld,
                                    int gld, float scale) {
    const int n = hi - lo;
    float dP[n * hi];   // (n, hi), at most 77 x 77
    const float *Pr = P + (size_t)lo * T;   // rows lo.. of P, stride T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, hi, hs, 1.0f, dO, dld, V, ld, 0.0f, dP, hi);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hs, n, 1.0f, Pr + lo, T, dO, dld, 1.0f, dV, gld);
    for (int r = 0; r < n; r++) {
        const float *p = Pr + (size_t)r * T;
        float *d = dP + (size_t)r * hi;
        float row_dot = 0.0f;
#pragma omp simd reduction(+ : row_dot)
        for (int s = 0; s < hi; s++) row_dot += p[s] * d[s];
#pragma omp simd
        for (int s = 0; s < hi; s++) d[s] = p[s] * (d[s] - row_dot) * scale;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, hi, 1.0f, dP, hi, K, ld, 1.0f, dQ, gld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hs, n, 1.0f, dP + lo, hi, Q + (size_t)lo * ld, ld, 1.0f, dK, gld);
}

void vf_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                           const float *q, const float *k, const float *v, const float *att,
                           int B, int T, int C, int NH, int ld, float scale, const vf_row_ranges *rows) {
    const int hs = C / NH;
    /* Gradient rows: full layout (row b*T + t, stride ld; dout stride C), or
     * packed (row off[b] + t - lo[b], stride C) for t in [lo[b], hi[b]). */
    const int gld = rows ? C : ld;
    /* Many small products in parallel: OpenBLAS single-threaded inside. */
    const int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const int lo = rows ? rows->lo[b] : 0, hi = rows ? rows->hi[b] : T;
            if (hi <= lo) continue;
            const size_t g_lo = rows ? (size_t)rows->off[b] : (size_t)b * T;   // gradient row of t = lo
            const size_t off = (size_t)b * T * ld + (size_t)h * hs;
            const float *a;   // (T, T) probabilities of this (b, h)
            if (att) a = att + ((size_t)b * NH + h) * T * T;
            else {
                float *recomputed = scratch + ((size_t)b * NH + h) * T * T;
                attention_probs(recomputed, q + off, k + off, T, hs, ld, scale);
                a = recomputed;
            }
            attention_backward_head(dq + g_lo * gld + (size_t)h * hs, dk + g_lo * gld + (size_t)h * hs,
                                    dv + g_lo * gld + (size_t)h * hs, dout + g_lo * C + (size_t)h * hs, a, q + off,
                                    k + off, v + off, lo, hi, T, hs, ld, C, gld, scale);
        }
    openblas_set_num_threads(blas_threads);
}
