/* test_image_io: the image decoders on damaged input.  Valid PNG and JPEG
 * files are encoded here with libpng / libjpeg themselves, then truncated,
 * CRC-corrupted, replaced by garbage or emptied; every case must return -1
 * with a message naming the file (or the in-memory name), never crash or
 * exit.  Also: a lossless PNG round trip, preprocess argument errors, and
 * the pixel limit (huge headers refused before any allocation). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <math.h>
#include <stdio.h> /* before jpeglib.h */
#include <jpeglib.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
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

/* ---- the pixel limit -------------------------------------------------------- */

/* Sets a PNG's IHDR width and height and fixes up its CRC, so that the size,
 * not the CRC check, is what the decoder meets. */
static void png_set_size(mem_buf *b, uint32_t w, uint32_t h) {
    unsigned char *ihdr = b->data + 8;   /* length, "IHDR", width, height, ... */
    assert_memory_equal(ihdr + 4, "IHDR", 4);
    for (int i = 0; i < 4; i++) ihdr[8 + i] = (unsigned char)(w >> (24 - 8 * i)), ihdr[12 + i] = (unsigned char)(h >> (24 - 8 * i));
    uLong crc = crc32(0L, ihdr + 4, 17);
    for (int i = 0; i < 4; i++) ihdr[21 + i] = (unsigned char)(crc >> (24 - 8 * i));
}

/* Sets the height and width of a baseline JPEG's SOF0 frame header. */
static void jpeg_set_size(mem_buf *b, unsigned w, unsigned h) {
    size_t i = 2;   /* after SOI: walk the marker segments up to SOF0 */
    while (i + 9 < b->len && !(b->data[i] == 0xFF && b->data[i + 1] == 0xC0))
        i += 2 + ((size_t)b->data[i + 2] << 8 | b->data[i + 3]);
    assert_true(i + 9 < b->len);
    b->data[i + 5] = (unsigned char)(h >> 8), b->data[i + 6] = (unsigned char)h;
    b->data[i + 7] = (unsigned char)(w >> 8), b->data[i + 8] = (unsigned char)w;
}

/* Decodes b in a child process whose address space is capped at its current
 * size plus 256 MB, so that allocating the 1.2 GB a 20000x20000 header asks
 * for cannot succeed: the child reports whether the decode was refused with a
 * message containing `needle` (and never got as far as allocating). */
static int refused_within_256mb(const mem_buf *b, const char *needle) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (!f || fscanf(f, "%lu", &pages) != 1) _exit(3);
        fclose(f);
        rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)256 << 20);
        struct rlimit rl = {cap, cap};
        if (setrlimit(RLIMIT_AS, &rl)) _exit(3);
        vf_image img;
        vf_error err = {{0}};
        int rc = vf_image_decode(b->data, b->len, "big.img", &img, &err);
        fprintf(stderr, "    child: %s\n", rc ? err.msg : "decoded");
        _exit(rc == -1 && strstr(err.msg, needle) ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* A 20000x20000 header (1.2 GB of RGB) on a few hundred bytes of data is
 * refused from the header by the default limit, for PNG and for JPEG. */
static void test_pixel_limit_refuses_huge_headers(void **state) {
    (void)state;
    assert_int_equal(vf_image_max_pixels(), VF_IMAGE_DEFAULT_MAX_PIXELS);
    const char *expect = "big.img: image is 20000x20000 = 400000000 pixels, over the limit of 50000000 (max_pixels)";
    mem_buf png = encode_png(W, H), jpg = encode_jpeg(W, H);
    png_set_size(&png, 20000, 20000);
    jpeg_set_size(&jpg, 20000, 20000);
    assert_true(refused_within_256mb(&png, expect));
    assert_true(refused_within_256mb(&jpg, expect));
    write_file(png.data, png.len);   /* and through vf_image_load, naming the file */
    expect_load_error("= 400000000 pixels, over the limit of 50000000 (max_pixels)");
    free(png.data);
    free(jpg.data);
}

/* The limit is inclusive and settable: W*H pixels decode under a limit of W*H
 * and are refused under W*H - 1; 0 restores the default. */
static void test_pixel_limit_is_settable(void **state) {
    (void)state;
    mem_buf png = encode_png(W, H), jpg = encode_jpeg(W, H);
    const mem_buf *bufs[2] = {&png, &jpg};
    for (int k = 0; k < 2; k++) {
        vf_image img;
        vf_error err = {{0}};
        vf_image_set_max_pixels(W * H);
        assert_int_equal(vf_image_decode(bufs[k]->data, bufs[k]->len, "small.img", &img, &err), 0);
        vf_image_free(&img);
        vf_image_set_max_pixels(W * H - 1);
        assert_int_equal(vf_image_decode(bufs[k]->data, bufs[k]->len, "small.img", &img, &err), -1);
        print_message("    %s\n", err.msg);
        assert_string_equal(err.msg, "small.img: image is 37x23 = 851 pixels, over the limit of 850 (max_pixels)");
        assert_null(img.rgb);
    }
    vf_image_set_max_pixels(0);
    assert_int_equal(vf_image_max_pixels(), VF_IMAGE_DEFAULT_MAX_PIXELS);
    uint64_t v = 0;
    vf_error err = {{0}};
    assert_int_equal(vf_image_max_pixels_parse("1000000", "--max-pixels", &v, &err), 0);
    assert_int_equal(v, 1000000);
    static const char *const bad[] = {"", "0", "-5", " -5", "12x", "1e6", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(vf_image_max_pixels_parse(bad[i], "--max-pixels", &v, &err), -1);
        assert_non_null(strstr(err.msg, "--max-pixels"));
    }
    free(png.data);
    free(jpg.data);
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


/* Every field of the preprocessing moves its one fingerprint (the embedding
 * cache's key once left torchvision_crop out, so an OpenCLIP-cropped cache
 * could be served to a Hugging Face crop). */
static void test_preprocess_fingerprint_covers_every_field(void **state) {
    vf_preprocess_cfg base;
    vf_preprocess_defaults(&base, 224);
    char ref[65], fp[65];
    vf_preprocess_fingerprint(&base, ref);
    assert_int_equal(strlen(ref), 64);
    vf_preprocess_cfg c[8];
    for (int i = 0; i < 8; i++) c[i] = base;
    c[0].torchvision_crop ^= 1;
    c[1].shortest_edge++;
    c[2].crop_w++;
    c[3].do_center_crop ^= 1;
    c[4].rescale = nextafterf(c[4].rescale, 1.0f);
    c[5].mean[2] = nextafterf(c[5].mean[2], 1.0f);
    c[6].std[0] = nextafterf(c[6].std[0], 1.0f);
    c[7].do_normalize ^= 1;
    for (int i = 0; i < 8; i++) {
        vf_preprocess_fingerprint(&c[i], fp);
        assert_string_not_equal(fp, ref);
    }
    vf_preprocess_fingerprint(&base, fp);
    assert_string_equal(fp, ref);
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
        cmocka_unit_test_setup_teardown(test_pixel_limit_refuses_huge_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pixel_limit_is_settable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_variant_names_the_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_rgb_and_preprocess_errors, setup, teardown),
        cmocka_unit_test(test_preprocess_fingerprint_covers_every_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
