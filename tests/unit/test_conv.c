/* test_conv: kernels/cpu/conv against direct double-precision loops on random
 * inputs: strides, padding, 1x1/3x3/5x5 kernels, non-square images, residual
 * and ReLU epilogue, tiled and untiled im2col, BatchNorm folding and average
 * pooling. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "cpu/conv.h"

static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) {  // uniform in [-1, 1)
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}
static float *rand_floats(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

// NCHW reference: out[b][co][oy][ox] in double
static void conv_ref(const float *x, int B, int cin, int H, int W, const float *w, const float *bias,
                     int cout, int k, int stride, int pad, double *out, int Ho, int Wo) {
    for (int b = 0; b < B; b++)
        for (int co = 0; co < cout; co++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double s = bias ? bias[co] : 0.0;
                    for (int ci = 0; ci < cin; ci++)
                        for (int i = 0; i < k; i++)
                            for (int j = 0; j < k; j++) {
                                int iy = oy * stride - pad + i, ix = ox * stride - pad + j;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                s += (double)x[(((size_t)b * cin + ci) * H + iy) * W + ix] *
                                     w[(((size_t)co * cin + ci) * k + i) * k + j];
                            }
                    out[(((size_t)b * cout + co) * Ho + oy) * Wo + ox] = s;
                }
}

typedef struct conv_case {
    int B, cin, cout, k, stride, pad, H, W, use_residual, relu;
} conv_case;

// Runs one case with the recommended col size and with a one-image col (chunked).
static void check_conv_case(const conv_case *t) {
    int Ho = vf_conv_out_size(t->H, t->k, t->stride, t->pad), Wo = vf_conv_out_size(t->W, t->k, t->stride, t->pad);
    size_t nx = (size_t)t->B * t->cin * t->H * t->W, no = (size_t)t->B * t->cout * Ho * Wo;
    float *x = rand_floats(nx), *w = rand_floats((size_t)t->cout * t->cin * t->k * t->k);
    float *bias = rand_floats(t->cout), *res_nchw = rand_floats(no);
    double *ref = malloc(no * sizeof(double));
    conv_ref(x, t->B, t->cin, t->H, t->W, w, bias, t->cout, t->k, t->stride, t->pad, ref, Ho, Wo);
    for (size_t i = 0; i < no; i++) {
        if (t->use_residual) ref[i] += res_nchw[i];
        if (t->relu && ref[i] < 0) ref[i] = 0;
    }

    float *x_cnhw = malloc(nx * sizeof(float)), *res = malloc(no * sizeof(float)), *out = malloc(no * sizeof(float));
    vf_nchw_to_cnhw(x, t->B, t->cin, t->H * t->W, x_cnhw);
    vf_nchw_to_cnhw(res_nchw, t->B, t->cout, Ho * Wo, res);
    vf_conv2d c = {.cin = t->cin, .cout = t->cout, .kh = t->k, .kw = t->k, .stride = t->stride, .pad = t->pad,
                   .weight = w, .bias = bias};
    // the default tiling, one tile with threaded BLAS, and odd 7-column tiles that
    // cross output rows and images
    const size_t K = (size_t)t->cin * t->k * t->k, Ntot = (size_t)t->B * Ho * Wo;
    const int tiles[3] = {-1, 0, 7};
    for (int pass = 0; pass < 3; pass++) {
        size_t ncol = pass == 0 ? vf_conv2d_col_floats(&c, t->B, t->H, t->W)
                                : pass == 1 ? K * Ntot : K * 7 * (size_t)omp_get_max_threads();
        float *col = malloc((ncol ? ncol : 1) * sizeof(float));
        if (pass == 0) vf_conv2d_forward(&c, x_cnhw, t->B, t->H, t->W, t->use_residual ? res : NULL, t->relu, out, col, ncol);
        else vf_conv2d_forward_tiled(&c, x_cnhw, t->B, t->H, t->W, t->use_residual ? res : NULL, t->relu, out, col, ncol,
                                     tiles[pass]);
        double max_abs = 0, max_ref = 0;
        for (int b = 0; b < t->B; b++)
            for (int co = 0; co < t->cout; co++)
                for (int p = 0; p < Ho * Wo; p++) {
                    double r = ref[((size_t)b * t->cout + co) * Ho * Wo + p];
                    double got = out[((size_t)co * t->B + b) * Ho * Wo + p];
                    if (fabs(got - r) > max_abs) max_abs = fabs(got - r);
                    if (fabs(r) > max_ref) max_ref = fabs(r);
                }
        printf("conv B=%d cin=%d cout=%d k=%d s=%d p=%d %dx%d res=%d relu=%d tile=%d: max abs diff %.3g (max |ref| %.3g)\n",
               t->B, t->cin, t->cout, t->k, t->stride, t->pad, t->H, t->W, t->use_residual, t->relu, tiles[pass], max_abs,
               max_ref);
        assert_true(max_abs <= 1e-5 * (1.0 + max_ref));
        free(col);
    }
    free(x); free(w); free(bias); free(res_nchw); free(ref); free(x_cnhw); free(res); free(out);
}

static void test_conv_matches_direct_loop(void **state) {
    const conv_case cases[] = {
        {3, 3, 5, 3, 2, 1, 17, 13, 0, 1},   // stem-like: 3x3 stride 2, odd sizes
        {2, 7, 6, 3, 1, 1, 9, 11, 1, 1},    // 3x3 same padding, residual + ReLU
        {4, 16, 12, 1, 1, 0, 6, 5, 1, 0},   // 1x1 stride 1: the no-im2col path
        {2, 8, 4, 1, 2, 0, 7, 8, 0, 0},     // 1x1 stride 2
        {2, 4, 3, 5, 1, 2, 8, 6, 0, 1},     // 5x5, pad 2
        {3, 6, 5, 3, 2, 0, 10, 9, 0, 0},    // 3x3 stride 2 without padding
        {2, 3, 4, 5, 1, 2, 2, 3, 0, 0},     // kernel wider than the image: mostly padding
        {1, 2, 3, 3, 2, 1, 1, 1, 1, 1},     // 1x1 image, 3x3 stride 2
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_conv_case(&cases[i]);
}

static void test_fold_bn_matches_conv_then_batchnorm(void **state) {
    const int B = 2, cin = 5, cout = 7, k = 3, H = 8, W = 7;
    const float eps = 1e-5f;
    float *x = rand_floats((size_t)B * cin * H * W), *w = rand_floats((size_t)cout * cin * k * k);
    float gamma[7], beta[7], mean[7], var[7], bias[7] = {0};
    for (int c = 0; c < cout; c++) {
        gamma[c] = 1.0f + 0.5f * frand();
        beta[c] = frand();
        mean[c] = frand();
        var[c] = 0.1f + fabsf(frand());
    }
    double *ref = malloc((size_t)B * cout * H * W * sizeof(double));
    conv_ref(x, B, cin, H, W, w, NULL, cout, k, 1, 1, ref, H, W);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < cout; c++)
            for (int p = 0; p < H * W; p++) {
                double *r = &ref[((size_t)b * cout + c) * H * W + p];
                *r = (*r - mean[c]) / sqrt((double)var[c] + eps) * gamma[c] + beta[c];
            }
    vf_conv2d_fold_bn(w, bias, cout, cin * k * k, gamma, beta, mean, var, eps);
    vf_conv2d c = {.cin = cin, .cout = cout, .kh = k, .kw = k, .stride = 1, .pad = 1, .weight = w, .bias = bias};
    float *xc = malloc((size_t)B * cin * H * W * sizeof(float)), *out = malloc((size_t)B * cout * H * W * sizeof(float));
    size_t ncol = vf_conv2d_col_floats(&c, B, H, W);
    float *col = malloc(ncol * sizeof(float));
    vf_nchw_to_cnhw(x, B, cin, H * W, xc);
    vf_conv2d_forward(&c, xc, B, H, W, NULL, 0, out, col, ncol);
    double max_abs = 0;
    for (int b = 0; b < B; b++)
        for (int co = 0; co < cout; co++)
            for (int p = 0; p < H * W; p++) {
                double d = fabs(out[((size_t)co * B + b) * H * W + p] - ref[((size_t)b * cout + co) * H * W + p]);
                if (d > max_abs) max_abs = d;
            }
    printf("folded BatchNorm: max abs diff %.3g\n", max_abs);
    assert_true(max_abs < 1e-4);
    free(x); free(w); free(ref); free(xc); free(out); free(col);
}

static void test_avgpool_matches_direct_loop(void **state) {
    const int sizes[][4] = {{6, 8, 10, 2}, {3, 9, 7, 2}, {2, 12, 12, 3}};  // planes, H, W, k (odd sizes floor)
    for (int t = 0; t < 3; t++) {
        int P = sizes[t][0], H = sizes[t][1], W = sizes[t][2], k = sizes[t][3], Ho = H / k, Wo = W / k;
        float *x = rand_floats((size_t)P * H * W), *out = malloc((size_t)P * Ho * Wo * sizeof(float));
        vf_avgpool2d_forward(x, P, H, W, k, out);
        double max_abs = 0;
        for (int p = 0; p < P; p++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double s = 0;
                    for (int i = 0; i < k; i++)
                        for (int j = 0; j < k; j++) s += x[((size_t)p * H + oy * k + i) * W + ox * k + j];
                    double d = fabs(s / (k * k) - out[((size_t)p * Ho + oy) * Wo + ox]);
                    if (d > max_abs) max_abs = d;
                }
        printf("avgpool %dx%d k=%d: max abs diff %.3g\n", H, W, k, max_abs);
        assert_true(max_abs < 1e-6);
        free(x); free(out);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_matches_direct_loop),
        cmocka_unit_test(test_fold_bn_matches_conv_then_batchnorm),
        cmocka_unit_test(test_avgpool_matches_direct_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
