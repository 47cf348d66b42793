/* test_cpu_bf16: the bf16 CPU kernels (issue 18) against double-precision
 * loops over the same bf16-rounded inputs, on random data:
 * - vf_bf16_linear_forward with every epilogue (bias, residual, quick_gelu,
 *   gelu, gelu_tanh; bf16 or fp32 output) on the ViT shapes and odd ones;
 * - vf_layernorm_forward_bf16 equals the fp32 layer norm rounded to bf16,
 *   bit for bit;
 * - vf_attention_forward_bf16 (AMX tiles where the CPU has them, else
 *   oneDNN; VFLCLIP_CPU_NO_AMX=1 picks oneDNN), full and causal, at
 *   T = 1, 15, 16, 32, 33, 50, 197, 257 and 577.
 * Each prints its largest error.  On a CPU without bf16 each test says so in
 * one line and skips. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/attention.h"
#include "cpu/bf16.h"
#include "cpu/layernorm.h"
#include "cpu/matmul_bf16.h"

static unsigned long long rng_state = 0x2545F4914F6CDD1Dull;
static float frand(void) { // uniform in [-1, 1)
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* n bf16 values of scale * U(-1, 1), and the same as floats. */
static uint16_t *rand_bf16(size_t n, float scale, float **as_float) {
    uint16_t *p = malloc(n * sizeof *p);
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) p[i] = vf_f32_to_bf16(scale * frand()), f[i] = vf_bf16_to_f32(p[i]);
    *as_float = f;
    return p;
}

static int have_bf16(void) {
    char why[192];
    if (vf_cpu_bf16_available(why, sizeof why)) return 1;
    printf("SKIP: no bf16 on this CPU (%s)\n", why);
    return 0;
}

static double act_ref(vf_activation act, double x) {
    switch (act) {
    case VF_ACT_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case VF_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case VF_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
    return x;
}

/* ---- Linear ------------------------------------------------------------------ */
typedef struct linear_case {
    int N, IC, OC;
} linear_case;

/* One epilogue: act (-1 none), resid, out_bf16; returns the largest error
 * relative to the largest reference value. */
static double linear_check(const vf_bf16_linear *l, const float *wf, const uint16_t *x, const float *xf, const float *bias,
                           const float *resid, int N, int act, int out_bf16) {
    const int IC = l->IC, OC = l->OC;
    void *out = malloc((size_t)N * OC * 4);
    const vf_activation a = (vf_activation)(act < 0 ? 0 : act);
    vf_bf16_linear_forward(l, out, out_bf16, resid, x, bias, N, act < 0 ? NULL : &a);
    double err = 0.0, big = 1e-30;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int i = 0; i < IC; i++) s += (double)xf[(size_t)n * IC + i] * wf[(size_t)o * IC + i];
            if (act >= 0) s = act_ref(a, s);
            if (resid) s += resid[(size_t)n * OC + o];
            const size_t k = (size_t)n * OC + o;
            const double got = out_bf16 ? vf_bf16_to_f32(((uint16_t *)out)[k]) : ((float *)out)[k];
            err = fmax(err, fabs(got - s));
            big = fmax(big, fabs(s));
        }
    free(out);
    return err / big;
}

static void test_linear(void **state) {
    (void)state;
    if (!have_bf16()) skip();
    const linear_case cases[] = {{197, 768, 2304}, {394, 768, 768}, {50, 768, 3072}, {50, 3072, 768}, {1, 64, 32}, {7, 96, 80}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int N = cases[c].N, IC = cases[c].IC, OC = cases[c].OC;
        float *wf, *xf;
        uint16_t *w16 = rand_bf16((size_t)OC * IC, 0.05f, &wf), *x = rand_bf16((size_t)N * IC, 1.0f, &xf);
        float *bias = malloc(sizeof(float) * OC), *resid = malloc(sizeof(float) * (size_t)N * OC);
        for (int o = 0; o < OC; o++) bias[o] = frand();
        for (size_t i = 0; i < (size_t)N * OC; i++) resid[i] = frand();
        const size_t bytes = vf_bf16_linear_bytes(IC, OC);
        assert_true(bytes >= (size_t)IC * OC * 2);
        void *packed = aligned_alloc(64, (bytes + 63) / 64 * 64);
        assert_int_equal(vf_bf16_linear_pack(packed, wf, IC, OC), 0); /* wf is bf16-exact: packing loses nothing */
        const vf_bf16_linear l = {packed, IC, OC};
        double worst = 0.0;
        /* fp32 output: only the fp32 sums' rounding (K terms); bf16 output: half an ulp of bf16 more */
        for (int act = -1; act <= VF_ACT_GELU_TANH; act++)
            for (int out_bf16 = 0; out_bf16 <= 1; out_bf16++) {
                const double e = linear_check(&l, wf, x, xf, bias, NULL, N, act, out_bf16);
                assert_true(e < (out_bf16 ? 6e-3 : 1e-5));
                worst = fmax(worst, e);
            }
        const double e = linear_check(&l, wf, x, xf, bias, resid, N, -1, 0);
        assert_true(e < 1e-5);
        assert_true(linear_check(&l, wf, x, xf, NULL, NULL, N, -1, 0) < 1e-5);
        printf("linear (%d, %d) -> %d: largest error / largest value %.2e (bf16 out), %.2e (fp32 out + residual)\n", N, IC, OC,
               worst, e);
        free(packed), free(w16), free(wf), free(x), free(xf), free(bias), free(resid);
    }
}

/* ---- layer norm ------------------------------------------------------------- */
static void test_layernorm(void **state) {
    (void)state;
    if (!have_bf16()) skip();
    enum { N = 37, C = 768 };
    float *x = malloc(sizeof(float) * N * C), *w = malloc(sizeof(float) * C), *b = malloc(sizeof(float) * C);
    float *ref = malloc(sizeof(float) * N * C);
    uint16_t *got = malloc(sizeof(uint16_t) * N * C);
    for (int i = 0; i < N * C; i++) x[i] = 3.0f * frand() + 5.0f;
    for (int i = 0; i < C; i++) w[i] = frand(), b[i] = frand();
    vf_layernorm_forward(ref, NULL, NULL, x, w, b, N, C, 1e-5f);
    vf_layernorm_forward_bf16(got, x, w, b, N, C, 1e-5f);
    for (int i = 0; i < N * C; i++) assert_int_equal(got[i], vf_f32_to_bf16(ref[i]));
    printf("layer norm in bf16: the fp32 layer norm rounded, bit for bit (%d x %d)\n", N, C);
    free(x), free(w), free(b), free(ref), free(got);
}

/* ---- attention ------------------------------------------------------------- */
/* out (T, C) of head h, double, from bf16 q/k/v (as floats) in (T, 3C) rows. */
static void attention_ref(double *out, const float *qkv, int T, int C, int NH, int causal) {
    const int hs = C / NH, ld = 3 * C;
    double *p = malloc(sizeof(double) * T);
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < T; t++) {
            const int n = causal ? t + 1 : T;
            double mx = -INFINITY, sum = 0.0;
            for (int s = 0; s < n; s++) {
                double d = 0.0;
                for (int i = 0; i < hs; i++) d += (double)qkv[(size_t)t * ld + h * hs + i] * qkv[(size_t)s * ld + C + h * hs + i];
                p[s] = d / sqrt((double)hs);
                mx = fmax(mx, p[s]);
            }
            for (int s = 0; s < n; s++) sum += p[s] = exp(p[s] - mx);
            for (int i = 0; i < hs; i++) {
                double o = 0.0;
                for (int s = 0; s < n; s++) o += p[s] / sum * qkv[(size_t)s * ld + 2 * C + h * hs + i];
                out[(size_t)t * C + h * hs + i] = o;
            }
        }
    free(p);
}

static void test_attention(void **state) {
    (void)state;
    if (!have_bf16()) skip();
    const int Ts[] = {1, 15, 16, 32, 33, 50, 197, 257, 577};
    printf("attention products on %s\n", vf_cpu_bf16_amx() ? "AMX tiles" : "oneDNN");
    for (size_t c = 0; c < sizeof Ts / sizeof Ts[0]; c++)
        for (int causal = 0; causal <= 1; causal++) {
            const int T = Ts[c], NH = T > 300 ? 2 : 3, C = 64 * NH, B = 2;
            float *qkvf;
            uint16_t *qkv = rand_bf16((size_t)B * T * 3 * C, 2.0f, &qkvf);
            uint16_t *out = malloc(sizeof(uint16_t) * (size_t)B * T * C);
            float *scratch = malloc(sizeof(float) * vf_attention_scratch_floats(T, C, NH));
            double *ref = malloc(sizeof(double) * (size_t)T * C);
            vf_attention_forward_bf16(out, scratch, qkv, B, T, C, NH, 1.0f / 8.0f, causal);
            double err = 0.0;
            for (int b = 0; b < B; b++) {
                attention_ref(ref, qkvf + (size_t)b * T * 3 * C, T, C, NH, causal);
                for (size_t i = 0; i < (size_t)T * C; i++) err = fmax(err, fabs(vf_bf16_to_f32(out[(size_t)b * T * C + i]) - ref[i]));
            }
            printf("attention T=%d%s: largest error %.2e (values within 2)\n", T, causal ? " causal" : "", err);
            assert_true(err < 2.5e-2); /* P and the output in bf16: a few bf16 ulps of values up to 2 */
            free(qkv), free(qkvf), free(out), free(scratch), free(ref);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_attention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
