/* test_coop_prompt: the prompt learner on a tiny random-weight CLIP written
 * by make_model: the gradient of the CoOp loss with respect to the context
 * (text forward + loss + text backward) against central finite differences
 * of the loss, for shared and class-specific contexts and every class
 * position; prompt layout; and the errors for bad templates and shapes. */
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
#include <cblas.h>
#include <omp.h>

#include "clip/clip_model.h"
#include "clip/make_model.h"
#include "clip/tokenizer.h"
#include "coop/loss.h"
#include "coop/prompt.h"

typedef struct fixture {
    char dir[64];
    vf_clip_text_tower tower;
    vf_tokenizer *tok;
} fixture;

static int setup(void **state) {
    /* A tiny model: thread start-up and spinning would cost more than the
     * maths, and the finite differences run hundreds of forwards. */
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    fixture *f = calloc(1, sizeof *f);
    vf_error err = {{0}};
    snprintf(f->dir, sizeof f->dir, "/tmp/test_coop_prompt.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    if (vf_make_model("tiny", 11, VF_DT_F32, f->dir, 0, &err) != 0 || vf_clip_text_load(&f->tower, f->dir, &err) != 0 ||
        vf_tokenizer_load_dir(&f->tok, f->dir, &err) != 0) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    vf_tokenizer_free(f->tok);
    vf_clip_text_free(&f->tower);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static const char *const CLASSES[3] = {"melanoma", "basal cell carcinoma", "nevus"};
enum { NI = 5 };

typedef struct probe {
    vf_coop *coop;
    const float *image;
    const int *labels;
    float logit_scale;
    float *text, *dtext, *scratch;
} probe;

static double loss_at(probe *p) {
    vf_error err;
    if (vf_coop_text_forward(p->coop, p->text, &err) != 0) fail_msg("%s", err.msg);
    int C = vf_coop_n_classes(p->coop), D = vf_coop_feature_dim(p->coop);
    return vf_coop_loss(p->image, p->labels, NI, p->text, C, D, p->logit_scale, NULL, NULL, p->scratch);
}

static void check_fd_case(fixture *f, int csc, vf_class_pos pos, const char *tmpl) {
    vf_coop_config cfg = vf_coop_config_default();
    cfg.n_ctx = 3;
    cfg.csc = csc;
    cfg.class_pos = pos;
    cfg.template_ = tmpl;
    cfg.seed = 5;
    vf_coop *coop;
    vf_error err = {{0}};
    if (vf_coop_create(&coop, &cfg, &f->tower.w, f->tok, CLASSES, 3, &err) != 0) fail_msg("%s", err.msg);
    int C = 3, D = vf_coop_feature_dim(coop), n = vf_coop_ctx_count(coop);
    assert_int_equal(vf_coop_ctx_rows(coop), csc ? 9 : 3);
    float *ctx = vf_coop_ctx(coop);
    for (int i = 0; i < n; i++) ctx[i] *= 25.0f;   // N(0, 0.5): large enough to matter against the token embeddings
    float image[NI * 32];
    assert_int_equal(D, 32);
    unsigned s = 3;
    for (int i = 0; i < NI * D; i++) { s = s * 1103515245u + 12345u; image[i] = ((s >> 8) & 0xffff) / 32768.0f - 1.0f; }
    int labels[NI] = {0, 1, 2, 1, 0};
    float text[3 * 32], dtext[3 * 32], *dctx = malloc((size_t)n * sizeof(float));
    float *scratch = malloc((size_t)vf_coop_loss_scratch_floats(NI, C, D) * sizeof(float));
    probe p = {coop, image, labels, f->tower.logit_scale, text, dtext, scratch};
    if (vf_coop_text_forward(coop, text, &err) != 0) fail_msg("%s", err.msg);
    vf_coop_loss(image, labels, NI, text, C, D, p.logit_scale, NULL, dtext, scratch);
    if (vf_coop_text_backward(coop, dtext, dctx, &err) != 0) fail_msg("%s", err.msg);
    double max_diff = 0, max_ref = 0;
    const float h = 3e-2f;   // float forward: smaller steps drown in rounding noise
    for (int i = 0; i < n; i += 4) {   // every 4th entry keeps the test quick
        float keep = ctx[i];
        ctx[i] = keep + h; double lp = loss_at(&p);
        ctx[i] = keep - h; double lm = loss_at(&p);
        ctx[i] = keep;
        double fd = (lp - lm) / (2.0 * h);
        max_diff = fmax(max_diff, fabs(fd - dctx[i]));
        max_ref = fmax(max_ref, fabs(fd));
    }
    printf("fd %-6s csc=%d T=%d probed %d of %d: max|fd|=%.4g max|analytic-fd|=%.3g\n", vf_class_pos_name(pos), csc,
           vf_coop_seq_len(coop), (n + 3) / 4, n, max_ref, max_diff);
    assert_true(max_ref > 1e-4);   // the probe must see a real gradient
    if (max_diff > 2e-2 * max_ref) fail_msg("dL/dctx differs from finite differences by %g (max %g)", max_diff, max_ref);
    free(dctx);
    free(scratch);
    vf_coop_free(coop);
}

static void test_grad_matches_finite_differences(void **state) {
    fixture *f = *state;
    check_fd_case(f, 0, VF_CLASS_END, "a dermatoscopic image of {ctx} {class}.");
    check_fd_case(f, 1, VF_CLASS_MIDDLE, "{ctx} {class}.");
    check_fd_case(f, 0, VF_CLASS_FRONT, "{ctx} {class}.");
}

/* Prompt layout: [SOT] prefix ctx class suffix [EOT], T = the longest. */
static void test_prompt_layout(void **state) {
    fixture *f = *state;
    vf_coop_config cfg = vf_coop_config_default();
    cfg.n_ctx = 4;
    cfg.template_ = "a photo of {ctx} {class}.";
    vf_coop *coop;
    vf_error err = {{0}};
    if (vf_coop_create(&coop, &cfg, &f->tower.w, f->tok, CLASSES, 3, &err) != 0) fail_msg("%s", err.msg);
    int32_t pre[16], cls[16], dot[4];
    int n_pre, n_cls, n_dot;
    assert_int_equal(vf_tokenize_words(f->tok, "a photo of", pre, 16, &n_pre, &err), 0);
    assert_int_equal(vf_tokenize_words(f->tok, ".", dot, 4, &n_dot, &err), 0);
    int T = vf_coop_seq_len(coop), longest = 0;
    for (int k = 0; k < 3; k++) {
        assert_int_equal(vf_tokenize_words(f->tok, CLASSES[k], cls, 16, &n_cls, &err), 0);
        const int32_t *ids = vf_coop_prompt_ids(coop, k);
        const int *pos = vf_coop_ctx_positions(coop, k);
        assert_int_equal(ids[0], vf_tokenizer_sot(f->tok));
        for (int i = 0; i < n_pre; i++) assert_int_equal(ids[1 + i], pre[i]);
        for (int j = 0; j < 4; j++) assert_int_equal(pos[j], 1 + n_pre + j);
        for (int i = 0; i < n_cls; i++) assert_int_equal(ids[1 + n_pre + 4 + i], cls[i]);
        int eot_at = 1 + n_pre + 4 + n_cls + n_dot;
        assert_int_equal(ids[eot_at - 1], dot[0]);
        assert_int_equal(ids[eot_at], vf_tokenizer_eot(f->tok));
        if (eot_at + 1 > longest) longest = eot_at + 1;
    }
    assert_int_equal(T, longest);
    vf_coop_free(coop);
}

static void expect_create_error(fixture *f, vf_coop_config cfg, const char *needle) {
    vf_coop *coop = NULL;
    vf_error err = {{0}};
    assert_int_equal(vf_coop_create(&coop, &cfg, &f->tower.w, f->tok, CLASSES, 3, &err), -1);
    assert_null(coop);
    if (!strstr(err.msg, needle)) fail_msg("expected '%s' in: %s", needle, err.msg);
}

static void test_bad_configs(void **state) {
    fixture *f = *state;
    vf_coop_config cfg = vf_coop_config_default();
    cfg.template_ = "a photo of {class}.";
    expect_create_error(f, cfg, "lacks a {ctx} slot");
    cfg.template_ = "{class} {ctx}.";
    expect_create_error(f, cfg, "before {ctx}");
    cfg.template_ = "{ctx} of a {class}.";
    cfg.class_pos = VF_CLASS_MIDDLE;
    expect_create_error(f, cfg, "adjacent");
    cfg = vf_coop_config_default();
    cfg.n_ctx = 75;   // + SOT, class tokens, '.', EOT > 77
    expect_create_error(f, cfg, "class 'melanoma': the prompt");
    expect_create_error(f, cfg, "longer than the model's 77 positions");
    cfg.n_ctx = 0;
    expect_create_error(f, cfg, "n_ctx");

    cfg = vf_coop_config_default();
    vf_coop *coop;
    vf_error err = {{0}};
    assert_int_equal(vf_coop_create(&coop, &cfg, &f->tower.w, f->tok, CLASSES, 3, &err), 0);
    int W = vf_coop_width(coop);
    float *ctx = calloc((size_t)16 * W, sizeof(float));
    assert_int_equal(vf_coop_set_ctx(coop, ctx, 15, W, "ctx.npy", &err), -1);
    assert_non_null(strstr(err.msg, "ctx.npy"));
    ctx[7] = NAN;
    assert_int_equal(vf_coop_set_ctx(coop, ctx, 16, W, "ctx.npy", &err), -1);
    assert_non_null(strstr(err.msg, "not finite"));
    free(ctx);
    vf_coop_free(coop);
}

/* Random init: N(0, 0.02), deterministic per seed; CSC has C * n_ctx rows. */
static void test_random_init(void **state) {
    fixture *f = *state;
    vf_coop_config cfg = vf_coop_config_default();
    cfg.csc = 1;
    cfg.seed = 123;
    vf_coop *a, *b, *c;
    vf_error err = {{0}};
    assert_int_equal(vf_coop_create(&a, &cfg, &f->tower.w, f->tok, CLASSES, 3, &err), 0);
    assert_int_equal(vf_coop_create(&b, &cfg, &f->tower.w, f->tok, CLASSES, 3, &err), 0);
    cfg.seed = 124;
    assert_int_equal(vf_coop_create(&c, &cfg, &f->tower.w, f->tok, CLASSES, 3, &err), 0);
    int n = vf_coop_ctx_count(a);
    assert_int_equal(vf_coop_ctx_rows(a), 3 * 16);
    assert_memory_equal(vf_coop_ctx(a), vf_coop_ctx(b), (size_t)n * sizeof(float));
    assert_memory_not_equal(vf_coop_ctx(a), vf_coop_ctx(c), (size_t)n * sizeof(float));
    double s1 = 0, s2 = 0;
    for (int i = 0; i < n; i++) { s1 += vf_coop_ctx(a)[i]; s2 += (double)vf_coop_ctx(a)[i] * vf_coop_ctx(a)[i]; }
    double mean = s1 / n, sd = sqrt(s2 / n - mean * mean);
    printf("random ctx: n=%d mean=%.5f sd=%.5f (want 0, 0.02)\n", n, mean, sd);
    assert_true(fabs(mean) < 4 * 0.02 / sqrt(n));   // 4 standard errors
    assert_true(fabs(sd - 0.02) < 0.02 * 4 / sqrt(2.0 * n));
    vf_coop_free(a); vf_coop_free(b); vf_coop_free(c);
}

/* Word init: every context row is the token embedding of its word piece. */
static void test_word_init(void **state) {
    fixture *f = *state;
    vf_coop_config cfg = vf_coop_config_default();
    cfg.init_words = "a photo of a";
    cfg.csc = 1;
    vf_coop *c;
    vf_error err = {{0}};
    if (vf_coop_create(&c, &cfg, &f->tower.w, f->tok, CLASSES, 3, &err) != 0) fail_msg("%s", err.msg);
    int32_t ids[16];
    int n_ids, W = vf_coop_width(c);
    assert_int_equal(vf_tokenize_words(f->tok, "a photo of a", ids, 16, &n_ids, &err), 0);
    assert_int_equal(vf_coop_n_ctx(c), n_ids);
    assert_int_equal(vf_coop_ctx_rows(c), 3 * n_ids);
    for (int r = 0; r < 3 * n_ids; r++)
        assert_memory_equal(vf_coop_ctx(c) + (size_t)r * W, f->tower.w.token_embedding + (size_t)ids[r % n_ids] * W,
                            (size_t)W * sizeof(float));
    vf_coop_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_matches_finite_differences),
        cmocka_unit_test(test_prompt_layout),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_random_init),
        cmocka_unit_test(test_word_init),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
