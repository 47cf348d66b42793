/* cmd_embed: `vflclip embed`, projected CLIP embeddings (before L2
 * normalisation) of images or texts, written as float32 [N, D] .npy.  Images
 * are encoded on the device chosen with --device (device/device.h); the
 * default is the CPU, the fp32 reference, so that results do not depend on
 * whether the machine has a GPU unless asked to. */
#include "cli/commands.h"
#include "clip/checkpoint.h"
#include "clip/clip_model.h"
#include "clip/tokenizer.h"
#include "cpu/blas_setup.h"
#include "device/device.h"
#include "formats/npy.h"
#include "image/image_io.h"
#include "image/preprocess.h"
#include "util/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out) {
    fprintf(out, "usage: vflclip embed --model DIR (--image FILE... | --text \"...\"...) --out OUT.npy [--batch N]\n"
                 "                     [--tokenizer PATH] [--device cpu|cuda|auto] [--precision fp32|bf16|auto|tf32] [--max-pixels N]\n"
                 "Writes float32 [N, projection_dim] embeddings before L2 normalisation, in input order.\n"
                 "  --tokenizer PATH  for --text: a directory with vocab.json + merges.txt or OpenAI's\n"
                 "                    bpe_simple_vocab_16e6.txt.gz (default: those files in the model directory)\n"
                 "  --device D        where images are encoded: cpu (default) | cuda | auto (a GPU when there is\n"
                 "                    one, else the CPU, saying why); texts are embedded on the CPU\n"
                 "  --precision P     image encoding: fp32 | bf16 (CUDA, or a CPU with AVX512_BF16/AMX; an error on\n"
                 "                    other CPUs) | auto (bf16 where the device has it, else fp32) | tf32 (CUDA);\n"
                 "                    default bf16 on CUDA, fp32 on the CPU\n"
                 "  --max-pixels N    refuse an image whose header declares more than N pixels (width x height)\n"
                 "                    before decoding it (default %llu)\n", (unsigned long long)VF_IMAGE_DEFAULT_MAX_PIXELS);
}

static void warn_random(const char *model) {
    fprintf(stderr, "embed: WARNING: %s holds RANDOM weights made by `vflclip make-model`; "
                    "these embeddings are MEANINGLESS for dermatology\n", model);
}

typedef struct embed_args {
    const char *model, *out, *pixels, *tokenizer;
    int batch, describe, device_given;
    vf_device_kind device;
    vf_device_precision precision;
    char **images, **texts, **token_ids;
    int n_images, n_texts, n_token_ids;
} embed_args;

/* Collects the values after a list option up to the next --option. */
/* The values after a list option, appended: `--image a.png --image b.png`
 * keeps both (a list only pointed into argv once, so the last one won).
 * The arrays (argv-sized, pointing into argv) live as long as the command. */
static int take_list(int argc, char **argv, int *i, char ***list, int *n) {
    if (!*list && !(*list = calloc((size_t)argc, sizeof **list))) return -1;
    int before = *n;
    while (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) (*list)[(*n)++] = argv[++*i];
    return *n > before ? 0 : -1;
}

static void free_args(embed_args *a) {
    free(a->images);
    free(a->texts);
    free(a->token_ids);
}

static int parse_args(int argc, char **argv, embed_args *a) {
    memset(a, 0, sizeof *a);
    a->batch = 16;
    a->device = VF_DEVICE_CPU;
    a->precision = VF_PREC_DEFAULT;
    vf_error perr;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) { usage(stdout); exit(0); }
        int rc = 0;
        if (strcmp(o, "--describe") == 0) a->describe = 1; /* hidden: parsed config + fingerprints */
        else if (strcmp(o, "--image") == 0) rc = take_list(argc, argv, &i, &a->images, &a->n_images);
        else if (strcmp(o, "--text") == 0) rc = take_list(argc, argv, &i, &a->texts, &a->n_texts);
        /* hidden, for tests: comma-separated ids (SOT..EOT) per sequence */
        else if (strcmp(o, "--token-ids") == 0) rc = take_list(argc, argv, &i, &a->token_ids, &a->n_token_ids);
        else if (i + 1 >= argc) rc = -1;
        else if (strcmp(o, "--model") == 0) a->model = argv[++i];
        else if (strcmp(o, "--out") == 0) a->out = argv[++i];
        else if (strcmp(o, "--tokenizer") == 0) a->tokenizer = argv[++i];
        else if (strcmp(o, "--device") == 0 || strcmp(o, "--precision") == 0) {
            const char *v = argv[++i];
            a->device_given = 1;
            if (o[2] == 'd' ? vf_device_kind_parse(v, o, &a->device, &perr)
                            : vf_device_precision_parse(v, o, &a->precision, &perr)) {
                fprintf(stderr, "embed: %s\n", perr.msg);
                return -1;
            }
        }
        else if (strcmp(o, "--pixels") == 0) a->pixels = argv[++i]; /* hidden: preprocessed (N,3,H,W) .npy */
        else if (strcmp(o, "--max-pixels") == 0) {
            uint64_t max;
            if (vf_image_max_pixels_parse(argv[++i], o, &max, &perr)) { fprintf(stderr, "embed: %s\n", perr.msg); return -1; }
            vf_image_set_max_pixels(max);
        }
        else if (strcmp(o, "--batch") == 0) {
            char *end;
            long b = strtol(argv[++i], &end, 10);
            if (*end || b < 1 || b > 4096) { fprintf(stderr, "embed: --batch %s is not in 1..4096\n", argv[i]); return -1; }
            a->batch = (int)b;
        } else { fprintf(stderr, "embed: unknown option %s\n", o); return -1; }
        if (rc != 0) { fprintf(stderr, "embed: %s needs a value\n", o); return -1; }
    }
    int kinds = (a->n_images > 0) + (a->n_texts > 0) + (a->pixels != NULL) + (a->n_token_ids > 0);
    if (a->describe && a->model) return 0;
    if (!a->model || !a->out || kinds != 1) {
        fprintf(stderr, "embed: needs --model, --out and exactly one of --image or --text\n");
        return -1;
    }
    if (a->device_given && (a->n_texts || a->n_token_ids)) {
        fprintf(stderr, "embed: --device and --precision are for images; texts are embedded on the CPU\n");
        return -1;
    }
    return 0;
}

static int write_out(const char *path, const float *emb, long n, int d, vf_error *err) {
    int64_t shape[2] = {n, d};
    return vf_npy_write_f32(path, emb, 2, shape, err);
}

/* ---- images --------------------------------------------------------------- */
static int embed_pixels(const embed_args *a, vf_device_vision *dv, float **emb, long *n, vf_error *err) {
    const vf_vision_tower *tower = dv->tower;
    float *px = NULL;
    int ndim;
    int64_t shape[VF_NPY_MAX_DIMS];
    if (vf_npy_read_f32(a->pixels, &px, &ndim, shape, err) != 0) return -1;
    const int S = tower->image_size;
    if (ndim != 4 || shape[1] != 3 || shape[2] != S || shape[3] != S) {
        free(px);
        return vf_fail(err, "%s: pixels must be (N, 3, %d, %d)", a->pixels, S, S);
    }
    *n = shape[0];
    *emb = malloc(sizeof(float) * (size_t)(*n ? *n : 1) * tower->embed_dim);
    int rc = *emb ? vf_device_vision_encode(dv, px, (int)*n, *emb, err) : vf_fail(err, "out of memory");
    free(px);
    return rc;
}

static int embed_images(const embed_args *a, const vf_checkpoint *ck, vf_device_vision *dv, float **emb, long *n,
                        vf_error *err) {
    const vf_vision_tower *tower = dv->tower;
    vf_preprocess_cfg pp;
    if (vf_checkpoint_preprocess(ck, &pp, err) != 0) return -1;
    const int S = tower->image_size;
    if (pp.crop_h != S || pp.crop_w != S)
        return vf_fail(err, "%s: preprocessor crop %dx%d does not match the model's image_size %d", a->model, pp.crop_h, pp.crop_w, S);
    const long per = 3L * S * S;
    float *px = malloc(sizeof(float) * per * a->batch);
    *n = a->n_images;
    *emb = malloc(sizeof(float) * (size_t)*n * tower->embed_dim);
    if (!px || !*emb) { free(px); return vf_fail(err, "out of memory"); }
    int rc = 0;
    vf_progress bar;   /* images done / total, rate, time left: a bar on a terminal, a line every few seconds otherwise */
    vf_progress_begin(&bar, "encoding images", "img", a->n_images, isatty(2) ? VF_PROGRESS_TTY : VF_PROGRESS_LINES);
    for (int i0 = 0; i0 < a->n_images && rc == 0; i0 += a->batch) {
        int m = a->n_images - i0 < a->batch ? a->n_images - i0 : a->batch;
        for (int j = 0; j < m && rc == 0; j++) {
            vf_image img = {0};
            rc = vf_image_load(a->images[i0 + j], &img, err);
            if (rc == 0) rc = vf_preprocess(&pp, &img, px + j * per, err);
            vf_image_free(&img);
        }
        if (rc == 0) rc = vf_device_vision_encode(dv, px, m, *emb + (long)i0 * tower->embed_dim, err);
        if (rc == 0) vf_progress_set(&bar, i0 + m);
    }
    if (rc == 0) vf_progress_end(&bar);
    else if (bar.open) fputc('\n', stderr);
    free(px);
    return rc;
}

/* Opens the chosen device, uploads the tower there and encodes. */
static int embed_on_device(const embed_args *a, const vf_checkpoint *ck, vf_vision_tower *tower, float **emb, long *n,
                           vf_error *err) {
    vf_device dev;
    vf_device_vision dv;
    if (vf_device_open(&dev, a->device, a->precision, err)) return -1;
    if (vf_device_vision_open(&dv, &dev, tower, err)) {
        vf_device_close(&dev);
        return -1;
    }
    int rc = a->pixels ? embed_pixels(a, &dv, emb, n, err) : embed_images(a, ck, &dv, emb, n, err);
    vf_device_vision_close(&dv);
    vf_device_close(&dev);
    return rc;
}

/* ---- texts ----------------------------------------------------------------- */
static int parse_ids(const char *s, int32_t *ids, int max, int *n, vf_error *err) {
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || *n >= max || v < 0 || v > 1 << 30) return vf_fail(err, "--token-ids \"%s\": not a list of at most %d ids", s, max);
        ids[(*n)++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return vf_fail(err, "--token-ids: unexpected '%c'", *end);
    }
    return *n > 0 ? 0 : vf_fail(err, "--token-ids: empty sequence");
}

static int embed_texts(const embed_args *a, const vf_checkpoint *ck, vf_clip_text_tower *tower, float **emb, long *n,
                       vf_error *err) {
    const vf_clip_text_weights *w = &tower->w;
    const int P = w->cfg.max_positions, C = w->cfg.enc.hidden_size, B = a->batch;
    const int count = a->n_texts ? a->n_texts : a->n_token_ids;
    vf_tokenizer *tok = NULL;
    if (a->n_texts && vf_checkpoint_tokenizer(ck, a->tokenizer, &tok, NULL, 0, err) != 0) return -1;
    vf_clip_text_acts acts;
    if (vf_clip_text_acts_init(&acts, w, B, P, err) != 0) { vf_tokenizer_free(tok); return -1; }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * P);
    int *lens = malloc(sizeof(int) * B), *eot = malloc(sizeof(int) * B);
    float *x = malloc(sizeof(float) * (size_t)B * P * C);
    *n = count;
    *emb = malloc(sizeof(float) * (size_t)count * w->projection_dim);
    int rc = ids && lens && eot && x && *emb ? 0 : vf_fail(err, "out of memory");
    for (int i0 = 0; i0 < count && rc == 0; i0 += B) {
        int m = count - i0 < B ? count - i0 : B, T = 0;
        for (int j = 0; j < m && rc == 0; j++) {
            int32_t *row = ids + (long)j * P;
            if (tok) {
                int trunc = 0;
                rc = vf_tokenize(tok, a->texts[i0 + j], row, P, &lens[j], &trunc, err);
                if (rc == 0 && trunc) fprintf(stderr, "embed: text %d truncated to %d tokens\n", i0 + j, P);
            } else {
                rc = parse_ids(a->token_ids[i0 + j], row, P, &lens[j], err);
            }
            if (rc == 0 && lens[j] > T) T = lens[j];
        }
        /* Pad to the longest sequence with EOT: causal attention means the
         * padding never reaches the pooled position. */
        for (int j = 0; j < m && rc == 0; j++)
            for (int t = lens[j]; t < T; t++) ids[(long)j * P + t] = w->cfg.eos_token_id;
        for (int j = 0; j < m && rc == 0; j++) memmove(ids + (long)j * T, ids + (long)j * P, sizeof(int32_t) * T);
        if (rc == 0) rc = vf_clip_text_eot_positions(&w->cfg, ids, m, T, eot, err);
        if (rc == 0) rc = vf_clip_text_embed_tokens(w, ids, m, T, x, err);
        if (rc == 0) rc = vf_clip_text_forward(w, &acts, x, eot, m, T, *emb + (long)i0 * w->projection_dim, err);
    }
    free(ids); free(lens); free(eot); free(x);
    vf_clip_text_acts_free(&acts);
    vf_tokenizer_free(tok);
    return rc;
}

/* Prints the config as the towers use it (canonical JSON) and, when the
 * weights are there, the fingerprint each tower reports: for tests and
 * operators. */
static int describe(vf_checkpoint *ck, vf_error *err) {
    if (!ck->has_config) {
        *err = ck->config_err;
        return -1;
    }
    char *json = vf_clip_config_to_json(&ck->cfg);
    if (!json) return vf_fail(err, "out of memory");
    printf("{\"config\": %s", json);
    free(json);
    char hex[2 * VF_FINGERPRINT_LEN + 1];
    if (access(ck->weights_path, F_OK) == 0) {
        vf_vision_tower v;
        vf_clip_text_tower t;
        if (vf_checkpoint_open_weights(ck, err) != 0 || vf_vision_load_from(&v, ck, 1, err) != 0) return -1;
        vf_fingerprint_hex(v.fingerprint, hex);
        printf(", \"vision_fingerprint\": \"%s\"", hex);
        vf_vision_free(&v);
        if (vf_clip_text_load_from(&t, ck, err) != 0) return -1;
        vf_fingerprint_hex(t.fingerprint, hex);
        printf(", \"text_fingerprint\": \"%s\", \"logit_scale\": %.9g", hex, t.logit_scale);
        vf_clip_text_free(&t);
    }
    printf("}\n");
    return 0;
}

int vf_cmd_embed(int argc, char **argv) {
    /* main() already chose the OpenBLAS kernels and OpenMP waiting (cpu/blas_setup.h). */
    embed_args a;
    if (parse_args(argc, argv, &a) != 0) { free_args(&a); usage(stderr); return 2; }
    vf_error err = {{0}};
    /* the model directory is read once, here; everything below takes ck */
    vf_checkpoint *ck = malloc(sizeof *ck);
    if (!ck) {
        free_args(&a);
        fprintf(stderr, "embed: out of memory\n");
        return 1;
    }
    if (a.describe) {
        free_args(&a);
        int rc = vf_checkpoint_open_files(ck, a.model, &err) == 0 ? describe(ck, &err) : -1;
        vf_checkpoint_close(ck);
        free(ck);
        if (rc == 0) return 0;
        fprintf(stderr, "embed: %s\n", err.msg);
        return 1;
    }
    float *emb = NULL;
    long n = 0;
    int d = 0, rc = vf_checkpoint_open(ck, a.model, &err);
    if (rc == 0 && (a.n_images || a.pixels)) {
        vf_vision_tower tower;
        rc = vf_vision_load_from(&tower, ck, a.batch, &err);
        if (rc == 0) {
            if (tower.random_weights) warn_random(a.model);
            d = tower.embed_dim;
            rc = embed_on_device(&a, ck, &tower, &emb, &n, &err);
            vf_vision_free(&tower);
        }
    } else if (rc == 0) {
        vf_clip_text_tower tower;
        rc = vf_clip_text_load_from(&tower, ck, &err);
        if (rc == 0) {
            if (tower.cfg.random_weights) warn_random(a.model);
            d = tower.w.projection_dim;
            rc = embed_texts(&a, ck, &tower, &emb, &n, &err);
            vf_clip_text_free(&tower);
        }
    }
    vf_checkpoint_close(ck);
    free(ck);
    if (rc == 0) rc = write_out(a.out, emb, n, d, &err);
    free(emb);
    free_args(&a);
    if (rc != 0) {
        fprintf(stderr, "embed: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "embed: wrote %s [%ld, %d]\n", a.out, n, d);
    return 0;
}
