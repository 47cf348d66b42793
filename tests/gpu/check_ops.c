/* check_ops: every CUDA op against its plain-C namesake in kernels/cpu on
 * fresh random inputs (like ggml's test-backend-ops), forward and backward,
 * plus finite-difference checks of the backward ops through the GPU forward.
 * Outputs are poisoned (NaN) before each GPU run, so an unwritten element
 * fails.  fp32 context: tolerance 1e-4 relative (normwise); finite
 * differences in fp32 with a central step of 1e-2: 2e-2. */
#include "check_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/activation.h"
#include "cpu/attention.h"
#include "cpu/backward.h"
#include "cpu/conv.h"
#include "cpu/layernorm.h"
#include "cpu/matmul.h"

#define TOL 1e-4
#define FD_TOL 2e-2

typedef struct op_env {
    vf_cuda_ctx *ctx;
    vf_rng rng;
    vf_error err;
    void *dev[24];  /* freed at the end of each check */
    int ndev;
    float *host[24];
    int nhost;
} op_env;

static void fail_error(op_env *e, const char *name) {
    printf("CHECK %-44s FAIL error=\"%s\"\n", name, e->err.msg);
    if (vf_check_results) fprintf(vf_check_results, "{\"check\":\"%s\",\"pass\":false,\"error\":\"cuda call failed\"}\n", name);
    vf_check_failures++;
}

static float *h_rand(op_env *e, size_t n, float lo, float hi) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (p) vf_rng_fill(&e->rng, p, n, lo, hi);
    e->host[e->nhost++] = p;
    return p;
}

static float *h_copy(op_env *e, const float *src, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (p) memcpy(p, src, n * sizeof(float));
    e->host[e->nhost++] = p;
    return p;
}

/* Device copy of host data; NaN-filled when host is NULL (poisoned output). */
static float *d_make(op_env *e, const float *host, size_t n) {
    float *d = vf_cuda_malloc(e->ctx, n * sizeof(float), &e->err);
    if (!d) return NULL;
    e->dev[e->ndev++] = d;
    float *tmp = NULL;
    if (!host) {
        tmp = malloc(n * sizeof(float));
        for (size_t i = 0; tmp && i < n; i++) tmp[i] = NAN;
        host = tmp;
    }
    int rc = host ? vf_cuda_upload(e->ctx, d, host, n * sizeof(float), &e->err) : -1;
    free(tmp);
    return rc == 0 ? d : NULL;
}

static int d_get(op_env *e, float *host, const float *d, size_t n) {
    return vf_cuda_download(e->ctx, host, d, n * sizeof(float), &e->err);
}

static void env_release(op_env *e) {
    for (int i = 0; i < e->ndev; i++) vf_cuda_free(e->dev[i]);
    for (int i = 0; i < e->nhost; i++) free(e->host[i]);
    e->ndev = e->nhost = 0;
    e->err.msg[0] = 0;
}

#define NEED(x)                                                                                              \
    do {                                                                                                     \
        if (!(x)) goto cuda_failed;                                                                          \
    } while (0)

/* ---- finite differences ----------------------------------------------------------------
 * L(x) = sum_j w_j f(x)_j with f evaluated on the GPU; compares dL/dx at a
 * few random coordinates with the analytic gradient `grad`. */
typedef int (*fwd_fn)(op_env *e, void *arg, const float *x, float *y);

static void fd_check(op_env *e, const char *name, fwd_fn f, void *arg, float *x, size_t nx, const float *w, size_t ny,
                     const float *grad) {
    enum { K = 16 };
    float fd[K], an[K], *y = malloc(ny * sizeof(float));
    int ok = y != NULL;
    for (int i = 0; ok && i < K; i++) {
        size_t at = (size_t)(vf_rng_uniform(&e->rng) * nx) % nx;
        const float h = 1e-2f, keep = x[at];
        double lp = 0, lm = 0;
        x[at] = keep + h;
        ok = f(e, arg, x, y) == 0;
        for (size_t j = 0; ok && j < ny; j++) lp += (double)w[j] * y[j];
        x[at] = keep - h;
        ok = ok && f(e, arg, x, y) == 0;
        for (size_t j = 0; ok && j < ny; j++) lm += (double)w[j] * y[j];
        x[at] = keep;
        fd[i] = (float)((lp - lm) / (2 * h));
        an[i] = grad[at];
    }
    free(y);
    if (!ok) fail_error(e, name);
    else vf_check_close(name, an, fd, K, FD_TOL);
}

/* ---- layer norm --------------------------------------------------------------------------- */
typedef struct ln_arg { const float *w, *b; int N, C; } ln_arg;
static int ln_fwd(op_env *e, void *a_, const float *x, float *y) {
    ln_arg *a = a_;
    size_t n = (size_t)a->N * a->C;
    float *dx = vf_cuda_malloc(e->ctx, n * 4, &e->err), *dy = vf_cuda_malloc(e->ctx, n * 4, &e->err);
    float *dw = vf_cuda_malloc(e->ctx, a->C * 4, &e->err), *db = vf_cuda_malloc(e->ctx, a->C * 4, &e->err);
    int rc = dx && dy && dw && db && !vf_cuda_upload(e->ctx, dx, x, n * 4, &e->err) &&
                     !vf_cuda_upload(e->ctx, dw, a->w, a->C * 4, &e->err) && !vf_cuda_upload(e->ctx, db, a->b, a->C * 4, &e->err) &&
                     !vf_cuda_layernorm_forward(e->ctx, dy, NULL, NULL, dx, dw, db, a->N, a->C, 1e-5f, &e->err) &&
                     !d_get(e, y, dy, n)
                 ? 0
                 : -1;
    vf_cuda_free(dx), vf_cuda_free(dy), vf_cuda_free(dw), vf_cuda_free(db);
    return rc;
}

static void check_layernorm(op_env *e, int N, int C) {
    char name[96];
    const size_t n = (size_t)N * C;
    float *x = h_rand(e, n, 2.0f, 4.0f), *w = h_rand(e, C, 0.5f, 1.5f), *b = h_rand(e, C, -0.5f, 0.5f);
    float *y_ref = h_rand(e, n, 0, 0), *m_ref = h_rand(e, N, 0, 0), *r_ref = h_rand(e, N, 0, 0);
    float *y = h_rand(e, n, 0, 0), *m = h_rand(e, N, 0, 0), *r = h_rand(e, N, 0, 0);
    vf_layernorm_forward(y_ref, m_ref, r_ref, x, w, b, N, C, 1e-5f);
    float *dx, *dw, *db, *dy, *dm, *dr;
    NEED(dx = d_make(e, x, n)); NEED(dw = d_make(e, w, C)); NEED(db = d_make(e, b, C));
    NEED(dy = d_make(e, NULL, n)); NEED(dm = d_make(e, NULL, N)); NEED(dr = d_make(e, NULL, N));
    NEED(!vf_cuda_layernorm_forward(e->ctx, dy, dm, dr, dx, dw, db, N, C, 1e-5f, &e->err));
    NEED(!d_get(e, y, dy, n) && !d_get(e, m, dm, N) && !d_get(e, r, dr, N));
    snprintf(name, sizeof name, "layernorm_forward N=%d C=%d", N, C), vf_check_close(name, y, y_ref, n, TOL);
    snprintf(name, sizeof name, "layernorm_forward mean N=%d C=%d", N, C), vf_check_close(name, m, m_ref, N, TOL);
    snprintf(name, sizeof name, "layernorm_forward rstd N=%d C=%d", N, C), vf_check_close(name, r, r_ref, N, TOL);
    /* backward accumulates into a random dinp */
    float *dout = h_rand(e, n, -1, 1), *g_ref = h_rand(e, n, -1, 1), *g = h_copy(e, g_ref, n);
    vf_layernorm_backward(g_ref, dout, x, w, m_ref, r_ref, 1e-5f, N, C);
    float *ddout, *dg;
    NEED(ddout = d_make(e, dout, n)); NEED(dg = d_make(e, g, n));
    NEED(!vf_cuda_layernorm_backward(e->ctx, dg, ddout, dx, dw, dm, dr, N, C, &e->err) && !d_get(e, g, dg, n));
    snprintf(name, sizeof name, "layernorm_backward N=%d C=%d", N, C), vf_check_close(name, g, g_ref, n, TOL);
    /* finite differences of the GPU forward against the GPU backward */
    NEED(!vf_cuda_memset0(e->ctx, dg, n * 4, &e->err));
    NEED(!vf_cuda_layernorm_backward(e->ctx, dg, ddout, dx, dw, dm, dr, N, C, &e->err) && !d_get(e, g, dg, n));
    ln_arg a = {w, b, N, C};
    snprintf(name, sizeof name, "layernorm_backward finite-diff N=%d C=%d", N, C);
    fd_check(e, name, ln_fwd, &a, x, n, dout, n, g);
    env_release(e);
    return;
cuda_failed:
    fail_error(e, "layernorm");
    env_release(e);
}

/* ---- activations, residual --------------------------------------------------------------- */
typedef struct act_arg { vf_activation act; long N; } act_arg;
static int act_fwd(op_env *e, void *a_, const float *x, float *y) {
    act_arg *a = a_;
    float *dx = vf_cuda_malloc(e->ctx, a->N * 4, &e->err), *dy = vf_cuda_malloc(e->ctx, a->N * 4, &e->err);
    int rc = dx && dy && !vf_cuda_upload(e->ctx, dx, x, a->N * 4, &e->err) &&
                     !vf_cuda_activation_forward(e->ctx, a->act, dy, dx, a->N, &e->err) && !d_get(e, y, dy, a->N)
                 ? 0
                 : -1;
    vf_cuda_free(dx), vf_cuda_free(dy);
    return rc;
}

static void c_act_backward(vf_activation act, float *dinp, const float *inp, const float *dout, long N) {
    switch (act) {
    case VF_ACT_QUICK_GELU: vf_quick_gelu_backward(dinp, inp, dout, N); break;
    case VF_ACT_GELU: vf_gelu_backward(dinp, inp, dout, N); break;
    case VF_ACT_GELU_TANH: vf_gelu_tanh_backward(dinp, inp, dout, N); break;
    }
}

static void check_activations(op_env *e, long N) {
    char name[96];
    for (int act = 0; act < 3; act++) {
        static const char *const names[] = {"quick_gelu", "gelu", "gelu_tanh"};
        const char *an = names[act];
        float *x = h_rand(e, N, -4, 4), *y_ref = h_rand(e, N, 0, 0), *y = h_rand(e, N, 0, 0);
        vf_activation_forward((vf_activation)act, y_ref, x, N);
        float *dx, *dy, *ddout, *dg;
        NEED(dx = d_make(e, x, N)); NEED(dy = d_make(e, NULL, N));
        NEED(!vf_cuda_activation_forward(e->ctx, (vf_activation)act, dy, dx, N, &e->err) && !d_get(e, y, dy, N));
        snprintf(name, sizeof name, "%s_forward N=%ld", an, N), vf_check_close(name, y, y_ref, N, TOL);
        float *dout = h_rand(e, N, -1, 1), *g_ref = h_rand(e, N, -1, 1), *g = h_copy(e, g_ref, N);
        c_act_backward((vf_activation)act, g_ref, x, dout, N);
        NEED(ddout = d_make(e, dout, N)); NEED(dg = d_make(e, g, N));
        NEED(!vf_cuda_activation_backward(e->ctx, (vf_activation)act, dg, dx, ddout, N, &e->err) && !d_get(e, g, dg, N));
        snprintf(name, sizeof name, "%s_backward N=%ld", an, N), vf_check_close(name, g, g_ref, N, TOL);
        NEED(!vf_cuda_memset0(e->ctx, dg, N * 4, &e->err));
        NEED(!vf_cuda_activation_backward(e->ctx, (vf_activation)act, dg, dx, ddout, N, &e->err) && !d_get(e, g, dg, N));
        act_arg a = {(vf_activation)act, N};
        snprintf(name, sizeof name, "%s_backward finite-diff", an);
        fd_check(e, name, act_fwd, &a, x, N, dout, N, g);
        env_release(e);
    }
    float *a = h_rand(e, N, -1, 1), *b = h_rand(e, N, -1, 1), *r_ref = h_rand(e, N, 0, 0), *r = h_rand(e, N, 0, 0);
    vf_residual_forward(r_ref, a, b, N);
    float *da, *db, *dr;
    NEED(da = d_make(e, a, N)); NEED(db = d_make(e, b, N)); NEED(dr = d_make(e, NULL, N));
    NEED(!vf_cuda_residual_forward(e->ctx, dr, da, db, N, &e->err) && !d_get(e, r, dr, N));
    snprintf(name, sizeof name, "residual_forward N=%ld", N), vf_check_close(name, r, r_ref, N, TOL);
    env_release(e);
    return;
cuda_failed:
    fail_error(e, "activations");
    env_release(e);
}

/* ---- softmax (reference: double precision here; the C code has it inline in attention) ---- */
static void check_softmax(op_env *e, int rows, int cols, int causal) {
    char name[96];
    const size_t n = (size_t)rows * cols;
    const float scale = 0.125f;
    float *x = h_rand(e, n, -20, 20), *ref = h_rand(e, n, 0, 0), *y = h_rand(e, n, 0, 0);
    for (int r = 0; r < rows; r++) {
        const int m = causal ? r % cols + 1 : cols;
        double mx = -INFINITY, s = 0;
        for (int i = 0; i < m; i++) mx = fmax(mx, (double)scale * x[(size_t)r * cols + i]);
        for (int i = 0; i < m; i++) s += exp((double)scale * x[(size_t)r * cols + i] - mx);
        for (int i = 0; i < cols; i++) ref[(size_t)r * cols + i] = i < m ? (float)(exp((double)scale * x[(size_t)r * cols + i] - mx) / s) : 0.0f;
    }
    float *dx, *dy;
    NEED(dx = d_make(e, x, n)); NEED(dy = d_make(e, NULL, n));
    NEED(!vf_cuda_softmax_forward(e->ctx, dy, dx, rows, cols, scale, causal, &e->err) && !d_get(e, y, dy, n));
    snprintf(name, sizeof name, "softmax_forward %dx%d%s", rows, cols, causal ? " causal" : "");
    vf_check_close(name, y, ref, n, TOL);
    env_release(e);
    return;
cuda_failed:
    fail_error(e, "softmax");
    env_release(e);
}

/* ---- attention ------------------------------------------------------------------------------
 * q, k, v in one fused (B, T, 3C) buffer (ld = 3C) as the towers use them. */
typedef struct att_arg { int B, T, C, NH, causal; } att_arg;
static int att_fwd(op_env *e, void *a_, const float *qkv, float *y) {
    att_arg *a = a_;
    const size_t n3 = (size_t)a->B * a->T * 3 * a->C, n = n3 / 3;
    float *dqkv = vf_cuda_malloc(e->ctx, n3 * 4, &e->err), *dy = vf_cuda_malloc(e->ctx, n * 4, &e->err);
    const float scale = 1.0f / sqrtf((float)(a->C / a->NH));
    int rc = dqkv && dy && !vf_cuda_upload(e->ctx, dqkv, qkv, n3 * 4, &e->err) &&
                     !vf_cuda_attention_forward(e->ctx, dy, dqkv, dqkv + a->C, dqkv + 2 * a->C, a->B, a->T, a->C, a->NH,
                                                3 * a->C, scale, a->causal, &e->err) &&
                     !d_get(e, y, dy, n)
                 ? 0
                 : -1;
    vf_cuda_free(dqkv), vf_cuda_free(dy);
    return rc;
}

static void check_attention(op_env *e, int B, int T, int C, int NH, int causal) {
    char name[128];
    const int ld = 3 * C;
    const size_t n3 = (size_t)B * T * ld, n = (size_t)B * T * C;
    const float scale = 1.0f / sqrtf((float)(C / NH));
    float *qkv = h_rand(e, n3, -2, 2), *y_ref = h_rand(e, n, 0, 0), *y = h_rand(e, n, 0, 0);
    vf_attention_forward(y_ref, NULL, qkv, qkv + C, qkv + 2 * C, B, T, C, NH, ld, scale, causal);
    float *dqkv, *dy, *ddout, *dg, *dscr;
    NEED(dqkv = d_make(e, qkv, n3)); NEED(dy = d_make(e, NULL, n));
    NEED(!vf_cuda_attention_forward(e->ctx, dy, dqkv, dqkv + C, dqkv + 2 * C, B, T, C, NH, ld, scale, causal, &e->err));
    NEED(!d_get(e, y, dy, n));
    snprintf(name, sizeof name, "attention_forward B=%d T=%d C=%d NH=%d%s", B, T, C, NH, causal ? " causal" : "");
    vf_check_close(name, y, y_ref, n, TOL);
    /* backward: C reference (causal only), then finite differences */
    float *dout = h_rand(e, n, -1, 1), *g_ref = h_rand(e, n3, -1, 1), *g = h_copy(e, g_ref, n3);
    NEED(ddout = d_make(e, dout, n)); NEED(dg = d_make(e, g, n3));
    NEED(dscr = d_make(e, NULL, vf_cuda_attention_backward_scratch(B, T, NH)));
    NEED(!vf_cuda_attention_backward(e->ctx, dg, dg + C, dg + 2 * C, dscr, ddout, dqkv, dqkv + C, dqkv + 2 * C, B, T, C, NH,
                                     ld, scale, causal, &e->err));
    NEED(!d_get(e, g, dg, n3));
    if (causal) {
        float *scratch = malloc((size_t)B * NH * T * T * sizeof(float));
        vf_attention_backward(g_ref, g_ref + C, g_ref + 2 * C, scratch, dout, qkv, qkv + C, qkv + 2 * C, NULL, B, T, C, NH, ld,
                              scale, NULL);
        free(scratch);
        snprintf(name, sizeof name, "attention_backward B=%d T=%d C=%d NH=%d causal", B, T, C, NH);
        vf_check_close(name, g, g_ref, n3, TOL);
    }
    NEED(!vf_cuda_memset0(e->ctx, dg, n3 * 4, &e->err));
    NEED(!vf_cuda_attention_backward(e->ctx, dg, dg + C, dg + 2 * C, dscr, ddout, dqkv, dqkv + C, dqkv + 2 * C, B, T, C, NH,
                                     ld, scale, causal, &e->err));
    NEED(!d_get(e, g, dg, n3));
    att_arg a = {B, T, C, NH, causal};
    snprintf(name, sizeof name, "attention_backward finite-diff T=%d%s", T, causal ? " causal" : "");
    fd_check(e, name, att_fwd, &a, qkv, n3, dout, n, g);
    env_release(e);
    return;
cuda_failed:
    fail_error(e, "attention");
    env_release(e);
}

/* bf16 path (tensor cores for head size 64 without a mask, the simple kernel
 * otherwise) against the fp32 C op: bf16 inputs, so 2e-2 relative. */
static void check_attention_bf16(op_env *e, int B, int T, int C, int NH, int causal) {
    char name[128];
    const size_t n3 = (size_t)B * T * 3 * C, n = (size_t)B * T * C;
    const float scale = 1.0f / sqrtf((float)(C / NH));
    float *qkv = h_rand(e, n3, -2, 2), *y_ref = h_rand(e, n, 0, 0), *y = h_rand(e, n, 0, 0);
    vf_attention_forward(y_ref, NULL, qkv, qkv + C, qkv + 2 * C, B, T, C, NH, 3 * C, scale, causal);
    float *dqkv, *dy;
    NEED(dqkv = d_make(e, qkv, n3));
    NEED(dy = d_make(e, NULL, n));
    NEED(!vf_cuda_attention_forward_bf16(e->ctx, dy, dqkv, B, T, C, NH, scale, causal, &e->err) && !d_get(e, y, dy, n));
    snprintf(name, sizeof name, "attention_forward bf16 B=%d T=%d C=%d NH=%d%s", B, T, C, NH, causal ? " causal" : "");
    vf_check_close(name, y, y_ref, n, 2e-2);
    env_release(e);
    return;
cuda_failed:
    fail_error(e, "attention bf16");
    env_release(e);
}

/* ---- matmul ---------------------------------------------------------------------------------- */
static void check_matmul(op_env *e, int N, int IC, int OC, int with_bias) {
    char name[96];
    float *x = h_rand(e, (size_t)N * IC, -1, 1), *w = h_rand(e, (size_t)OC * IC, -0.2f, 0.2f), *b = h_rand(e, OC, -1, 1);
    float *y_ref = h_rand(e, (size_t)N * OC, 0, 0), *y = h_rand(e, (size_t)N * OC, 0, 0);
    vf_matmul_forward(y_ref, x, w, with_bias ? b : NULL, N, IC, OC);
    float *dx, *dw, *db, *dy, *ddout, *dg;
    NEED(dx = d_make(e, x, (size_t)N * IC)); NEED(dw = d_make(e, w, (size_t)OC * IC)); NEED(db = d_make(e, b, OC));
    NEED(dy = d_make(e, NULL, (size_t)N * OC));
    NEED(!vf_cuda_matmul_forward(e->ctx, dy, dx, dw, with_bias ? db : NULL, N, IC, OC, &e->err));
    NEED(!d_get(e, y, dy, (size_t)N * OC));
    snprintf(name, sizeof name, "matmul_forward %dx%d->%d%s", N, IC, OC, with_bias ? " bias" : "");
    vf_check_close(name, y, y_ref, (size_t)N * OC, TOL);
    float *dout = h_rand(e, (size_t)N * OC, -1, 1), *g_ref = h_rand(e, (size_t)N * IC, -1, 1), *g = h_copy(e, g_ref, (size_t)N * IC);
    vf_matmul_backward_input(g_ref, dout, w, N, IC, OC);
    NEED(ddout = d_make(e, dout, (size_t)N * OC)); NEED(dg = d_make(e, g, (size_t)N * IC));
    NEED(!vf_cuda_matmul_backward_input(e->ctx, dg, ddout, dw, N, IC, OC, &e->err) && !d_get(e, g, dg, (size_t)N * IC));
    snprintf(name, sizeof name, "matmul_backward_input %dx%d->%d", N, IC, OC);
    vf_check_close(name, g, g_ref, (size_t)N * IC, TOL);
    env_release(e);
    return;
cuda_failed:
    fail_error(e, "matmul");
    env_release(e);
}

/* ---- patch embedding: im2col + matmul vs the C convolution with kernel = stride = P ---------- */
static void check_patch_embed(op_env *e, int B, int H, int P, int C) {
    char name[96];
    const int G = H / P, NP = G * G, K = 3 * P * P;
    float *pix = h_rand(e, (size_t)B * 3 * H * H, -2, 2), *w = h_rand(e, (size_t)C * K, -0.1f, 0.1f);
    float *zero = h_rand(e, C, 0, 0), *x_cnhw = h_rand(e, (size_t)B * 3 * H * H, 0, 0);
    float *out_cnhw = h_rand(e, (size_t)C * B * NP, 0, 0), *ref = h_rand(e, (size_t)B * NP * C, 0, 0), *y = h_rand(e, (size_t)B * NP * C, 0, 0);
    vf_conv2d conv = {3, C, P, P, P, 0, w, zero};
    size_t colf = vf_conv2d_col_floats(&conv, B, H, H);
    float *col = h_rand(e, colf ? colf : 1, 0, 0);
    vf_nchw_to_cnhw(pix, B, 3, H * H, x_cnhw);
    vf_conv2d_forward(&conv, x_cnhw, B, H, H, NULL, 0, out_cnhw, col, colf);
    for (int b = 0; b < B; b++)
        for (int p = 0; p < NP; p++)
            for (int c = 0; c < C; c++) ref[((size_t)b * NP + p) * C + c] = out_cnhw[((size_t)c * B + b) * NP + p];
    float *dpix, *dpatch, *dw, *dy;
    NEED(dpix = d_make(e, pix, (size_t)B * 3 * H * H)); NEED(dpatch = d_make(e, NULL, (size_t)B * NP * K));
    NEED(dw = d_make(e, w, (size_t)C * K)); NEED(dy = d_make(e, NULL, (size_t)B * NP * C));
    NEED(!vf_cuda_patch_im2col(e->ctx, dpatch, dpix, B, H, P, &e->err));
    NEED(!vf_cuda_matmul_forward(e->ctx, dy, dpatch, dw, NULL, B * NP, K, C, &e->err) && !d_get(e, y, dy, (size_t)B * NP * C));
    snprintf(name, sizeof name, "patch_embedding B=%d H=%d P=%d C=%d", B, H, P, C);
    vf_check_close(name, y, ref, (size_t)B * NP * C, TOL);
    env_release(e);
    return;
cuda_failed:
    fail_error(e, "patch_embedding");
    env_release(e);
}

/* ---- cuDNN convolution and average pooling vs the C ops (CNHW there, NCHW here) -------------- */
static void cnhw_to_nchw(const float *x, int C, int B, int HW, float *out) {
    for (int c = 0; c < C; c++)
        for (int b = 0; b < B; b++) memcpy(out + ((size_t)b * C + c) * HW, x + ((size_t)c * B + b) * HW, HW * sizeof(float));
}

static void check_conv(op_env *e, int B, int cin, int cout, int H, int k, int stride, int pad, int residual, int relu) {
    char name[128] = "conv2d";
    const int Ho = vf_conv_out_size(H, k, stride, pad);
    const size_t nx = (size_t)B * cin * H * H, ny = (size_t)B * cout * Ho * Ho;
    float *x = h_rand(e, nx, -1, 1), *w = h_rand(e, (size_t)cout * cin * k * k, -0.2f, 0.2f), *bias = h_rand(e, cout, -0.5f, 0.5f);
    float *res = h_rand(e, ny, -1, 1), *x_c = h_rand(e, nx, 0, 0), *res_c = h_rand(e, ny, 0, 0), *y_c = h_rand(e, ny, 0, 0);
    float *ref = h_rand(e, ny, 0, 0), *y = h_rand(e, ny, 0, 0);
    vf_conv2d conv = {cin, cout, k, k, stride, pad, w, bias};
    size_t colf = vf_conv2d_col_floats(&conv, B, H, H);
    float *col = h_rand(e, colf ? colf : 1, 0, 0);
    vf_nchw_to_cnhw(x, B, cin, H * H, x_c);
    vf_nchw_to_cnhw(res, B, cout, Ho * Ho, res_c);
    vf_conv2d_forward(&conv, x_c, B, H, H, residual ? res_c : NULL, relu, y_c, col, colf);
    cnhw_to_nchw(y_c, cout, B, Ho * Ho, ref);
    float *dx, *dw, *db, *dres, *dy;
    NEED(dx = d_make(e, x, nx)); NEED(dw = d_make(e, w, (size_t)cout * cin * k * k)); NEED(db = d_make(e, bias, cout));
    NEED(dres = d_make(e, res, ny)); NEED(dy = d_make(e, NULL, ny));
    vf_conv2d dconv = {cin, cout, k, k, stride, pad, dw, db};
    NEED(!vf_cuda_conv2d_forward(e->ctx, &dconv, dx, B, H, H, residual ? dres : NULL, relu, dy, &e->err));
    NEED(!d_get(e, y, dy, ny));
    snprintf(name, sizeof name, "conv2d %dx%d s%d p%d %d->%d H=%d%s%s", k, k, stride, pad, cin, cout, H,
             residual ? " +res" : "", relu ? " relu" : "");
    vf_check_close(name, y, ref, ny, TOL);
    env_release(e);
    return;
cuda_failed:
    fail_error(e, name);
    env_release(e);
}

static void check_avgpool(op_env *e, int planes, int H, int k) {
    char name[96];
    const int Ho = H / k;
    float *x = h_rand(e, (size_t)planes * H * H, -1, 1), *ref = h_rand(e, (size_t)planes * Ho * Ho, 0, 0), *y = h_rand(e, (size_t)planes * Ho * Ho, 0, 0);
    vf_avgpool2d_forward(x, planes, H, H, k, ref);
    float *dx, *dy;
    NEED(dx = d_make(e, x, (size_t)planes * H * H)); NEED(dy = d_make(e, NULL, (size_t)planes * Ho * Ho));
    NEED(!vf_cuda_avgpool2d_forward(e->ctx, dx, planes, H, H, k, dy, &e->err) && !d_get(e, y, dy, (size_t)planes * Ho * Ho));
    snprintf(name, sizeof name, "avgpool2d planes=%d H=%d k=%d", planes, H, k);
    vf_check_close(name, y, ref, (size_t)planes * Ho * Ho, TOL);
    env_release(e);
    return;
cuda_failed:
    fail_error(e, "avgpool2d");
    env_release(e);
}

int vf_gpu_check_ops(vf_cuda_ctx *ctx, uint64_t seed) {
    const int before = vf_check_failures;
    op_env e;
    memset(&e, 0, sizeof e);
    e.ctx = ctx;
    vf_rng_seed(&e.rng, seed);
    check_layernorm(&e, 37, 200);
    check_layernorm(&e, 64, 768);
    check_activations(&e, 10007);
    check_softmax(&e, 150, 50, 0);
    check_softmax(&e, 150, 50, 1);
    for (int causal = 0; causal < 2; causal++) {
        check_attention(&e, 2, 20, 128, 2, causal);   /* head size 64 */
        check_attention(&e, 2, 77, 128, 4, causal);   /* 32, text length */
        check_attention(&e, 1, 70, 256, 2, causal);   /* 128, several key tiles */
        check_attention(&e, 1, 33, 192, 2, causal);   /* 96 */
    }
    check_attention(&e, 2, 257, 128, 2, 0);           /* ViT-L/14 token count */
    check_attention_bf16(&e, 2, 257, 256, 4, 0);      /* tensor cores: 5 key tiles, last one partial */
    check_attention_bf16(&e, 3, 50, 128, 2, 0);       /* tensor cores: one partial tile */
    check_attention_bf16(&e, 2, 77, 128, 2, 1);       /* causal: the warp-per-query kernel in bf16 */
    check_matmul(&e, 100, 96, 130, 1);
    check_matmul(&e, 77, 512, 2048, 0);
    check_patch_embed(&e, 2, 32, 8, 64);
    check_conv(&e, 2, 16, 24, 14, 3, 1, 1, 1, 1);
    check_conv(&e, 2, 16, 24, 14, 3, 2, 1, 0, 1);
    check_conv(&e, 2, 24, 40, 7, 1, 1, 0, 0, 0);
    check_avgpool(&e, 10, 14, 2);
    check_avgpool(&e, 6, 7, 2);
    return vf_check_failures - before;
}
