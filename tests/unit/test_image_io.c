/* test_image_io: the image decoders on damaged input.  Valid PNG and JPEG
 * files are encoded here with libpng / libjpeg themselves, then truncated,
 * CRC-corrupted, replaced by garbage or emptied; every case must return -1
 * with a message naming the file (or the in-memory name), never crash or
 * exit.  Also: a lossless PNG round trip, preprocess argument errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h> /* before jpeglib.h */
#include <jpeglib.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "image/image_io.h"
#include "image/preprocess.h"

enum { W = 37, H = 23 };

typedef struct mem_buf {
    unsigned char *data;
    size_t len, cap;
} mem_buf;

static void mem_write(png_structp png, png_bytep data, size_t n) {
    mem_buf *b = png_get_io_ptr(png);
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}
static void mem_flush(png_structp png) { (void)png; }

static void pattern(unsigned char *rgb, int w, int h) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) rgb[(y * w + x) * 3 + c] = (unsigned char)(x * 7 + y * 13 + c * 80);
}

/* An 8-bit RGB PNG of the pattern, written by libpng. */
static mem_buf encode_png(int w, int h) {
    mem_buf b = {0};
    unsigned char *rgb = malloc((size_t)w * h * 3);
    pattern(rgb, w, h);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(png);
    assert_non_null(info);
    png_set_write_fn(png, &b, mem_write, mem_flush);
    png_set_IHDR(png, info, w, h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, rgb + (size_t)y * w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rgb);
    return b;
}

/* A baseline JPEG of the pattern, written by libjpeg. */
static mem_buf encode_jpeg(int w, int h) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    unsigned char *out = NULL;
    unsigned long out_len = 0;
    unsigned char *rgb = malloc((size_t)w * h * 3);
    pattern(rgb, w, h);
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, &out_len);
    c.image_width = w;
    c.image_height = h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = rgb + (size_t)c.next_scanline * w * 3;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(rgb);
    mem_buf b = {out, out_len, out_len};
    return b;
}

static char g_path[256];

static int setup(void **state) {
    (void)state;
    snprintf(g_path, sizeof g_path, "/tmp/vf_test_image_io_%d.img", (int)getpid());
    return 0;
}
static int teardown(void **state) {
    (void)state;
    unlink(g_path);
    return 0;
}

static void write_file(const void *data, size_t len) {
    FILE *f = fopen(g_path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Loading g_path fails with a message naming it and containing `what`. */
static void expect_load_error(const char *what) {
    vf_image img;
    vf_error err = {{0}};
    assert_int_equal(vf_image_load(g_path, &img, &err), -1);
    print_message("    %s\n", err.msg);
    assert_non_null(strstr(err.msg, g_path));
    if (what) assert_non_null(strstr(err.msg, what));
    assert_null(img.rgb);
}

static void test_png_round_trip_is_exact(void **state) {
    (void)state;
    mem_buf b = encode_png(W, H);
    vf_image img;
    vf_error err = {{0}};
    assert_int_equal(vf_image_decode(b.data, b.len, "mem.png", &img, &err), 0);
    assert_int_equal(img.w, W);
    assert_int_equal(img.h, H);
    unsigned char ref[W * H * 3];
    pattern(ref, W, H);
    assert_memory_equal(img.rgb, ref, sizeof ref);
    vf_image_free(&img);
    vf_image_free(&img); /* safe twice */
    free(b.data);
}

static void test_jpeg_decodes(void **state) {
    (void)state;
    mem_buf b = encode_jpeg(W, H);
    write_file(b.data, b.len);
    vf_image img;
    vf_error err = {{0}};
    assert_int_equal(vf_image_load(g_path, &img, &err), 0);
    assert_int_equal(img.w, W);
    assert_int_equal(img.h, H);
    vf_image_free(&img);
    free(b.data);
}

static void test_truncated_png(void **state) {
    (void)state;
    mem_buf b = encode_png(W, H);
    size_t cuts[] = {8, 20, 33, b.len / 2, b.len - 12, b.len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        write_file(b.data, cuts[i]);
        expect_load_error("PNG");
    }
    free(b.data);
}

static void test_truncated_jpeg(void **state) {
    (void)state;
    mem_buf b = encode_jpeg(W, H);
    size_t cuts[] = {3, 20, b.len / 3, b.len / 2, b.len - 2};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        write_file(b.data, cuts[i]);
        expect_load_error("JPEG");
    }
    free(b.data);
}

static void test_png_bad_crc(void **state) {
    (void)state;
    mem_buf b = encode_png(W, H);
    b.data[8 + 8 + 13 + 2] ^= 0x55; /* IHDR's CRC */
    write_file(b.data, b.len);
    expect_load_error("CRC");
    b.data[8 + 8 + 13 + 2] ^= 0x55;
    size_t idat = 8 + 25, idat_len = (size_t)b.data[idat] << 24 | b.data[idat + 1] << 16 | b.data[idat + 2] << 8 | b.data[idat + 3];
    assert_memory_equal(b.data + idat + 4, "IDAT", 4);
    b.data[idat + 8 + idat_len + 1] ^= 0x55; /* IDAT's CRC */
    write_file(b.data, b.len);
    expect_load_error("CRC");
    b.data[idat + 8 + idat_len + 1] ^= 0x55;
    b.data[idat + 8 + 3] ^= 0x55; /* a byte of the compressed data: zlib or the CRC check refuses it */
    write_file(b.data, b.len);
    expect_load_error("IDAT");
    free(b.data);
}

static void test_garbage_and_empty(void **state) {
    (void)state;
    unsigned char junk[300];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(i * 37 + 11);
    write_file(junk, sizeof junk);
    expect_load_error("not a PNG or JPEG");
    write_file(NULL, 0);
    expect_load_error("empty");
    /* right magic, garbage after it */
    memcpy(junk, "\x89PNG\r\n\x1a\n", 8);
    write_file(junk, sizeof junk);
    expect_load_error("PNG");
    junk[0] = 0xFF, junk[1] = 0xD8, junk[2] = 0xFF;
    write_file(junk, sizeof junk);
    expect_load_error("JPEG");
    vf_image img;
    vf_error err = {{0}};
    assert_int_equal(vf_image_load("/nonexistent/dir/x.png", &img, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/x.png"));
}

static void test_hostile_png_size(void **state) {
    (void)state;
    mem_buf b = encode_png(W, H);
    /* IHDR width = 100000: refused before any allocation (CRC fixed up so the
     * size check, not the CRC check, is what fails) */
    unsigned char *ihdr = b.data + 8;
    ihdr[8] = 0x00, ihdr[9] = 0x01, ihdr[10] = 0x86, ihdr[11] = 0xA0;
    uLong crc = crc32(0L, ihdr + 4, 17);
    ihdr[21] = (unsigned char)(crc >> 24), ihdr[22] = (unsigned char)(crc >> 16);
    ihdr[23] = (unsigned char)(crc >> 8), ihdr[24] = (unsigned char)crc;
    write_file(b.data, b.len);
    expect_load_error("width");
    free(b.data);
}

static void test_memory_variant_names_the_source(void **state) {
    (void)state;
    mem_buf b = encode_png(W, H);
    vf_image img;
    vf_error err = {{0}};
    assert_int_equal(vf_image_decode(b.data, b.len / 2, "dataset.npz[17]", &img, &err), -1);
    assert_non_null(strstr(err.msg, "dataset.npz[17]"));
    free(b.data);
}

static void test_from_rgb_and_preprocess_errors(void **state) {
    (void)state;
    unsigned char rgb[W * H * 3];
    pattern(rgb, W, H);
    vf_image img;
    vf_error err = {{0}};
    assert_int_equal(vf_image_from_rgb(rgb, W, H, &img, &err), 0);
    assert_memory_equal(img.rgb, rgb, sizeof rgb);
    vf_image bad;
    assert_int_equal(vf_image_from_rgb(rgb, 0, H, &bad, &err), -1);
    assert_null(bad.rgb);
    vf_image view = vf_image_wrap(rgb, W, H);
    vf_preprocess_cfg cfg;
    vf_preprocess_defaults(&cfg, 16);
    float out[3 * 16 * 16];
    assert_int_equal(vf_preprocess(&cfg, &view, out, &err), 0);
    vf_image empty = {0};
    assert_int_equal(vf_preprocess(&cfg, &empty, out, &err), -1);
    cfg.crop_h = 0;
    assert_int_equal(vf_preprocess(&cfg, &view, out, &err), -1);
    assert_int_equal(vf_preprocess_config_parse("{\"size\": -3}", "cfg.json", &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "cfg.json"));
    assert_int_equal(vf_preprocess_config_parse("[1]", "cfg.json", &cfg, &err), -1);
    assert_int_equal(vf_preprocess_config_parse("{\"image_mean\": [1, 2]}", "cfg.json", &cfg, &err), -1);
    vf_image_free(&img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_png_round_trip_is_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jpeg_decodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_png, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_jpeg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_png_bad_crc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_and_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_png_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_variant_names_the_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_rgb_and_preprocess_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
