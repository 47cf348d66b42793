/* matmul_amx: bf16 Linear layers on AMX tiles with a fused epilogue (see
 * matmul_amx.h).
 *
 * Each thread takes a contiguous range of 32-row blocks of the input.  The
 * output columns are walked in panels whose packed weights fit in about
 * 1.5 MB of L2; within a panel, for each row block and each 32-column block,
 * four C tiles (32 x 32 sums) accumulate over the whole of IC (two A tiles,
 * two B tiles per 32 inputs), are stored to a 4 kB staging block and finished
 * there: + bias, the activation, + residual, fp32 or bf16 out. */
#include "cpu/matmul_amx.h"
#include "cpu/amx_tiles.h"
#include "cpu/avx512_math.h"
#include "cpu/bf16.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef VF_AMX_BUILD
#include <immintrin.h>
#endif

enum { TILE_ELEMS = 512 }; /* bf16 values in one 16 x 64-byte tile */

int vf_amx_linear_fits(int IC, int OC) { return IC > 0 && OC > 0 && IC % 32 == 0 && OC % 32 == 0; }

void vf_amx_linear_pack(uint16_t *dst, const uint16_t *w, int IC, int OC) {
    const int KT = IC / 32;
    for (int nb = 0; nb < OC / 16; nb++)
        for (int kt = 0; kt < KT; kt++) {
            uint16_t *tile = dst + ((size_t)nb * KT + kt) * TILE_ELEMS;
            for (int i = 0; i < 16; i++)     /* row i: inputs 2i, 2i + 1 of the 32 */
                for (int c = 0; c < 16; c++) { /* output column nb * 16 + c */
                    const uint16_t *row = w + (size_t)(nb * 16 + c) * IC + kt * 32 + 2 * i;
                    tile[i * 32 + 2 * c] = row[0];
                    tile[i * 32 + 2 * c + 1] = row[1];
                }
        }
}

#ifdef VF_AMX_BUILD
/* ---- the epilogue's activations, on 16 floats ---------------------------------- */
/* x * sigmoid(a) = x / (1 + e^-a) */
VF_AMX_TARGET static inline __m512 times_sigmoid(__m512 x, __m512 a) {
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), vf_exp16(_mm512_sub_ps(_mm512_setzero_ps(), a))));
}

VF_AMX_TARGET static inline __m512 activation16(vf_activation act, __m512 x) {
    switch (act) {
    case VF_ACT_QUICK_GELU: return times_sigmoid(x, _mm512_mul_ps(x, _mm512_set1_ps(1.702f)));
    case VF_ACT_GELU_TANH: { /* 0.5 x (1 + tanh u) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) */
        const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        const __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.79788456080286536f), _mm512_fmadd_ps(x3, _mm512_set1_ps(0.044715f), x));
        return times_sigmoid(x, _mm512_add_ps(u, u));
    }
    case VF_ACT_GELU: { /* 0.5 x (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26 (error < 1.5e-7) */
        const __m512 z = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
        const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
        __m512 p = _mm512_set1_ps(1.061405429f);
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
        p = _mm512_mul_ps(p, t);
        const __m512 e = _mm512_fnmadd_ps(p, vf_exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z))), _mm512_set1_ps(1.0f));
        const __m512 erf = _mm512_mask_sub_ps(e, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps(), e);
        return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
    }
    }
    return x;
}

/* What a call applies after the product. */
typedef struct epilogue {
    void *out;
    int out_bf16, OC;
    const float *resid, *bias;
    const vf_activation *act;
} epilogue;

/* rows of the 32 x 32 staging block (sums of rows m.., columns n..) out.
 * The fields are read into locals once: the stores to out could alias *e as
 * far as the compiler knows, which made it reload them for every vector. */
VF_AMX_TARGET static void finish_block(const epilogue *e, const float *stage, int m, int rows, int n) {
    const int OC = e->OC, out_bf16 = e->out_bf16, has_act = e->act != NULL;
    const vf_activation act = has_act ? *e->act : VF_ACT_QUICK_GELU;
    const float *bias = e->bias ? e->bias + n : NULL, *resid = e->resid;
    float *out32 = e->out;
    uint16_t *out16 = e->out;
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < 32; h += 16) {
            const long at = (long)(m + r) * OC + n + h;
            __m512 v = _mm512_load_ps(stage + r * 32 + h);
            if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + h));
            if (has_act) v = activation16(act, v);
            if (resid) v = _mm512_add_ps(v, _mm512_loadu_ps(resid + at));
            if (out_bf16) _mm256_storeu_si256((__m256i *)(out16 + at), (__m256i)_mm512_cvtneps_pbh(v));
            else _mm512_storeu_ps(out32 + at, v);
        }
}

/* One row block (32 rows of A, `lda` apart; `rows` of them real) times the
 * column blocks [n0, n1).  Each block's epilogue runs after the next
 * block's products are issued, so that it overlaps the tile unit finishing
 * them instead of waiting for the sums first (two staging blocks). */
VF_AMX_TARGET static void row_block(const epilogue *e, const uint16_t *packed, int IC, const uint16_t *A, long lda, int m, int rows,
                                    int n0, int n1, float *stage) {
    const int KT = IC / 32;
    const uint16_t *A1 = A + 16 * lda;
    /* A block of up to 64 kB (IC <= 1024): load the weights with the no-reuse
     * hint, so that they stream past L1 and the A block stays there for the
     * next column block (12% faster at IC = 768; no gain at IC = 3072) */
    const int stream_b = IC <= 1024;
    for (int n = n0; n < n1; n += 32) {
        const uint16_t *b0 = packed + (size_t)(n / 16) * KT * TILE_ELEMS, *b1 = b0 + (size_t)KT * TILE_ELEMS;
        float *cur = stage + ((n - n0) / 32 % 2) * 32 * 32, *prev = stage + ((n - n0) / 32 % 2 == 0) * 32 * 32;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int k = 0; k < KT; k++) {
            _tile_loadd(4, A + k * 32, lda * 2);
            _tile_loadd(5, A1 + k * 32, lda * 2);
            if (stream_b) {
                _tile_stream_loadd(6, b0 + (size_t)k * TILE_ELEMS, 64);
                _tile_stream_loadd(7, b1 + (size_t)k * TILE_ELEMS, 64);
            } else {
                _tile_loadd(6, b0 + (size_t)k * TILE_ELEMS, 64);
                _tile_loadd(7, b1 + (size_t)k * TILE_ELEMS, 64);
            }
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        if (n > n0) finish_block(e, prev, m, rows, n - 32);
        _tile_stored(0, cur, 128);
        _tile_stored(1, cur + 16, 128);
        _tile_stored(2, cur + 16 * 32, 128);
        _tile_stored(3, cur + 16 * 32 + 16, 128);
    }
    finish_block(e, stage + ((n1 - n0) / 32 - 1) % 2 * 32 * 32, m, rows, n1 - 32);
}

/* A thread's zero-padded copy of the last, partial row block (grows only
 * when a wider layer than any before comes). */
static __thread uint16_t *tl_pad;
static __thread size_t tl_pad_elems;

static uint16_t *padded_rows(const uint16_t *inp, int IC, int m, int rows) {
    const size_t need = (size_t)32 * IC;
    if (need > tl_pad_elems) {
        free(tl_pad);
        tl_pad = aligned_alloc(64, need * sizeof(uint16_t));
        if (!tl_pad) {
            fprintf(stderr, "vflclip: out of memory for a bf16 row block of %zu values\n", need);
            abort();
        }
        tl_pad_elems = need;
    }
    memcpy(tl_pad, inp + (size_t)m * IC, sizeof(uint16_t) * (size_t)rows * IC);
    memset(tl_pad + (size_t)rows * IC, 0, sizeof(uint16_t) * (size_t)(32 - rows) * IC);
    return tl_pad;
}

VF_AMX_TARGET static void thread_range(const epilogue *e, const uint16_t *packed, int IC, const uint16_t *inp, int N, int b0, int b1) {
    float stage[2 * 32 * 32] __attribute__((aligned(64)));
    /* panels of output columns whose packed weights take about 1.5 MB */
    int panel = (int)((3L << 19) / ((long)IC * 2 * 32)) * 32;
    if (panel < 32) panel = 32;
    /* the thread's last row block, when partial, through its padded copy (made once, read by every panel) */
    const int m_last = (b1 - 1) * 32, rows_last = N - m_last < 32 ? N - m_last : 32;
    const uint16_t *A_last = rows_last == 32 ? inp + (size_t)m_last * IC : padded_rows(inp, IC, m_last, rows_last);
    vf_amx_configure();
    for (int n0 = 0; n0 < e->OC; n0 += panel) {
        const int n1 = n0 + panel < e->OC ? n0 + panel : e->OC;
        for (int b = b0; b < b1; b++) {
            const int m = b * 32;
            if (b == b1 - 1) row_block(e, packed, IC, A_last, IC, m, rows_last, n0, n1, stage);
            else row_block(e, packed, IC, inp + (size_t)m * IC, IC, m, 32, n0, n1, stage);
        }
    }
    _tile_release();
}

void vf_amx_linear_forward(const uint16_t *packed, int IC, int OC, void *out, int out_bf16, const float *resid,
                           const uint16_t *inp, const float *bias, int N, const vf_activation *act) {
    if (N <= 0) return;
    const epilogue e = {out, out_bf16, OC, resid, bias, act};
    const int blocks = (N + 31) / 32;
#pragma omp parallel
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int b0 = (int)((long)blocks * t / nt), b1 = (int)((long)blocks * (t + 1) / nt);
        if (b0 < b1) thread_range(&e, packed, IC, inp, N, b0, b1);
    }
}
#else
void vf_amx_linear_forward(const uint16_t *packed, int IC, int OC, void *out, int out_bf16, const float *resid,
                           const uint16_t *inp, const float *bias, int N, const vf_activation *act) {
    (void)packed, (void)IC, (void)OC, (void)out, (void)out_bf16, (void)resid, (void)inp, (void)bias, (void)N, (void)act;
    fprintf(stderr, "vflclip: AMX Linear called in a build without AMX support\n");
    abort();
}
#endif
