/* conv: im2col + sgemm convolution, BatchNorm folding, average pooling
 * (see conv.h for the CNHW layout). */
#include "cpu/conv.h"
#include "cpu/cpu_dispatch.h"
#include "cpu/matmul_bf16.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

// Tiles: a tile is a range of output columns (positions across the batch)
// that one thread turns into im2col columns, multiplies single-threaded and
// finishes (bias, residual, ReLU) while they are still in cache.  One OpenMP
// pool does all the work, so OpenBLAS's and OpenMP's threads never wait on
// each other.  A tile's im2col scratch stays under ~4 MB.
#define VF_TILE_COL_FLOATS ((size_t)1 << 20)
#define VF_TILE_MAX 2048
#define VF_TILE_MIN 64

static int conv_is_pointwise(const vf_conv2d *c) {
    return c->kh == 1 && c->kw == 1 && c->stride == 1 && c->pad == 0;
}

static size_t conv_out_cols(const vf_conv2d *c, int B, int H, int W) {
    return (size_t)B * vf_conv_out_size(H, c->kh, c->stride, c->pad) * vf_conv_out_size(W, c->kw, c->stride, c->pad);
}

// Columns per tile for Ntot output columns; 0 = too few columns to share out,
// use one tile and let OpenBLAS thread the product.
static int tile_cols(const vf_conv2d *c, size_t Ntot, int threads) {
    if (Ntot < (size_t)VF_TILE_MIN * threads) return 0;
    size_t K = (size_t)c->cin * c->kh * c->kw, tile = (Ntot + threads - 1) / threads;
    size_t cap = conv_is_pointwise(c) ? VF_TILE_MAX : VF_TILE_COL_FLOATS / K;
    if (cap > VF_TILE_MAX) cap = VF_TILE_MAX;
    if (cap < VF_TILE_MIN) cap = VF_TILE_MIN;
    return (int)(tile < cap ? tile : cap);
}

static size_t col_floats_for(const vf_conv2d *c, size_t Ntot, int tile, int threads) {
    if (conv_is_pointwise(c)) return 0;
    size_t K = (size_t)c->cin * c->kh * c->kw;
    return tile ? K * tile * threads : K * Ntot;
}

size_t vf_conv2d_col_floats(const vf_conv2d *c, int B, int H, int W) {
    size_t Ntot = conv_out_cols(c, B, H, W);
    int threads = omp_get_max_threads();
    return col_floats_for(c, Ntot, tile_cols(c, Ntot, threads), threads);
}

// col (K, len) = columns n0 .. n0+len-1 of the (K, B*Ho*Wo) im2col matrix of x (cin, B, H, W)
VF_CPU_DISPATCH static void im2col_cols(const vf_conv2d *c, const float *x, int B, int H, int W, int Ho, int Wo, size_t n0, int len,
                        float *col) {
    const int K = c->cin * c->kh * c->kw;
    const size_t HWo = (size_t)Ho * Wo;
    for (int r = 0; r < K; r++) {
        const int ci = r / (c->kh * c->kw), i = (r / c->kw) % c->kh, off = r % c->kw - c->pad;
        int lo = 0, hi = Wo;  // outputs whose input column is inside: 0 <= ox*stride + off < W
        while (lo < Wo && lo * c->stride + off < 0) lo++;
        while (hi > lo && (hi - 1) * c->stride + off >= W) hi--;
        float *dst = col + (size_t)r * len;
        for (int pos = 0; pos < len;) {
            size_t n = n0 + pos, rem = n % HWo;
            int b = (int)(n / HWo), oy = (int)(rem / Wo), ox0 = (int)(rem % Wo);
            int run = Wo - ox0 < len - pos ? Wo - ox0 : len - pos;
            float *d = dst + pos - ox0;  // d[ox] for ox in [ox0, ox0 + run)
            int iy = oy * c->stride - c->pad + i, a = ox0, e = ox0;
            if (iy >= 0 && iy < H) {
                a = lo > ox0 ? lo : ox0;
                e = hi < ox0 + run ? hi : ox0 + run;
                if (e < a) e = a;
                const float *row = x + ((size_t)ci * B + b) * H * W + (size_t)iy * W;
                if (c->stride == 1) memcpy(d + a, row + a + off, (size_t)(e - a) * sizeof(float));
                else for (int ox = a; ox < e; ox++) d[ox] = row[ox * c->stride + off];
            } else {
                a = e = ox0 + run;
            }
            for (int ox = ox0; ox < a; ox++) d[ox] = 0.0f;
            for (int ox = e; ox < ox0 + run; ox++) d[ox] = 0.0f;
            pos += run;
        }
    }
}

// The product accumulates onto the bias (beta = 1), which spares OpenBLAS
// its separate pass zeroing C.
VF_CPU_DISPATCH static void fill_bias(const vf_conv2d *c, float *out, size_t Ntot, size_t n0, int len) {
    for (int co = 0; co < c->cout; co++) {
        float *o = out + (size_t)co * Ntot + n0;
        const float b = c->bias[co];
        for (int n = 0; n < len; n++) o[n] = b;
    }
}

// out[:, n0 : n0+len] += residual, then ReLU; rows of Ntot columns
VF_CPU_DISPATCH static void epilogue(const vf_conv2d *c, float *out, const float *residual, int relu, size_t Ntot, size_t n0, int len) {
    if (!residual && !relu) return;
    for (int co = 0; co < c->cout; co++) {
        float *o = out + (size_t)co * Ntot + n0;
        if (residual) {
            const float *r = residual + (size_t)co * Ntot + n0;
            for (int n = 0; n < len; n++) o[n] += r[n];
        }
        if (relu)
            for (int n = 0; n < len; n++) o[n] = o[n] > 0.0f ? o[n] : 0.0f;
    }
}

// im2col (unless pointwise) + product + epilogue of columns [n0, n0+len).
// col holds (K, len) floats.
static void conv_tile(const vf_conv2d *c, const float *x, int B, int H, int W, int Ho, int Wo, const float *residual,
                      int relu, float *out, float *col, size_t n0, int len) {
    const int K = c->cin * c->kh * c->kw;
    const size_t Ntot = (size_t)B * Ho * Wo;
    const float *cols = x + n0;
    int ldb = (int)Ntot;
    if (!conv_is_pointwise(c)) {
        im2col_cols(c, x, B, H, W, Ho, Wo, n0, len, col);
        cols = col, ldb = len;
    }
    // out (cout, len) = bias + W (cout, K) @ cols (K, len), rows Ntot apart
    fill_bias(c, out, Ntot, n0, len);
    if (c->weight_bf16) vf_bf16_gemm_acc(out + n0, (int)Ntot, c->weight_bf16, c->cout, K, cols, ldb, len);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->cout, len, K, 1.0f, c->weight, K, cols, ldb, 1.0f,
                    out + n0, (int)Ntot);
    epilogue(c, out, residual, relu, Ntot, n0, len);
}

void vf_conv2d_forward_tiled(const vf_conv2d *c, const float *x, int B, int H, int W, const float *residual, int relu,
                             float *out, float *col, size_t col_floats, int tile) {
    const int Ho = vf_conv_out_size(H, c->kh, c->stride, c->pad), Wo = vf_conv_out_size(W, c->kw, c->stride, c->pad);
    const size_t Ntot = (size_t)B * Ho * Wo, K = (size_t)c->cin * c->kh * c->kw;
    if (tile <= 0) {  // one tile, OpenBLAS threads the product
        conv_tile(c, x, B, H, W, Ho, Wo, residual, relu, out, col, 0, (int)Ntot);
        return;
    }
    // as many threads as the scratch has tiles for
    int threads = omp_get_max_threads();
    if (!conv_is_pointwise(c) && col_floats / (K * tile) < (size_t)threads) threads = (int)(col_floats / (K * tile));
    if (threads < 1) threads = 1;
    const long ntiles = (long)((Ntot + tile - 1) / tile);
    const int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (long t = 0; t < ntiles; t++) {
        size_t n0 = (size_t)t * tile;
        int len = (int)(Ntot - n0 < (size_t)tile ? Ntot - n0 : (size_t)tile);
        float *mine = conv_is_pointwise(c) ? NULL : col + (size_t)omp_get_thread_num() * K * tile;
        conv_tile(c, x, B, H, W, Ho, Wo, residual, relu, out, mine, n0, len);
    }
    openblas_set_num_threads(blas_threads);
}

void vf_conv2d_forward(const vf_conv2d *c, const float *x, int B, int H, int W,
                       const float *residual, int relu, float *out, float *col, size_t col_floats) {
    int tile = tile_cols(c, conv_out_cols(c, B, H, W), omp_get_max_threads());
    vf_conv2d_forward_tiled(c, x, B, H, W, residual, relu, out, col, col_floats, tile);
}

void vf_conv2d_fold_bn(float *weight, float *bias, int cout, int k, const float *gamma,
                       const float *beta, const float *mean, const float *var, float eps) {
    for (int co = 0; co < cout; co++) {
        // computed in double so the folded weights round once
        double scale = (double)gamma[co] / sqrt((double)var[co] + (double)eps);
        float *w = weight + (size_t)co * k;
        for (int i = 0; i < k; i++) w[i] = (float)(w[i] * scale);
        bias[co] = (float)(((double)bias[co] - mean[co]) * scale + beta[co]);
    }
}

VF_CPU_DISPATCH void vf_avgpool2d_forward(const float *x, int planes, int H, int W, int k, float *out) {
    const int Ho = H / k, Wo = W / k;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static)
    for (int p = 0; p < planes; p++) {
        const float *src = x + (size_t)p * H * W;
        float *dst = out + (size_t)p * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float s = 0.0f;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) s += src[(size_t)(oy * k + i) * W + ox * k + j];
                dst[(size_t)oy * Wo + ox] = s * inv;
            }
    }
}

void vf_nchw_to_cnhw(const float *x, int B, int C, int HW, float *out) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int c = 0; c < C; c++)
        for (int b = 0; b < B; b++) {
            const float *src = x + ((size_t)b * C + c) * HW;
            float *dst = out + ((size_t)c * B + b) * HW;
            for (int i = 0; i < HW; i++) dst[i] = src[i];
        }
}
