/* image_io: PNG and JPEG decoding to 8-bit RGB (see image_io.h for the exact
 * PIL-compatible conversions).  Both decoders work from memory; files are read
 * whole first.  libpng and libjpeg report errors through callbacks that
 * longjmp back here, so a corrupt file never exits the process.  This file
 * also owns the process-wide pixel limit checked from each header. */
#include "image/image_io.h"
#include "util/fileio.h"

#include <stdio.h> /* before jpeglib.h, which needs FILE */
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <errno.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void vf_image_free(vf_image *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

static int check_size(const char *name, long w, long h, vf_error *err) {
    if (w <= 0 || h <= 0 || w > VF_IMAGE_MAX_SIDE || h > VF_IMAGE_MAX_SIDE)
        return vf_fail(err, "%s: image size %ldx%ld is outside 1..%d", name, w, h, VF_IMAGE_MAX_SIDE);
    return 0;
}

/* ---- the pixel limit ------------------------------------------------------- */

static atomic_ullong g_max_pixels = VF_IMAGE_DEFAULT_MAX_PIXELS;

void vf_image_set_max_pixels(uint64_t max_pixels) {
    atomic_store_explicit(&g_max_pixels, max_pixels ? max_pixels : VF_IMAGE_DEFAULT_MAX_PIXELS, memory_order_relaxed);
}

uint64_t vf_image_max_pixels(void) { return atomic_load_explicit(&g_max_pixels, memory_order_relaxed); }

int vf_image_max_pixels_parse(const char *text, const char *what, uint64_t *out, vf_error *err) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (!*text || *end || errno || v == 0 || strchr(text, '-'))
        return vf_fail(err, "%s %s: expected a positive whole number of pixels (width x height)", what, text);
    *out = v;
    return 0;
}

/* What a decoder checks from the header, before allocating: the sides, then
 * width x height (in 64 bits: sides are below 2^31, so it cannot wrap). */
static int check_header_size(const char *name, long w, long h, vf_error *err) {
    if (check_size(name, w, h, err)) return -1;
    uint64_t n = (uint64_t)w * (uint64_t)h, max = vf_image_max_pixels();
    if (n > max)
        return vf_fail(err, "%s: image is %ldx%ld = %llu pixels, over the limit of %llu (max_pixels)", name, w, h,
                       (unsigned long long)n, (unsigned long long)max);
    return 0;
}

int vf_image_from_rgb(const unsigned char *rgb, int w, int h, vf_image *img, vf_error *err) {
    memset(img, 0, sizeof *img);
    if (check_size("rgb array", w, h, err)) return -1;
    size_t n = (size_t)w * h * 3;
    img->rgb = malloc(n);
    if (!img->rgb) return vf_fail(err, "rgb array: out of memory for %dx%d image", w, h);
    memcpy(img->rgb, rgb, n);
    img->w = w;
    img->h = h;
    return 0;
}

/* ---- PNG ------------------------------------------------------------------ */

typedef struct png_source {
    const unsigned char *data;
    size_t len, pos;
    const char *name;
    char msg[512], warning[256]; /* libpng explains some errors in a warning just before */
} png_source;

static void png_read_mem(png_structp png, png_bytep out, size_t n) {
    png_source *src = png_get_io_ptr(png);
    if (n > src->len - src->pos) png_error(png, "file is truncated");
    memcpy(out, src->data + src->pos, n);
    src->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    png_source *src = png_get_error_ptr(png);
    snprintf(src->msg, sizeof src->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    png_source *src = png_get_error_ptr(png);
    snprintf(src->warning, sizeof src->warning, "%s", msg);
}

static int decode_png(const unsigned char *data, size_t len, const char *name, vf_image *img, vf_error *err) {
    png_source src = {data, len, 0, name, "unknown libpng error", ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    if (!png) return vf_fail(err, "%s: cannot create PNG decoder", name);
    png_infop info = png_create_info_struct(png);
    /* volatile: modified between setjmp and a possible longjmp */
    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return vf_fail(err, "%s: cannot create PNG decoder", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        free(pixels);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return vf_fail(err, "%s: corrupt PNG: %s%s%s%s", name, src.msg, src.warning[0] ? " (" : "", src.warning,
                       src.warning[0] ? ")" : "");
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_set_user_limits(png, VF_IMAGE_MAX_SIDE, VF_IMAGE_MAX_SIDE);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (check_header_size(name, (long)w, (long)h, err)) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    /* PIL unpacks 16-bit samples by keeping the high byte ("RGB;16B"). */
    if (depth == 16) png_set_strip_16(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    /* convert("RGB") drops alpha without compositing; palette expansion also
     * turns tRNS into alpha, which goes the same way. */
    if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        png_error(png, "unexpected row layout after conversion to 8-bit RGB");
    pixels = malloc((size_t)w * h * 3);
    rows = malloc(sizeof(png_bytep) * h);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    img->w = (int)w;
    img->h = (int)h;
    img->rgb = pixels;
    return 0;
}

/* ---- JPEG ----------------------------------------------------------------- */

typedef struct jpeg_error_jump {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_error_jump;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_error_jump *e = (jpeg_error_jump *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* libjpeg only warns on a truncated stream and pads it with grey; PIL refuses
 * it ("image file is truncated"), so that one warning is an error here.  Other
 * warnings (extraneous bytes before a marker...) are ignored, as PIL does. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

/* PIL's cmyk2rgb: r = (255 - k) - c * (255 - k) / 255, rounded as MULDIV255. */
static unsigned char cmyk_channel(int c, int k) {
    int nk = 255 - k, t = c * nk + 128;
    int v = nk - (((t >> 8) + t) >> 8);
    return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static int decode_jpeg(const unsigned char *data, size_t len, const char *name, vf_image *img, vf_error *err) {
    struct jpeg_decompress_struct cinfo;
    jpeg_error_jump jerr;
    unsigned char *volatile pixels = NULL;
    unsigned char *volatile row = NULL;
    cinfo.err = jpeg_std_error(&jerr.mgr);
    jerr.mgr.error_exit = jpeg_on_error;
    jerr.mgr.emit_message = jpeg_on_message;
    if (setjmp(jerr.jump)) {
        free(pixels);
        free(row);
        jpeg_destroy_decompress(&cinfo);
        return vf_fail(err, "%s: corrupt JPEG: %s", name, jerr.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if (check_header_size(name, (long)cinfo.image_width, (long)cinfo.image_height, err)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height, nc = cinfo.output_components;
    if (nc != (cmyk ? 4 : 3)) ERREXIT(&cinfo, JERR_CONVERSION_NOTIMPL);
    pixels = malloc((size_t)w * h * 3);
    row = malloc((size_t)w * nc);
    if (!pixels || !row) ERREXIT1(&cinfo, JERR_OUT_OF_MEMORY, 0);
    while (cinfo.output_scanline < cinfo.output_height) {
        int y = (int)cinfo.output_scanline;
        JSAMPROW rp = row;
        jpeg_read_scanlines(&cinfo, &rp, 1);
        unsigned char *dst = pixels + (size_t)y * w * 3;
        if (!cmyk) {
            memcpy(dst, row, (size_t)w * 3);
            continue;
        }
        /* PIL reads every 4-component JPEG as Adobe-inverted ("CMYK;I"). */
        for (int x = 0; x < w; x++) {
            int k = 255 - row[4 * x + 3];
            for (int c = 0; c < 3; c++) dst[3 * x + c] = cmyk_channel(255 - row[4 * x + c], k);
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    img->w = w;
    img->h = h;
    img->rgb = pixels;
    return 0;
}

int vf_image_decode(const void *data, size_t len, const char *name, vf_image *img, vf_error *err) {
    static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const unsigned char *p = data;
    memset(img, 0, sizeof *img);
    if (len == 0) return vf_fail(err, "%s: empty file, not an image", name);
    if (len >= 8 && memcmp(p, png_magic, 8) == 0) return decode_png(p, len, name, img, err);
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return decode_jpeg(p, len, name, img, err);
    return vf_fail(err, "%s: not a PNG or JPEG file (first bytes %02x %02x %02x %02x)", name, p[0],
                   len > 1 ? p[1] : 0, len > 2 ? p[2] : 0, len > 3 ? p[3] : 0);
}

int vf_image_load(const char *path, vf_image *img, vf_error *err) {
    char *data;
    size_t len;
    memset(img, 0, sizeof *img);
    if (vf_read_file(path, &data, &len, err)) return -1;
    int rc = vf_image_decode(data, len, path, img, err);
    free(data);
    return rc;
}
