/* conv: im2col + sgemm convolution, BatchNorm folding, average pooling
 * (see conv.h for the CNHW layout). */
#include "cpu/conv.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

// im2col chunks stop growing past this many floats (32 MB): beyond it the
// product is already large enough to keep every core busy.
#define VF_COL_CAP_FLOATS ((size_t)8 << 20)

static int conv_is_pointwise(const vf_conv2d *c) {
    return c->kh == 1 && c->kw == 1 && c->stride == 1 && c->pad == 0;
}

size_t vf_conv2d_col_floats(const vf_conv2d *c, int B, int H, int W) {
    if (conv_is_pointwise(c)) return 0;
    int Ho = vf_conv_out_size(H, c->kh, c->stride, c->pad);
    int Wo = vf_conv_out_size(W, c->kw, c->stride, c->pad);
    size_t per_image = (size_t)c->cin * c->kh * c->kw * Ho * Wo;
    size_t images = VF_COL_CAP_FLOATS / per_image;
    if (images < 1) images = 1;
    if (images > (size_t)B) images = B;
    return per_image * images;
}

// col (cin*kh*kw, nb*Ho*Wo) from images b0..b0+nb-1 of x (cin, B, H, W)
static void im2col_chunk(const vf_conv2d *c, const float *x, int B, int H, int W, int b0, int nb,
                         int Ho, int Wo, float *col) {
    const int K = c->cin * c->kh * c->kw;
    const size_t HWo = (size_t)Ho * Wo, N = (size_t)nb * HWo;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < K; r++) {
        int ci = r / (c->kh * c->kw), i = (r / c->kw) % c->kh, j = r % c->kw;
        float *dst = col + (size_t)r * N;
        for (int bl = 0; bl < nb; bl++) {
            const float *plane = x + ((size_t)ci * B + b0 + bl) * H * W;
            for (int oy = 0; oy < Ho; oy++) {
                int iy = oy * c->stride - c->pad + i;
                float *d = dst + bl * HWo + (size_t)oy * Wo;
                if (iy < 0 || iy >= H) {
                    for (int ox = 0; ox < Wo; ox++) d[ox] = 0.0f;
                    continue;
                }
                const float *row = plane + (size_t)iy * W;
                // valid outputs [lo, hi): 0 <= ox*stride - pad + j < W
                int off = j - c->pad, lo = 0, hi = Wo;
                while (lo < Wo && lo * c->stride + off < 0) lo++;
                while (hi > lo && (hi - 1) * c->stride + off >= W) hi--;
                for (int ox = 0; ox < lo; ox++) d[ox] = 0.0f;
                if (c->stride == 1) {
                    memcpy(d + lo, row + lo + off, (size_t)(hi - lo) * sizeof(float));
                } else {
                    for (int ox = lo; ox < hi; ox++) d[ox] = row[ox * c->stride + off];
                }
                for (int ox = hi; ox < Wo; ox++) d[ox] = 0.0f;
            }
        }
    }
}

void vf_conv2d_forward(const vf_conv2d *c, const float *x, int B, int H, int W,
                       const float *residual, int relu, float *out, float *col, size_t col_floats) {
    const int Ho = vf_conv_out_size(H, c->kh, c->stride, c->pad);
    const int Wo = vf_conv_out_size(W, c->kw, c->stride, c->pad);
    const int K = c->cin * c->kh * c->kw;
    const size_t HWo = (size_t)Ho * Wo, Ntot = (size_t)B * HWo;

    if (conv_is_pointwise(c)) {
        // out (cout, B*HW) = W (cout, cin) @ x (cin, B*HW)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->cout, (int)Ntot, K, 1.0f,
                    c->weight, K, x, (int)Ntot, 0.0f, out, (int)Ntot);
    } else {
        size_t per_image = (size_t)K * HWo;
        int chunk = (int)(col_floats / per_image);
        if (chunk < 1) chunk = 1;  // caller's sizing bug; col must hold one image
        for (int b0 = 0; b0 < B; b0 += chunk) {
            int nb = B - b0 < chunk ? B - b0 : chunk;
            im2col_chunk(c, x, B, H, W, b0, nb, Ho, Wo, col);
            // out[:, b0*HWo : (b0+nb)*HWo] = W (cout, K) @ col (K, nb*HWo)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->cout, (int)(nb * HWo), K, 1.0f,
                        c->weight, K, col, (int)(nb * HWo), 0.0f, out + (size_t)b0 * HWo, (int)Ntot);
        }
    }

    // epilogue: + bias (+ residual), ReLU
#pragma omp parallel for schedule(static)
    for (int co = 0; co < c->cout; co++) {
        float *o = out + (size_t)co * Ntot;
        const float *r = residual ? residual + (size_t)co * Ntot : NULL;
        const float b = c->bias[co];
        if (r) {
            for (size_t n = 0; n < Ntot; n++) o[n] += b + r[n];
        } else {
            for (size_t n = 0; n < Ntot; n++) o[n] += b;
        }
        if (relu)
            for (size_t n = 0; n < Ntot; n++) o[n] = o[n] > 0.0f ? o[n] : 0.0f;
    }
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

void vf_avgpool2d_forward(const float *x, int planes, int H, int W, int k, float *out) {
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
