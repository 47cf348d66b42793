/* test_cuda_device: run-time backend selection (common/device).  On a
 * machine without a GPU — the CI machine, with or without CUDA in the
 * build — `auto` must fall back to the CPU and `cuda` must fail with a
 * message saying why; on a GPU machine `auto` and `cuda` must pick it.
 * Option parsing is checked everywhere. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "device/device.h"

static void test_parse(void **state) {
    (void)state;
    vf_device_kind k;
    vf_device_precision p;
    vf_error err = {{0}};
    assert_int_equal(vf_device_kind_parse("cuda", "--device", &k, &err), 0);
    assert_int_equal(k, VF_DEVICE_CUDA);
    assert_int_equal(vf_device_kind_parse("cpu", "--device", &k, &err), 0);
    assert_int_equal(k, VF_DEVICE_CPU);
    assert_int_equal(vf_device_kind_parse("auto", "--device", &k, &err), 0);
    assert_int_equal(k, VF_DEVICE_AUTO);
    assert_int_equal(vf_device_kind_parse("gpu", "--device", &k, &err), -1);
    assert_non_null(strstr(err.msg, "--device: 'gpu' is not a device"));
    assert_int_equal(vf_device_kind_parse(NULL, "device (image-party.ini)", &k, &err), -1);
    assert_non_null(strstr(err.msg, "image-party.ini"));
    assert_int_equal(vf_device_precision_parse("bf16", "--precision", &p, &err), 0);
    assert_int_equal(p, VF_PREC_BF16);
    assert_int_equal(vf_device_precision_parse("fp16", "--precision", &p, &err), -1);
    assert_non_null(strstr(err.msg, "'fp16' is not a precision"));
}

static void test_cpu_always(void **state) {
    (void)state;
    vf_device d;
    vf_error err = {{0}};
    assert_int_equal(vf_device_open(&d, VF_DEVICE_CPU, VF_PREC_FP32, &err), 0);
    assert_int_equal(d.kind, VF_DEVICE_CPU);
    assert_string_equal(d.description, "cpu");
    vf_device_close(&d);
}

static void test_auto_and_cuda(void **state) {
    (void)state;
    vf_device d;
    vf_error err = {{0}};
    const int gpus = vf_device_cuda_count();
    assert_true(gpus >= 0);
    assert_int_equal(vf_device_open(&d, VF_DEVICE_AUTO, VF_PREC_BF16, &err), 0);
    assert_int_equal(d.kind, gpus > 0 ? VF_DEVICE_CUDA : VF_DEVICE_CPU);
    vf_device_close(&d);
    int rc = vf_device_open(&d, VF_DEVICE_CUDA, VF_PREC_FP32, &err);
    if (gpus > 0) {
        assert_int_equal(rc, 0);
        assert_int_equal(d.kind, VF_DEVICE_CUDA);
        assert_non_null(d.cuda_ctx);
        vf_device_close(&d);
    } else {
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err.msg, "--device cuda: "));
        print_message("no GPU here: --device cuda says \"%s\"\n", err.msg);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse), cmocka_unit_test(test_cpu_always),
                                       cmocka_unit_test(test_auto_and_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
