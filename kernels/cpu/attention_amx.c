/* attention_amx: one attention head with its two products on AMX tiles and
 * the softmax between them in AVX-512 (see attention_amx.h).
 *
 * Every tile is 16 rows of 64 bytes: a C tile 16 x 16 fp32, an A tile 16 x 32
 * bf16, a B tile 16 pairs of rows x 16 columns (the "VNNI" layout: the two
 * bf16 of a pair adjacent).  q k^T reads q as A (rows of 64 bf16, copied
 * into a zero-padded block) and k^T from k repacked so that each 4-byte pair k[s][2i..2i+1] sits at
 * row i, column s; P v reads P as A and v repacked so that v[2j][d] and
 * v[2j+1][d] sit side by side.  Rows and columns are padded with zeros to
 * whole tiles, so no tile ever reads outside the scratch. */
#include "cpu/attention_amx.h"
#include "cpu/amx_tiles.h"
#include "cpu/avx512_math.h"
#include "cpu/bf16.h"

#include <math.h>
#include <string.h>
#ifdef VF_AMX_BUILD
#include <immintrin.h>
#endif

enum { HS = 64 };

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

static int padded_rows(int T) { return round_up(T, 16); }
static int padded_cols(int T) { return round_up(T, 32); }

/* The layout of the scratch: q and k repacked, v repacked, the C tiles'
 * staging (bytes, each part 64-aligned). */
static size_t part(size_t bytes) { return (bytes + 63) / 64 * 64; }
static size_t q_bytes(int T) { return part((size_t)padded_rows(T) * HS * 2); }
static size_t k_bytes(int T) { return part((size_t)(HS / 2) * padded_rows(T) * 4); }
static size_t v_bytes(int T) { return part((size_t)padded_cols(T) * HS * 2); }

/* the tiles' repacked inputs and staging, then S, P and the row scales */
static size_t tiles_bytes(int T) { return q_bytes(T) + k_bytes(T) + v_bytes(T) + part(16 * HS * 4); }

size_t vf_amx_scratch_bytes(int T) {
    const size_t Tr = (size_t)padded_rows(T), Tc = (size_t)padded_cols(T);
    return 64 + tiles_bytes(T) + part(Tr * Tr * 4) + part(Tr * Tc * 2) + part(Tr * 4);
}

#ifdef VF_AMX_BUILD
static unsigned char *aligned64(void *p) { return (unsigned char *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

VF_AMX_TARGET static void amx_scores(float *S, const uint16_t *q, const uint16_t *k, long ld, int T, void *scratch) {
    const int Tr = padded_rows(T);
    unsigned char *base = aligned64(scratch);
    uint16_t *qp = (uint16_t *)base;           // (Tr, 64) q, rows past T zero
    uint32_t *kp = (uint32_t *)(base + q_bytes(T)); // (32, Tr) pairs of k^T, columns past T zero
    for (int t = 0; t < Tr; t++) {
        if (t < T) memcpy(qp + (long)t * HS, q + (long)t * ld, HS * 2);
        else memset(qp + (long)t * HS, 0, HS * 2);
    }
    for (int s0 = 0; s0 < Tr; s0 += 16) { /* k^T in 16-column blocks: 16 rows of k in, 32 rows of 64 bytes out */
        uint32_t blk[16][HS / 2];
        for (int j = 0; j < 16; j++) {
            if (s0 + j < T) memcpy(blk[j], k + (long)(s0 + j) * ld, HS * 2);
            else memset(blk[j], 0, sizeof blk[j]);
        }
        for (int i = 0; i < HS / 2; i++)
            for (int j = 0; j < 16; j++) kp[(long)i * Tr + s0 + j] = blk[j][i];
    }
    const long sq = HS * 2, sk = (long)Tr * 4, sS = (long)Tr * 4;
    for (int m = 0; m < Tr; m += 16) {
        _tile_loadd(4, qp + (long)m * HS, sq);           // d 0..31
        _tile_loadd(5, qp + (long)m * HS + 32, sq);      // d 32..63
        int n = 0;
        for (; n + 64 <= Tr; n += 64) {                  // four column blocks at a time
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            _tile_loadd(6, kp + n, sk); _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, kp + 16L * Tr + n, sk); _tile_dpbf16ps(0, 5, 7);
            _tile_loadd(6, kp + n + 16, sk); _tile_dpbf16ps(1, 4, 6);
            _tile_loadd(7, kp + 16L * Tr + n + 16, sk); _tile_dpbf16ps(1, 5, 7);
            _tile_loadd(6, kp + n + 32, sk); _tile_dpbf16ps(2, 4, 6);
            _tile_loadd(7, kp + 16L * Tr + n + 32, sk); _tile_dpbf16ps(2, 5, 7);
            _tile_loadd(6, kp + n + 48, sk); _tile_dpbf16ps(3, 4, 6);
            _tile_loadd(7, kp + 16L * Tr + n + 48, sk); _tile_dpbf16ps(3, 5, 7);
            float *c = S + (long)m * Tr + n;
            _tile_stored(0, c, sS); _tile_stored(1, c + 16, sS); _tile_stored(2, c + 32, sS); _tile_stored(3, c + 48, sS);
        }
        for (; n < Tr; n += 16) {
            _tile_zero(0);
            _tile_loadd(6, kp + n, sk); _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, kp + 16L * Tr + n, sk); _tile_dpbf16ps(0, 5, 7);
            _tile_stored(0, S + (long)m * Tr + n, sS);
        }
    }
}

VF_AMX_TARGET static void amx_pv(uint16_t *out, long ldo, const uint16_t *P, const float *row_scale, const uint16_t *v, long ld, int T,
                          void *scratch) {
    const int Tr = padded_rows(T), Tc = padded_cols(T);
    unsigned char *base = aligned64(scratch) + q_bytes(T) + k_bytes(T);
    uint16_t *vp = (uint16_t *)base;                 // (Tc / 2, 64, 2) pairs of v rows, rows past T zero
    float *o = (float *)(base + v_bytes(T));         // (16, 64) one row block of the output
    for (int j = 0; j < Tc / 2; j++) {
        const uint16_t *v0 = 2 * j < T ? v + (long)(2 * j) * ld : NULL, *v1 = 2 * j + 1 < T ? v + (long)(2 * j + 1) * ld : NULL;
        uint16_t *dst = vp + (long)j * HS * 2;
        for (int d = 0; d < HS; d++) dst[2 * d] = v0 ? v0[d] : 0, dst[2 * d + 1] = v1 ? v1[d] : 0;
    }
    const long sP = (long)Tc * 2, sv = HS * 2 * 2;
    for (int m = 0; m < Tr; m += 16) {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int s = 0; s < Tc; s += 32) {
            _tile_loadd(4, P + (long)m * Tc + s, sP);
            const uint16_t *b = vp + (long)(s / 2) * HS * 2;
            _tile_loadd(6, b, sv); _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, b + 32, sv); _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(6, b + 64, sv); _tile_dpbf16ps(2, 4, 6);
            _tile_loadd(7, b + 96, sv); _tile_dpbf16ps(3, 4, 7);
        }
        _tile_stored(0, o, HS * 4); _tile_stored(1, o + 16, HS * 4); _tile_stored(2, o + 32, HS * 4); _tile_stored(3, o + 48, HS * 4);
        for (int r = 0; r < 16 && m + r < T; r++) {
            uint16_t *dst = out + (long)(m + r) * ldo;
            const float *src = o + r * HS, f = row_scale ? row_scale[m + r] : 1.0f;
            for (int d = 0; d < HS; d++) dst[d] = vf_f32_to_bf16(src[d] * f);
        }
    }
}
/* P (T rows, Tc columns bf16) = exp(scale (S - row max)) over the first T
 * columns of S (Tr columns; causal: s <= t), the rest 0; row_scale[t] = 1 /
 * the row's sum (applied by amx_pv).  As attention.c's softmax_rows_bf16,
 * in AVX-512 with the hardware's bf16 rounding. */
VF_AMX_TARGET static void softmax_rows(uint16_t *P, float *row_scale, const float *S, int T, int Tr, int Tc, float scale,
                                       int causal) {
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int t = 0; t < T; t++) {
        const float *p = S + (long)t * Tr;
        uint16_t *pb = P + (long)t * Tc;
        const int n = causal ? t + 1 : T;
        __m512 vmax = _mm512_set1_ps(-INFINITY);
        for (int s = 0; s < n; s += 16) {
            const __mmask16 m = n - s >= 16 ? 0xffff : (__mmask16)((1u << (n - s)) - 1);
            vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, p + s));
        }
        const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        __m512 sum = _mm512_setzero_ps();
        for (int s = 0; s < Tc; s += 16) {
            const int left = n - s;
            const __mmask16 m = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            const __m512 e = _mm512_maskz_mov_ps(m, vf_exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p + s), mx), vscale)));
            sum = _mm512_add_ps(sum, e);
            _mm256_storeu_si256((__m256i *)(pb + s), (__m256i)_mm512_cvtneps_pbh(e));
        }
        row_scale[t] = 1.0f / _mm512_reduce_add_ps(sum);
    }
    memset(P + (long)T * Tc, 0, sizeof(uint16_t) * (size_t)(Tr - T) * Tc);
}

VF_AMX_TARGET void vf_amx_attend_head(uint16_t *out, long ldo, const uint16_t *q, const uint16_t *k, const uint16_t *v, long ld,
                                      int T, float scale, int causal, void *scratch) {
    const int Tr = padded_rows(T), Tc = padded_cols(T);
    unsigned char *base = aligned64(scratch) + tiles_bytes(T);
    float *S = (float *)base;                                            // (Tr, Tr)
    uint16_t *P = (uint16_t *)(base + part((size_t)Tr * Tr * 4));        // (Tr, Tc)
    float *row_scale = (float *)(base + part((size_t)Tr * Tr * 4) + part((size_t)Tr * Tc * 2)); // (T)
    vf_amx_configure(); /* once for both products; the softmax between uses no tiles */
    amx_scores(S, q, k, ld, T, scratch);
    softmax_rows(P, row_scale, S, T, Tr, Tc, scale, causal);
    amx_pv(out, ldo, P, row_scale, v, ld, T, scratch);
    _tile_release();
}
#else
void vf_amx_attend_head(uint16_t *out, long ldo, const uint16_t *q, const uint16_t *k, const uint16_t *v, long ld, int T,
                        float scale, int causal, void *scratch) {
    (void)out, (void)ldo, (void)q, (void)k, (void)v, (void)ld, (void)T, (void)scale, (void)causal, (void)scratch;
}
#endif
