/* preprocess: CLIPImageProcessor's resize / center crop / rescale / normalise
 * on 8-bit RGB, bit-exact with transformers + Pillow (see preprocess.h).
 *
 * The resampler reproduces Pillow's Resample.c for 8-bit images: per output
 * column a window of input pixels weighted by the bicubic kernel stretched by
 * the downscale factor (antialiasing), weights normalised in double, then
 * rounded to 22-bit fixed point; each pass rounds and clips to uint8.  Only the
 * output pixels that survive the center crop are computed: each output pixel
 * depends on its own weights alone, so this equals resize-then-crop. */
#include "image/preprocess.h"
#include "util/fileio.h"
#include "util/sha256.h"

#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PRECISION_BITS (32 - 8 - 2)

static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

void vf_preprocess_defaults(vf_preprocess_cfg *cfg, int image_size) {
    memset(cfg, 0, sizeof *cfg);
    cfg->shortest_edge = image_size;
    cfg->crop_h = cfg->crop_w = image_size;
    cfg->do_resize = cfg->do_center_crop = cfg->do_normalize = 1;
    cfg->rescale = (float)(1.0 / 255.0);
    memcpy(cfg->mean, clip_mean, sizeof clip_mean);
    memcpy(cfg->std, clip_std, sizeof clip_std);
}

/* ---- config ----------------------------------------------------------------- */

static int json_bool(const cJSON *o, const char *key, int *out, const char *name, vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return vf_fail(err, "%s: \"%s\" must be true or false", name, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int json_positive_int(const cJSON *v, const char *key, int *out, const char *name, vf_error *err) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 || v->valuedouble > 100000)
        return vf_fail(err, "%s: \"%s\" must be a positive integer", name, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int json_triplet(const cJSON *o, const char *key, float out[3], int positive, const char *name, vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsNumber(v)) { /* a single number applies to every channel, as in transformers */
        out[0] = out[1] = out[2] = (float)v->valuedouble;
    } else {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3)
            return vf_fail(err, "%s: \"%s\" must be a list of 3 numbers", name, key);
        for (int c = 0; c < 3; c++) {
            const cJSON *e = cJSON_GetArrayItem(v, c);
            if (!cJSON_IsNumber(e)) return vf_fail(err, "%s: \"%s\"[%d] is not a number", name, key, c);
            out[c] = (float)e->valuedouble;
        }
    }
    for (int c = 0; c < 3; c++)
        if (!isfinite(out[c]) || (positive && !(out[c] > 0)))
            return vf_fail(err, "%s: \"%s\"[%d] = %g is not %s", name, key, c, out[c],
                           positive ? "a positive number" : "finite");
    return 0;
}

/* "size": 224 | {"shortest_edge": 224} (CLIP's resize needs shortest_edge). */
static int parse_size(const cJSON *o, vf_preprocess_cfg *cfg, const char *name, vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "size");
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsNumber(v)) return json_positive_int(v, "size", &cfg->shortest_edge, name, err);
    if (!cJSON_IsObject(v)) return vf_fail(err, "%s: \"size\" must be a number or an object", name);
    const cJSON *se = cJSON_GetObjectItemCaseSensitive(v, "shortest_edge");
    if (!se)
        return vf_fail(err, "%s: \"size\" has no \"shortest_edge\" (CLIP resizes the shortest edge)", name);
    return json_positive_int(se, "size.shortest_edge", &cfg->shortest_edge, name, err);
}

/* "crop_size": 224 | {"height": h, "width": w} */
static int parse_crop(const cJSON *o, vf_preprocess_cfg *cfg, const char *name, vf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "crop_size");
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsNumber(v)) {
        if (json_positive_int(v, "crop_size", &cfg->crop_h, name, err)) return -1;
        cfg->crop_w = cfg->crop_h;
        return 0;
    }
    if (!cJSON_IsObject(v)) return vf_fail(err, "%s: \"crop_size\" must be a number or an object", name);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(v, "height"), *w = cJSON_GetObjectItemCaseSensitive(v, "width");
    if (!h || !w) return vf_fail(err, "%s: \"crop_size\" needs \"height\" and \"width\"", name);
    if (json_positive_int(h, "crop_size.height", &cfg->crop_h, name, err)) return -1;
    return json_positive_int(w, "crop_size.width", &cfg->crop_w, name, err);
}

int vf_preprocess_config_parse(const char *json, const char *name, vf_preprocess_cfg *cfg, vf_error *err) {
    vf_preprocess_defaults(cfg, 224);
    cJSON *root = cJSON_Parse(json);
    if (!root) return vf_fail(err, "%s: malformed JSON", name);
    int rc = -1;
    const cJSON *o = root;
    if (!cJSON_IsObject(root)) {
        vf_fail(err, "%s: top level is not a JSON object", name);
        goto done;
    }
    const cJSON *nested = cJSON_GetObjectItemCaseSensitive(root, "image_processor");
    if (nested) {
        if (!cJSON_IsObject(nested)) {
            vf_fail(err, "%s: \"image_processor\" is not an object", name);
            goto done;
        }
        o = nested;
    }
    int do_rescale = 1;
    double rescale = 1.0 / 255.0;
    if (json_bool(o, "do_resize", &cfg->do_resize, name, err) ||
        json_bool(o, "do_center_crop", &cfg->do_center_crop, name, err) ||
        json_bool(o, "do_normalize", &cfg->do_normalize, name, err) ||
        json_bool(o, "do_rescale", &do_rescale, name, err) || parse_size(o, cfg, name, err) ||
        parse_crop(o, cfg, name, err) || json_triplet(o, "image_mean", cfg->mean, 0, name, err) ||
        json_triplet(o, "image_std", cfg->std, 1, name, err))
        goto done;
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(o, "rescale_factor");
    if (rf && !cJSON_IsNull(rf)) {
        if (!cJSON_IsNumber(rf) || !isfinite(rf->valuedouble) || rf->valuedouble <= 0) {
            vf_fail(err, "%s: \"rescale_factor\" must be a positive number", name);
            goto done;
        }
        rescale = rf->valuedouble;
    }
    cfg->rescale = do_rescale ? (float)rescale : 1.0f;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "resample");
    if (rs && !cJSON_IsNull(rs) && !(cJSON_IsNumber(rs) && rs->valuedouble == 3)) {
        vf_fail(err, "%s: \"resample\" must be 3 (BICUBIC); other filters are not implemented", name);
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

/* ---- Pillow's resampler ----------------------------------------------------- */

static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Weights of output positions [out0, out0 + n) of an in_size -> out_size
 * resize: bounds[2i] = first input index, bounds[2i+1] = count, and ksize
 * fixed-point weights per output at kk[i * ksize] (Pillow's precompute_coeffs
 * followed by normalize_coeffs_8bpc). */
typedef struct resample_coeffs {
    int ksize;
    int *bounds;
    int32_t *kk;
} resample_coeffs;

static int precompute_coeffs(int in_size, int out_size, int out0, int n, resample_coeffs *rc) {
    const double filter_support = 2.0;
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *w = malloc(sizeof(double) * ksize);
    rc->ksize = ksize;
    rc->bounds = malloc(sizeof(int) * 2 * n);
    rc->kk = calloc((size_t)n * ksize, sizeof(int32_t));
    if (!w || !rc->bounds || !rc->kk) {
        free(w);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int xx = out0 + i;
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = bicubic_filter((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        for (int x = 0; x < xmax; x++) {
            double k = ww != 0.0 ? w[x] / ww : w[x];
            rc->kk[(size_t)i * ksize + x] = (int32_t)(k < 0 ? -0.5 + k * (1 << PRECISION_BITS)
                                                           : 0.5 + k * (1 << PRECISION_BITS));
        }
        rc->bounds[2 * i] = xmin;
        rc->bounds[2 * i + 1] = xmax;
    }
    free(w);
    return 0;
}

static void free_coeffs(resample_coeffs *rc) {
    free(rc->bounds);
    free(rc->kk);
}

static inline unsigned char clip8(int32_t v) {
    v >>= PRECISION_BITS; /* arithmetic shift: floor, as Pillow's lookup table */
    return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* (rows, in_w, 3) -> (rows, n, 3) with horizontal coefficients. */
static void resample_horizontal(const unsigned char *in, int in_w, int rows, const resample_coeffs *c, int n,
                                unsigned char *out) {
    for (int y = 0; y < rows; y++) {
        const unsigned char *src = in + (size_t)y * in_w * 3;
        unsigned char *dst = out + (size_t)y * n * 3;
        for (int i = 0; i < n; i++) {
            int xmin = c->bounds[2 * i], xcount = c->bounds[2 * i + 1];
            const int32_t *k = c->kk + (size_t)i * c->ksize;
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xcount; x++) {
                const unsigned char *p = src + (size_t)(xmin + x) * 3;
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            dst[3 * i] = clip8(s0);
            dst[3 * i + 1] = clip8(s1);
            dst[3 * i + 2] = clip8(s2);
        }
    }
}

/* (in_rows, w, 3) -> (n, w, 3) with vertical coefficients whose bounds are
 * relative to row 0 of in. */
static void resample_vertical(const unsigned char *in, int w, const resample_coeffs *c, int row0, int n,
                              unsigned char *out) {
    for (int i = 0; i < n; i++) {
        int ymin = c->bounds[2 * i] - row0, ycount = c->bounds[2 * i + 1];
        const int32_t *k = c->kk + (size_t)i * c->ksize;
        unsigned char *dst = out + (size_t)i * w * 3;
        for (int x = 0; x < w * 3; x++) {
            int32_t s = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ycount; y++) s += in[(size_t)(ymin + y) * w * 3 + x] * k[y];
            dst[x] = clip8(s);
        }
    }
}

/* Resizes img to (out_h, out_w) and returns only the window rows [y0, y0+nh),
 * columns [x0, x0+nw) of the result in out (nh, nw, 3). */
static int resize_window(const vf_image *img, int out_w, int out_h, int x0, int nw, int y0, int nh,
                         unsigned char *out) {
    int need_h = out_w != img->w, need_v = out_h != img->h;
    resample_coeffs ch = {0}, cv = {0};
    unsigned char *tmp = NULL;
    int rc = -1;
    if ((need_h && precompute_coeffs(img->w, out_w, x0, nw, &ch)) ||
        (need_v && precompute_coeffs(img->h, out_h, y0, nh, &cv)))
        goto done;
    /* input rows the vertical pass reads (all window rows when there is none) */
    int r0 = need_v ? cv.bounds[0] : y0;
    int r1 = need_v ? cv.bounds[2 * (nh - 1)] + cv.bounds[2 * (nh - 1) + 1] : y0 + nh;
    tmp = malloc((size_t)(r1 - r0) * nw * 3);
    if (!tmp) goto done;
    if (need_h) {
        resample_horizontal(img->rgb + (size_t)r0 * img->w * 3, img->w, r1 - r0, &ch, nw, tmp);
    } else {
        for (int y = r0; y < r1; y++)
            memcpy(tmp + (size_t)(y - r0) * nw * 3, img->rgb + ((size_t)y * img->w + x0) * 3, (size_t)nw * 3);
    }
    if (need_v) resample_vertical(tmp, nw, &cv, r0, nh, out);
    else memcpy(out, tmp, (size_t)nh * nw * 3);
    rc = 0;
done:
    free(tmp);
    free_coeffs(&ch);
    free_coeffs(&cv);
    return rc;
}

/* ---- the pipeline ------------------------------------------------------------ */

/* Floor division, as Python's //. */
static int floordiv2(int a) { return a >= 0 ? a / 2 : -((-a + 1) / 2); }
/* issue 5: torchvision's center_crop offset, int(round(a / 2.0)) with Python's
 * half-to-even rounding; an image smaller than the crop is padded by
 * (crop - size) // 2 on the top/left. */
static int torchvision_offset(int a) { return a >= 0 ? (a % 4 == 3 ? a / 2 + 1 : a / 2) : -((-a) / 2); }

int vf_preprocess(const vf_preprocess_cfg *cfg, const vf_image *img, float *out, vf_error *err) {
    if (!img || !img->rgb || img->w <= 0 || img->h <= 0) return vf_fail(err, "preprocess: empty image");
    if (cfg->crop_h <= 0 || cfg->crop_w <= 0 || cfg->shortest_edge <= 0)
        return vf_fail(err, "preprocess: bad sizes (shortest_edge %d, crop %dx%d)", cfg->shortest_edge, cfg->crop_w,
                       cfg->crop_h);
    /* get_resize_output_image_size(default_to_square=False) */
    int rw = img->w, rh = img->h;
    if (cfg->do_resize) {
        int shorter = img->w <= img->h ? img->w : img->h, longer = img->w <= img->h ? img->h : img->w;
        if (shorter != cfg->shortest_edge) {
            int new_long = (int)((double)((long long)cfg->shortest_edge * longer) / shorter);
            if (img->w <= img->h) rw = cfg->shortest_edge, rh = new_long;
            else rw = new_long, rh = cfg->shortest_edge;
        }
        if (rw <= 0 || rh <= 0) return vf_fail(err, "preprocess: resize of a %dx%d image gives an empty image", img->w, img->h);
    }
    if (!cfg->do_center_crop && (rh != cfg->crop_h || rw != cfg->crop_w))
        return vf_fail(err, "preprocess: without center crop the %dx%d resized image must already be %dx%d", rw, rh,
                       cfg->crop_w, cfg->crop_h);
    /* center_crop: window [top, top + crop_h) of the resized image, zeros outside */
    int oh = cfg->do_center_crop ? cfg->crop_h : rh, ow = cfg->do_center_crop ? cfg->crop_w : rw;
    int top = cfg->do_center_crop ? floordiv2(rh - oh) : 0, left = cfg->do_center_crop ? floordiv2(rw - ow) : 0;
    if (cfg->do_center_crop && cfg->torchvision_crop) top = torchvision_offset(rh - oh), left = torchvision_offset(rw - ow); /* issue 5 */
    int y0 = top < 0 ? 0 : top, y1 = top + oh > rh ? rh : top + oh;
    int x0 = left < 0 ? 0 : left, x1 = left + ow > rw ? rw : left + ow;
    unsigned char *win = malloc((size_t)(y1 - y0) * (x1 - x0) * 3);
    if (!win) return vf_fail(err, "preprocess: out of memory");
    if (resize_window(img, rw, rh, x0, x1 - x0, y0, y1 - y0, win)) {
        free(win);
        return vf_fail(err, "preprocess: out of memory");
    }
    /* rescale: float64 product rounded to float32; normalize in float32.  The
     * config's factor is a Python float; 1/255 is recovered exactly from its
     * float32 copy so the products round as numpy's do. */
    double rescale = cfg->rescale == (float)(1.0 / 255.0) ? 1.0 / 255.0 : (double)cfg->rescale;
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = (float)((double)v * rescale);
            lut[c][v] = cfg->do_normalize ? (x - cfg->mean[c]) / cfg->std[c] : x;
        }
    int ww = x1 - x0;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < oh; y++) {
            float *dst = out + ((size_t)c * oh + y) * ow;
            int sy = y + top;
            for (int x = 0; x < ow; x++) {
                int sx = x + left;
                int inside = sy >= y0 && sy < y1 && sx >= x0 && sx < x1;
                dst[x] = lut[c][inside ? win[((size_t)(sy - y0) * ww + (sx - x0)) * 3 + c] : 0];
            }
        }
    free(win);
    return 0;
}

void vf_preprocess_fingerprint(const vf_preprocess_cfg *c, char hex[65]) {
    char text[512];
    int n = snprintf(text, sizeof text, "vflclip-preprocess-v2 edge=%d crop=%dx%d resize=%d center=%d normalize=%d "
                     "rescale=%a mean=%a,%a,%a std=%a,%a,%a tvcrop=%d", c->shortest_edge, c->crop_h, c->crop_w,
                     c->do_resize, c->do_center_crop, c->do_normalize, c->rescale, c->mean[0], c->mean[1], c->mean[2],
                     c->std[0], c->std[1], c->std[2], c->torchvision_crop);
    unsigned char d[32];
    vf_sha256(text, (size_t)n, d);
    vf_sha256_to_hex(d, hex);
}
