/* cmd_preprocess: `vflclip preprocess` — decodes images and preprocesses them
 * as the image party does before the vision tower (CLIPImageProcessor: resize
 * shortest edge, center crop, 1/255, mean/std), writing float32 (N, 3, H, W)
 * to a .npy.  For debugging and for the tests that compare with transformers;
 * --decoded writes the decoded 8-bit RGB of a single image as float32
 * (H, W, 3) so decoding can be checked against PIL on its own. */
#include "clip/model_preprocess.h"
#include "cli/commands.h"
#include "formats/npy.h"
#include "image/image_io.h"
#include "image/preprocess.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *o) {
    fprintf(o, "usage: vflclip preprocess (--model DIR | --image-size N) --image FILE [--image FILE...] --out OUT.npy\n"
               "                          [--decoded RGB.npy] [--max-pixels N]\n"
               "  --model DIR       reads DIR/preprocessor_config.json (or transformers 5.x processor_config.json)\n"
               "  --image-size N    CLIP defaults for an N x N model instead\n"
               "  --out OUT.npy     float32 (N, 3, crop_h, crop_w)\n"
               "  --decoded F.npy   with one --image: its decoded RGB as float32 (H, W, 3)\n"
               "  --max-pixels N    refuse an image whose header declares more than N pixels (width x height)\n"
               "                    before decoding it (default %llu)\n", (unsigned long long)VF_IMAGE_DEFAULT_MAX_PIXELS);
}

int vf_cmd_preprocess(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *decoded = NULL;
    int image_size = 0, n_images = 0;
    const char **images = calloc(argc, sizeof(char *));
    if (!images) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); free(images); return 0; }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip preprocess: %s needs a value (or is unknown)\n", a); usage(stderr); free(images); return 2; }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--image")) images[n_images++] = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--decoded")) decoded = v;
        else if (!strcmp(a, "--image-size")) image_size = atoi(v);
        else if (!strcmp(a, "--max-pixels")) {
            uint64_t max;
            vf_error perr;
            if (vf_image_max_pixels_parse(v, a, &max, &perr)) {
                fprintf(stderr, "vflclip preprocess: %s\n", perr.msg);
                free(images);
                return 2;
            }
            vf_image_set_max_pixels(max);
        }
        else { fprintf(stderr, "vflclip preprocess: unknown option %s\n", a); usage(stderr); free(images); return 2; }
    }
    if (!out || !n_images || (!model == !(image_size > 0)) || (decoded && n_images != 1)) {
        usage(stderr);
        free(images);
        return 2;
    }
    vf_error err = {{0}};
    vf_preprocess_cfg cfg;
    if (model) {
        if (vf_model_preprocess_config(model, &cfg, &err)) goto fail;
    } else {
        vf_preprocess_defaults(&cfg, image_size);
    }
    size_t per = (size_t)3 * cfg.crop_h * cfg.crop_w;
    float *x = malloc(sizeof(float) * per * n_images);
    if (!x) { vf_fail(&err, "out of memory"); goto fail; }
    for (int i = 0; i < n_images; i++) {
        vf_image img;
        if (vf_image_load(images[i], &img, &err)) { free(x); goto fail; }
        if (decoded) {
            size_t n = (size_t)img.w * img.h * 3;
            float *rgb = malloc(sizeof(float) * n);
            int64_t shape[3] = {img.h, img.w, 3};
            int rc = !rgb ? vf_fail(&err, "out of memory") : 0;
            for (size_t k = 0; rgb && k < n; k++) rgb[k] = img.rgb[k];
            if (!rc) rc = vf_npy_write_f32(decoded, rgb, 3, shape, &err);
            free(rgb);
            if (rc) { vf_image_free(&img); free(x); goto fail; }
        }
        int rc = vf_preprocess(&cfg, &img, x + per * i, &err);
        if (rc) vf_error_prefix(&err, "%s", images[i]);
        vf_image_free(&img);
        if (rc) { free(x); goto fail; }
    }
    int64_t shape[4] = {n_images, 3, cfg.crop_h, cfg.crop_w};
    int rc = vf_npy_write_f32(out, x, 4, shape, &err);
    free(x);
    if (rc) goto fail;
    free(images);
    return 0;
fail:
    fprintf(stderr, "vflclip preprocess: %s\n", err.msg);
    free(images);
    return 1;
}
