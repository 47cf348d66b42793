/* test_cuda_ops: every CUDA op against its kernels/cpu namesake (forward,
 * backward and finite differences), and a small ViT, ResNet and CoOp text
 * step on the GPU against the C towers.  The checks themselves live in
 * tests/gpu/ so that tests/gpu/build.sh can build them on a GPU machine
 * without cmocka; they are compiled into this program directly.
 * Without a GPU (or in a build without CUDA) it prints one SKIP line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>

#include "device/device.h"

#ifdef VF_HAVE_CUDA
#include "../gpu/check.c"
#include "../gpu/check_models.c"
#include "../gpu/check_ops.c"

static void test_ops(void **state) {
    (void)state;
    vf_cuda_ctx *ctx = NULL;
    vf_error err = {{0}};
    if (vf_cuda_ctx_create(&ctx, 0, VF_CUDA_FP32, &err) != 0) fail_msg("%s", err.msg);
    int failures = vf_gpu_check_ops(ctx, 7);
    vf_cuda_ctx_free(ctx);
    assert_int_equal(failures, 0);
}

/* Small towers: shapes that exercise head sizes 64, odd widths of the MLP, two encode slices. */
static void test_towers(void **state) {
    (void)state;
    const int before = vf_check_failures;
    vf_clip_vision_config v = {.enc = {.hidden_size = 128, .intermediate_size = 320, .num_layers = 2, .num_heads = 2,
                                       .act = VF_ACT_QUICK_GELU, .layer_norm_eps = 1e-5f},
                               .image_size = 64, .patch_size = 16, .num_channels = 3};
    vf_gpu_check_vit("tiny", &v, 96, 3, 11);
    vf_resnet_config r = {.layers = {1, 2, 1, 1}, .width = 16, .image_size = 64, .heads = 8, .output_dim = 64};
    vf_gpu_check_resnet("tiny", &r, 3, 12);
    vf_clip_text_config t = {.enc = {.hidden_size = 128, .intermediate_size = 512, .num_layers = 2, .num_heads = 2,
                                     .act = VF_ACT_QUICK_GELU, .layer_norm_eps = 1e-5f},
                             .vocab_size = 49408, .max_positions = 77, .bos_token_id = 49406, .eos_token_id = 49407};
    vf_gpu_check_coop("tiny", &t, 96, 13);
    assert_int_equal(vf_check_failures - before, 0);
}
#endif

int main(void) {
    int n = vf_device_cuda_count();
    if (n < 1) {
#ifdef VF_HAVE_CUDA
        printf("SKIP test_cuda_ops: no CUDA GPU or driver on this machine\n");
#else
        printf("SKIP test_cuda_ops: this build has no CUDA (no nvcc at build time)\n");
#endif
        return 0;
    }
#ifdef VF_HAVE_CUDA
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ops), cmocka_unit_test(test_towers)};
    return cmocka_run_group_tests(tests, NULL, NULL);
#else
    return 0;
#endif
}
