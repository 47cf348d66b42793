/* fuzz_png: vf_image_decode (libpng behind our setjmp/limits/conversion to
 * RGB) on PNG-looking bytes: the input gets the PNG signature prepended, so
 * the fuzzer spends its time on the chunks.  A header declaring more pixels than
 * the decoder's limit must be refused before anything that size is allocated
 * (libFuzzer's -malloc_limit_mb, set by run.sh, turns a bigger malloc into a
 * failure). */
#include "image/image_io.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t *buf = malloc(size + 8);
    if (!buf) return 0;
    memcpy(buf, sig, 8);
    memcpy(buf + 8, data, size);
    vf_image img = {0};
    vf_error err;
    if (vf_image_decode(buf, size + 8, "fuzz.png", &img, &err) == 0) {
        if (img.w <= 0 || img.h <= 0 || !img.rgb) abort();
        volatile unsigned char last = img.rgb[(size_t)img.w * img.h * 3 - 1];   /* the whole buffer is there */
        (void)last;
    }
    vf_image_free(&img);
    free(buf);
    return 0;
}
