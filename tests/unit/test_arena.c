/* test_arena: util/arena's two passes (count, then carve what was counted)
 * and the carve functions of the kernels' arenas: each reserves exactly what
 * its carving pass uses, every piece 64-byte aligned and zeroed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>

#include "cpu/clip_text.h"
#include "cpu/clip_text_backward.h"
#include "cpu/clip_vit.h"
#include "cpu/resnet.h"
#include "util/arena.h"

static int aligned(const void *p) { return ((uintptr_t)p & 63u) == 0; }

/* A carve function of the kind the project writes: the same requests in both passes. */
typedef struct pieces {
    float *a;
    int *b;
    float *c;
} pieces;

static void carve(vf_arena *ar, pieces *p) {
    p->a = vf_arena_floats(ar, 3);
    p->b = vf_arena_alloc(ar, 100 * sizeof(int));
    p->c = vf_arena_floats(ar, 16);
}

static void test_counting_then_carving(void **state) {
    (void)state;
    vf_arena ar = {0};
    pieces p;
    vf_arena_plan(&ar);
    assert_int_equal(vf_arena_counting(&ar), 1);
    carve(&ar, &p);
    assert_null(p.a);
    assert_null(p.b);
    assert_null(p.c);
    vf_error err = {0};
    assert_int_equal(vf_arena_commit(&ar, &err), 0);
    assert_int_equal(vf_arena_counting(&ar), 0);
    assert_int_equal(ar.size, 64 + 448 + 64);  // each piece rounded up to 64 bytes
    assert_int_equal(ar.used, 0);
    carve(&ar, &p);
    assert_non_null(p.a);
    assert_true(aligned(p.a) && aligned(p.b) && aligned(p.c));
    assert_ptr_equal((char *)p.b, (char *)p.a + 64);
    assert_ptr_equal((char *)p.c, (char *)p.b + 448);
    assert_int_equal(ar.used, ar.size);
    for (size_t i = 0; i < ar.size; i++) assert_int_equal(ar.base[i], 0);
    assert_null(vf_arena_alloc(&ar, 1));  // nothing beyond what was counted
    vf_arena_free(&ar);
    assert_null(ar.base);
    assert_int_equal(ar.size, 0);
    assert_int_equal(vf_arena_counting(&ar), 0);
}

static void test_empty_count(void **state) {
    (void)state;
    vf_arena ar = {0};
    vf_error err = {0};
    vf_arena_plan(&ar);
    assert_int_equal(vf_arena_commit(&ar, &err), 0);
    assert_non_null(ar.base);
    assert_null(vf_arena_alloc(&ar, 65));
    vf_arena_free(&ar);
}

static const vf_clip_encoder_config ENC = {.hidden_size = 24, .intermediate_size = 40, .num_layers = 3,
                                           .num_heads = 4, .act = VF_ACT_QUICK_GELU, .layer_norm_eps = 1e-5f};

static void assert_exact(const vf_arena *ar) {
    assert_non_null(ar->base);
    assert_int_equal(ar->used, ar->size);
    assert_int_equal(vf_arena_counting(ar), 0);
}

static void test_text_arenas_exact(void **state) {
    (void)state;
    vf_clip_text_weights w = {.cfg = {.enc = ENC, .vocab_size = 50, .max_positions = 11}, .projection_dim = 8};
    vf_clip_text_acts a;
    vf_clip_text_grads g;
    vf_error err = {0};
    assert_int_equal(vf_clip_text_acts_init(&a, &w, 5, 11, &err), 0);
    assert_exact(&a.arena);
    for (int l = 0; l <= ENC.num_layers; l++) assert_true(a.hidden[l] && aligned(a.hidden[l]));
    for (int l = 0; l < ENC.num_layers; l++) assert_true(a.layers[l].att && a.layers[l].q && !a.layers[l].qkv);
    assert_non_null(a.pooled_rstd);
    assert_int_equal(vf_clip_text_grads_init(&g, &w, 5, 11, &err), 0);
    assert_exact(&g.arena);
    assert_true(g.layer.att && g.off);
    vf_clip_text_grads_free(&g);
    vf_clip_text_acts_free(&a);
    assert_int_equal(vf_clip_text_acts_init(&a, &w, 5, 12, &err), -1);  // longer than max_positions
}

static void test_vision_arenas_exact(void **state) {
    (void)state;
    vf_vit_weights w = {.cfg = {.enc = ENC, .image_size = 32, .patch_size = 8, .num_channels = 3}, .projection_dim = 8};
    vf_vit_acts a;
    vf_error err = {0};
    assert_int_equal(vf_vit_acts_init(&a, &w, 3, &err), 0);
    assert_exact(&a.arena);
    assert_true(a.layer.qkv && a.layer.att_scratch && !a.layer.att && a.cls_ln);
    vf_vit_acts_free(&a);

    vf_resnet_config cfg = {.layers = {1, 2, 1, 1}, .width = 8, .image_size = 64, .heads = 4, .output_dim = 8};
    vf_resnet r;
    vf_resnet_acts ra;
    assert_int_equal(vf_resnet_init(&r, &cfg, &err), 0);
    assert_exact(&r.params);
    assert_non_null(r.blocks);
    assert_true(r.blocks[4].conv3.bias && r.attnpool.c_b);
    assert_int_equal(vf_resnet_acts_init(&ra, &r, 2, &err), 0);
    assert_exact(&ra.arena);
    vf_resnet_acts_free(&ra);
    vf_resnet_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counting_then_carving),
        cmocka_unit_test(test_empty_count),
        cmocka_unit_test(test_text_arenas_exact),
        cmocka_unit_test(test_vision_arenas_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
