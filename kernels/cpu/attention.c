/* attention: multi-head attention forward (see attention.h).
 *
 * One OpenMP iteration per (batch, head): two sgemm calls (scores = q k^T,
 * out = P v) with a vectorised softmax between.  OpenBLAS is switched to one
 * thread for the duration, so each OpenMP thread runs its own small sgemm
 * instead of all of them fighting over OpenBLAS's thread pool; a head's
 * matrices (T x hs, T <= 577) fit in cache, where this beats any loop
 * written here by 3x.
 *
 * The bf16 variant (inference on CPUs with AVX512_BF16/AMX) runs the two
 * products through oneDNN on bf16 q, k, v and probabilities, with fp32
 * scores and softmax in between. */
#include "cpu/attention.h"
#include "cpu/attention_amx.h"
#include "cpu/bf16.h"
#include "cpu/matmul_bf16.h"
#include "cpu/cpu_dispatch.h"
#include "cpu/fastmath.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* p[0, n) = exp(scale (p - max p)), in place; returns 1 / their sum. */
static inline float softmax_exp(float *p, int n, float scale) {
    float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
    for (int s = 0; s < n; s++) maxv = p[s] > maxv ? p[s] : maxv;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int s = 0; s < n; s++) { p[s] = vf_expf((p[s] - maxv) * scale); sum += p[s]; }
    return 1.0f / sum;
}

/* P (T, T) = softmax rows of scale * q k^T (causal: s <= t, rest 0);
 * out (T, hs) = P v; q/k/v/out rows ld/ld/ld/C apart. */
VF_CPU_DISPATCH static void attend_head(float *out, float *P, const float *q, const float *k, const float *v, int T, int C, int hs,
                        int ld, float scale, int causal) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, ld, k, ld, 0.0f, P, T);
    for (int t = 0; t < T; t++) {
        float *p = P + (long)t * T;
        const int n = causal ? t + 1 : T;
        const float inv = softmax_exp(p, n, 1.0f); /* scaled by sgemm */
#pragma omp simd
        for (int s = 0; s < n; s++) p[s] *= inv;
        for (int s = n; s < T; s++) p[s] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, P, T, v, ld, 0.0f, out, C);
}

/* P (rows, T) bf16 = softmax(scale S) of S (rows, T) fp32 (causal: s <=
 * row % T, the rest of P 0). */
static inline void softmax_rows_bf16(uint16_t *P, float *S, long rows, int T, float scale, int causal) {
    for (long r = 0; r < rows; r++) {
        float *p = S + r * T;
        uint16_t *pb = P + r * T;
        const int n = causal ? (int)(r % T) + 1 : T;
        const float inv = softmax_exp(p, n, scale);
#pragma omp simd
        for (int s = 0; s < n; s++) pb[s] = vf_f32_to_bf16(p[s] * inv);
        memset(pb + n, 0, sizeof(uint16_t) * (size_t)(T - n));
    }
}

/* bf16 attention for G heads through oneDNN (one call per product):
 * S (G, T, T) fp32 = q k^T, P = softmax(scale S) in bf16, out (T, G heads
 * of hs) bf16 = P v; q/k/v rows ld apart, out rows C. */
VF_CPU_DISPATCH static void attend_heads_dnnl(uint16_t *out, float *S, uint16_t *P, const uint16_t *q, const uint16_t *k,
                                              const uint16_t *v, int G, int T, int C, int hs, int ld, float scale, int causal) {
    const long TT = (long)T * T;
    vf_bf16_gemm_batched(G, T, hs, T, (vf_bf16_strided){S, TT, T, 1}, 0, (vf_bf16_strided){(void *)q, hs, ld, 1},
                         (vf_bf16_strided){(void *)k, hs, 1, ld}); /* k^T: element (d, s) at k[s * ld + d] */
    softmax_rows_bf16(P, S, (long)G * T, T, scale, causal);
    vf_bf16_gemm_batched(G, T, T, hs, (vf_bf16_strided){out, hs, C, 1}, 1, (vf_bf16_strided){P, TT, T, 1},
                         (vf_bf16_strided){(void *)v, hs, ld, 1});
}

/* Heads per oneDNN call: a divisor of NH whose scores fit in about 4 MB
 * (all 12 of ViT-B's at T = 197, 2 at T = 577), fewer while that would
 * leave threads idle (fewer images than threads). */
static int heads_cap(int T, int NH) {
    int G = NH;
    while (G > 1 && (NH % G || (long)G * T * T > (1L << 20))) G--;
    return G;
}

static int heads_per_call(int B, int T, int NH) {
    const int threads = omp_get_max_threads();
    int G = heads_cap(T, NH);
    while (G > 1 && (NH % G || (long)B * (NH / G) < threads)) G--;
    return G;
}

static int use_amx(int hs) { return hs == 64 && vf_cpu_bf16_amx(); }

/* Per thread, in floats: the scores and probabilities of the largest call
 * (fp32: one head's T*T; oneDNN: G heads' scores and bf16 probabilities;
 * AMX: vf_amx_attend_head's scratch). */
static size_t thread_scratch_floats(int T, int NH, int hs) {
    const size_t TT = (size_t)T * T, G = (size_t)heads_cap(T, NH);
    size_t n = G * TT + (G * TT + 1) / 2;
    if (use_amx(hs)) {
        const size_t amx = (vf_amx_scratch_bytes(T) + 3) / 4;
        n = n > amx ? n : amx;
    }
    return (n + 15) / 16 * 16;
}

static void attention(float *out, float *att, float *scratch, const float *q, const float *k, const float *v, int B, int T,
                      int C, int NH, int ld, float scale, int causal) {
    const int hs = C / NH, blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            float *P = att ? att + ((long)b * NH + h) * T * T : scratch + (long)omp_get_thread_num() * thread_scratch_floats(T, NH, hs);
            const long row0 = (long)b * T;
            attend_head(out + row0 * C + h * hs, P, q + row0 * ld + h * hs, k + row0 * ld + h * hs, v + row0 * ld + h * hs,
                        T, C, hs, ld, scale, causal);
        }
    openblas_set_num_threads(blas_threads);
}

void vf_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int C, int NH, int ld, float scale, int causal) {
    attention(out, att, NULL, q, k, v, B, T, C, NH, ld, scale, causal);
}

size_t vf_attention_scratch_floats(int T, int C, int NH) {
    return (size_t)omp_get_max_threads() * thread_scratch_floats(T, NH, C / NH);
}

void vf_attention_forward_nosave(float *out, float *scratch, const float *q, const float *k, const float *v,
                                 int B, int T, int C, int NH, int ld, float scale, int causal) {
    attention(out, NULL, scratch, q, k, v, B, T, C, NH, ld, scale, causal);
}

void vf_attention_forward_bf16(uint16_t *out, float *scratch, const uint16_t *qkv, int B, int T, int C, int NH, float scale,
                               int causal) {
    const int hs = C / NH, ld = 3 * C;
    const size_t per_thread = thread_scratch_floats(T, NH, hs);
    if (use_amx(hs)) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                const uint16_t *q = qkv + (long)b * T * ld + h * hs;
                vf_amx_attend_head(out + (long)b * T * C + h * hs, C, q, q + C, q + 2 * C, ld, T, scale, causal,
                                   scratch + (long)omp_get_thread_num() * per_thread);
            }
        return;
    }
    const int G = heads_per_call(B, T, NH), groups = NH / G;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < groups; g++) {
            float *S = scratch + (long)omp_get_thread_num() * per_thread;
            const uint16_t *q = qkv + (long)b * T * ld + g * G * hs;
            attend_heads_dnnl(out + (long)b * T * C + g * G * hs, S, (uint16_t *)(S + (long)G * T * T), q, q + C, q + 2 * C, G, T, C,
                              hs, ld, scale, causal);
        }
}
