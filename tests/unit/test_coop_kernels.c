/* test_coop_kernels: every input-gradient backward in cpu/backward.h, and the
 * CoOp loss gradient, against central finite differences of the forward
 * (the forward kernels are the model's own, cpu headers).  The scalar probed is
 * L = sum(w * f(x)) with a fixed random w, so dL/dx = backward(dout = w).
 * Also: optimizer state survives a save/load round trip bit for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "coop/loss.h"
#include "coop/optim.h"
#include "cpu/activation.h"
#include "cpu/attention.h"
#include "cpu/backward.h"
#include "cpu/layernorm.h"

static unsigned long long rng_state = 42;
static float randn(void) {
    double u1, u2;
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    u1 = ((rng_state >> 11) + 0.5) / 9007199254740992.0;
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    u2 = ((rng_state >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}
static void fill(float *x, long n, float scale) { for (long i = 0; i < n; i++) x[i] = scale * randn(); }

typedef double (*scalar_fn)(void *ctx, const float *x);

/* Compares analytic gradient g (n) with central differences of f around x;
 * fails when max |g - fd| > tol * max(1, max |fd|). */
static void check_fd(const char *what, scalar_fn f, void *ctx, float *x, const float *g, long n, float h, double tol) {
    double max_diff = 0, max_ref = 0;
    for (long i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + h; double fp = f(ctx, x);
        x[i] = keep - h; double fm = f(ctx, x);
        x[i] = keep;
        double fd = (fp - fm) / (2.0 * h);
        double d = fabs(fd - g[i]);
        if (d > max_diff) max_diff = d;
        if (fabs(fd) > max_ref) max_ref = fabs(fd);
    }
    printf("%-22s n=%-5ld max|fd|=%.4g max|analytic-fd|=%.3g\n", what, n, max_ref, max_diff);
    if (max_diff > tol * fmax(1.0, max_ref)) fail_msg("%s: gradient differs from finite differences by %g", what, max_diff);
}

static double dot_d(const float *a, const float *b, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* ---- layer norm ---------------------------------------------------------- */
typedef struct { int N, C; const float *w, *b, *dout; float *out; } ln_ctx;
static double ln_fn(void *vc, const float *x) {
    ln_ctx *c = vc;
    vf_layernorm_forward(c->out, NULL, NULL, x, c->w, c->b, c->N, c->C, 1e-5f);
    return dot_d(c->out, c->dout, (long)c->N * c->C);
}
static void test_layernorm_backward(void **state) {
    (void)state;
    enum { N = 3, C = 16 };
    float x[N * C], w[C], b[C], dout[N * C], out[N * C], mean[N], rstd[N], dx[N * C] = {0}, dx2[N * C] = {0};
    fill(x, N * C, 1.5f); fill(w, C, 1.0f); fill(b, C, 1.0f); fill(dout, N * C, 1.0f);
    vf_layernorm_forward(out, mean, rstd, x, w, b, N, C, 1e-5f);
    vf_layernorm_backward(dx, dout, x, w, mean, rstd, 1e-5f, N, C);
    vf_layernorm_backward(dx2, dout, x, w, NULL, NULL, 1e-5f, N, C);   // recomputed statistics
    for (int i = 0; i < N * C; i++) assert_true(fabsf(dx[i] - dx2[i]) <= 1e-5f * (1 + fabsf(dx[i])));
    ln_ctx c = {N, C, w, b, dout, out};
    check_fd("layernorm", ln_fn, &c, x, dx, N * C, 1e-2f, 2e-3);
}

/* ---- activations ----------------------------------------------------------- */
typedef struct { long n; void (*fwd)(float *, const float *, long); const float *dout; float *out; } act_ctx;
static double act_fn(void *vc, const float *x) {
    act_ctx *c = vc;
    c->fwd(c->out, x, c->n);
    return dot_d(c->out, c->dout, c->n);
}
static void test_activation_backward(void **state) {
    (void)state;
    enum { N = 64 };
    void (*fwd[3])(float *, const float *, long) = {vf_quick_gelu_forward, vf_gelu_forward, vf_gelu_tanh_forward};
    void (*bwd[3])(float *, const float *, const float *, long) = {vf_quick_gelu_backward, vf_gelu_backward, vf_gelu_tanh_backward};
    const char *names[3] = {"quick_gelu", "gelu", "gelu_tanh"};
    for (int k = 0; k < 3; k++) {
        float x[N], dout[N], out[N], dx[N] = {0};
        fill(x, N, 2.0f); fill(dout, N, 1.0f);
        bwd[k](dx, x, dout, N);
        act_ctx c = {N, fwd[k], dout, out};
        check_fd(names[k], act_fn, &c, x, dx, N, 1e-2f, 2e-3);
    }
}

/* ---- linear (input gradient) ----------------------------------------------- */
static void test_matmul_backward(void **state) {
    (void)state;
    enum { N = 4, IC = 5, OC = 3 };
    float w[OC * IC], dout[N * OC], dx[N * IC];
    fill(w, OC * IC, 1.0f); fill(dout, N * OC, 1.0f);
    for (int i = 0; i < N * IC; i++) dx[i] = 1.0f;   // accumulates onto existing contents
    vf_matmul_backward_input(dx, dout, w, N, IC, OC);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IC; i++) {
            double ref = 1.0;
            for (int o = 0; o < OC; o++) ref += (double)dout[n * OC + o] * w[o * IC + i];
            assert_true(fabs(dx[n * IC + i] - ref) < 1e-5);
        }
}

/* ---- causal attention ------------------------------------------------------ */
enum { AB = 2, AT = 5, AC = 8, ANH = 2, ALD = 3 * AC };
typedef struct { const float *dout; float *out, *att; int which; float *qkv; } att_ctx;
static double att_fn(void *vc, const float *x) {
    att_ctx *c = vc;
    /* x is one of q/k/v (B*T*C, dense); splice it into the fused buffer */
    for (int r = 0; r < AB * AT; r++) memcpy(c->qkv + (size_t)r * ALD + c->which * AC, x + (size_t)r * AC, AC * sizeof(float));
    vf_attention_forward(c->out, c->att, c->qkv, c->qkv + AC, c->qkv + 2 * AC, AB, AT, AC, ANH, ALD, 0.5f, 1);
    return dot_d(c->out, c->dout, AB * AT * AC);
}
static void test_attention_backward(void **state) {
    (void)state;
    float qkv[AB * AT * ALD], dout[AB * AT * AC], out[AB * AT * AC], att[AB * ANH * AT * AT], scratch[AB * ANH * AT * AT];
    float dqkv[AB * AT * ALD] = {0}, dqkv2[AB * AT * ALD] = {0};
    fill(qkv, AB * AT * ALD, 1.0f); fill(dout, AB * AT * AC, 1.0f);
    vf_attention_forward(out, att, qkv, qkv + AC, qkv + 2 * AC, AB, AT, AC, ANH, ALD, 0.5f, 1);
    vf_attention_backward(dqkv, dqkv + AC, dqkv + 2 * AC, NULL, dout, qkv, qkv + AC, qkv + 2 * AC, att, AB, AT, AC, ANH, ALD, 0.5f, NULL);
    vf_attention_backward(dqkv2, dqkv2 + AC, dqkv2 + 2 * AC, scratch, dout, qkv, qkv + AC, qkv + 2 * AC, NULL, AB, AT, AC, ANH, ALD, 0.5f, NULL);
    for (int i = 0; i < AB * AT * ALD; i++) assert_true(fabsf(dqkv[i] - dqkv2[i]) <= 1e-5f * (1 + fabsf(dqkv[i])));
    const char *names[3] = {"attention dq", "attention dk", "attention dv"};
    for (int which = 0; which < 3; which++) {
        float x[AB * AT * AC], g[AB * AT * AC], work[AB * AT * ALD];
        memcpy(work, qkv, sizeof work);
        for (int r = 0; r < AB * AT; r++) {
            memcpy(x + r * AC, qkv + r * ALD + which * AC, AC * sizeof(float));
            memcpy(g + r * AC, dqkv + r * ALD + which * AC, AC * sizeof(float));
        }
        att_ctx c = {dout, out, att, which, work};
        check_fd(names[which], att_fn, &c, x, g, AB * AT * AC, 1e-2f, 2e-3);
    }
    /* Row ranges: with dout zero outside [lo, hi), the packed gradients equal
     * the full ones on the rows inside. */
    int lo[AB] = {1, 2}, hi[AB] = {4, 5}, off[AB] = {0, 3};
    vf_row_ranges rows = {lo, hi, off};
    float dout_full[AB * AT * AC] = {0}, dout_packed[6 * AC], dp[3][6 * AC];
    memset(dp, 0, sizeof dp);
    memset(dqkv, 0, sizeof dqkv);
    for (int b = 0; b < AB; b++)
        for (int t = lo[b]; t < hi[b]; t++) {
            memcpy(dout_full + (b * AT + t) * AC, dout + (b * AT + t) * AC, AC * sizeof(float));
            memcpy(dout_packed + (off[b] + t - lo[b]) * AC, dout + (b * AT + t) * AC, AC * sizeof(float));
        }
    vf_attention_backward(dqkv, dqkv + AC, dqkv + 2 * AC, NULL, dout_full, qkv, qkv + AC, qkv + 2 * AC, att, AB, AT, AC, ANH, ALD, 0.5f, NULL);
    vf_attention_backward(dp[0], dp[1], dp[2], NULL, dout_packed, qkv, qkv + AC, qkv + 2 * AC, att, AB, AT, AC, ANH, ALD, 0.5f, &rows);
    double max_diff = 0;
    for (int which = 0; which < 3; which++)
        for (int b = 0; b < AB; b++)
            for (int t = lo[b]; t < hi[b]; t++)
                for (int i = 0; i < AC; i++)
                    max_diff = fmax(max_diff, fabs(dp[which][(off[b] + t - lo[b]) * AC + i] - dqkv[(b * AT + t) * ALD + which * AC + i]));
    printf("attention row ranges: max |packed - full| = %.3g\n", max_diff);
    assert_true(max_diff < 1e-6);
}

/* ---- CoOp loss ---------------------------------------------------------------- */
enum { LN = 6, LC = 4, LD = 10 };
typedef struct { const float *image; const int *labels; float *scratch; } loss_ctx;
static double loss_fn(void *vc, const float *text) {
    loss_ctx *c = vc;
    return vf_coop_loss(c->image, c->labels, LN, text, LC, LD, logf(20.0f), NULL, NULL, c->scratch);
}
static void test_loss_gradient(void **state) {
    (void)state;
    float image[LN * LD], text[LC * LD], dtext[LC * LD], logits[LN * LC];
    float scratch[512];
    assert_true(vf_coop_loss_scratch_floats(LN, LC, LD) <= 512);
    int labels[LN] = {0, 1, 2, 3, 1, 2};
    fill(image, LN * LD, 1.0f); fill(text, LC * LD, 1.0f);
    float L = vf_coop_loss(image, labels, LN, text, LC, LD, logf(20.0f), logits, dtext, scratch);
    assert_true(isfinite(L) && L > 0);
    for (int i = 0; i < LN * LC; i++) assert_true(fabsf(logits[i]) <= 20.0f + 1e-4f);   // s * cosine
    loss_ctx c = {image, labels, scratch};
    check_fd("coop loss dtext", loss_fn, &c, text, dtext, LC * LD, 1e-2f, 2e-3);
    int bad[LN] = {0, 1, 2, 4, 1, 2};
    assert_true(isnan(vf_coop_loss(image, bad, LN, text, LC, LD, 0.0f, NULL, dtext, scratch)));
    for (int i = 0; i < LD; i++) text[i] = 0.0f;   // zero-norm text feature
    assert_true(isnan(vf_coop_loss(image, labels, LN, text, LC, LD, 0.0f, NULL, dtext, scratch)));
}

/* ---- optimizer checkpoints --------------------------------------------------- */
static void test_optim_state_round_trip(void **state) {
    (void)state;
    enum { P = 37 };
    char dir[] = "/tmp/test_coop_optim.XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/optim.safetensors", dir);
    for (int kind = 0; kind < 2; kind++) {
        vf_optim_config cfg = vf_optim_defaults((vf_optim_kind)kind);
        cfg.weight_decay = 5e-4f;
        vf_optim a, b;
        vf_error err = {{0}};
        float pa[P], pb[P], g[P];
        fill(pa, P, 1.0f);
        memcpy(pb, pa, sizeof pa);
        assert_int_equal(vf_optim_init(&a, &cfg, P, &err), 0);
        assert_int_equal(vf_optim_init(&b, &cfg, P, &err), 0);
        for (int s = 0; s < 3; s++) { fill(g, P, 1.0f); vf_optim_step(&a, pa, g, 1e-2f); }
        if (vf_optim_save(&a, path, &err) != 0) fail_msg("%s", err.msg);
        if (vf_optim_load(&b, path, &err) != 0) fail_msg("%s", err.msg);
        assert_int_equal(b.step, 3);
        memcpy(pb, pa, sizeof pa);
        fill(g, P, 1.0f);
        vf_optim_step(&a, pa, g, 1e-2f);
        vf_optim_step(&b, pb, g, 1e-2f);
        assert_memory_equal(pa, pb, sizeof pa);
        /* the other kind's file is refused with a clear message */
        vf_optim_config other = vf_optim_defaults((vf_optim_kind)!kind);
        vf_optim c;
        assert_int_equal(vf_optim_init(&c, &other, P, &err), 0);
        assert_int_equal(vf_optim_load(&c, path, &err), -1);
        assert_non_null(strstr(err.msg, "optim.safetensors"));
        vf_optim_free(&a); vf_optim_free(&b); vf_optim_free(&c);
    }
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm_backward),
        cmocka_unit_test(test_activation_backward),
        cmocka_unit_test(test_matmul_backward),
        cmocka_unit_test(test_attention_backward),
        cmocka_unit_test(test_loss_gradient),
        cmocka_unit_test(test_optim_state_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
