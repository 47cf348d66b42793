/* bench_coop_step: one CoOp training step on the CPU, model load excluded:
 * text forward of the C class prompts + eq.1 loss on a batch of cached image
 * embeddings + text backward to the context + Adam.
 *   usage: bench_coop_step MODEL_DIR STEPS [BATCH] [N_CTX]
 * MODEL_DIR without config.json gets a random-weight ViT-B/16 written into
 * it first (make_model, seed 7).  7 DermaMNIST classes, template
 * "a dermatoscopic image of {ctx} {class}.", Adam lr 1e-3.  Prints
 *   coop_step_ms min=<x> median=<y> mean=<z> steps=<n> T=<T> ... blas=<OpenBLAS kernel set>
 * (tests/bench/coop_step_torch.py runs the same step in PyTorch.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "clip/clip_model.h"
#include "clip/make_model.h"
#include "clip/tokenizer.h"
#include "coop/loss.h"
#include "coop/optim.h"
#include "coop/prompt.h"
#include "cpu/blas_setup.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const char *const CLASSES[7] = {"actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                                       "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                                       "melanocytic nevi", "vascular lesions"};

int main(int argc, char **argv) {
    vf_blas_ensure_native_kernels();   // same kernels as the vflclip programs use
    if (argc < 3) {
        fprintf(stderr, "usage: bench_coop_step MODEL_DIR STEPS [BATCH] [N_CTX]\n");
        return 2;
    }
    const char *dir = argv[1];
    int steps = atoi(argv[2]), N = argc > 3 ? atoi(argv[3]) : 32, n_ctx = argc > 4 ? atoi(argv[4]) : 16;
    if (steps < 1 || N < 1 || n_ctx < 1) { fprintf(stderr, "bench_coop_step: STEPS, BATCH, N_CTX must be positive\n"); return 2; }
    vf_error err = {{0}};
    char cfg_path[4200];
    struct stat sb;
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    if (stat(cfg_path, &sb) != 0 && vf_make_model("vit-b-16", 7, VF_DT_F32, dir, 0, &err) != 0) {
        fprintf(stderr, "bench_coop_step: %s\n", err.msg);
        return 1;
    }
    vf_clip_text_tower tower;
    vf_tokenizer *tok;
    vf_coop *coop;
    vf_coop_config cfg = vf_coop_config_default();
    cfg.n_ctx = n_ctx;
    cfg.template_ = "a dermatoscopic image of {ctx} {class}.";
    if (vf_clip_text_load(&tower, dir, &err) != 0 || vf_tokenizer_load_dir(&tok, dir, &err) != 0 ||
        vf_coop_create(&coop, &cfg, &tower.w, tok, CLASSES, 7, &err) != 0) {
        fprintf(stderr, "bench_coop_step: %s\n", err.msg);
        return 1;
    }
    const int C = 7, D = vf_coop_feature_dim(coop), n = vf_coop_ctx_count(coop);
    float *image = malloc(sizeof(float) * N * D), *text = malloc(sizeof(float) * C * D), *dtext = malloc(sizeof(float) * C * D);
    float *dctx = malloc(sizeof(float) * n), *scratch = malloc(sizeof(float) * vf_coop_loss_scratch_floats(N, C, D));
    int *labels = malloc(sizeof(int) * N);
    unsigned s = 1;
    for (int i = 0; i < N * D; i++) { s = s * 1103515245u + 12345u; image[i] = ((s >> 8) & 0xffff) / 32768.0f - 1.0f; }
    for (int i = 0; i < N; i++) labels[i] = i % C;
    vf_optim_config ocfg = vf_optim_defaults(VF_OPT_ADAM);
    vf_optim opt;
    if (vf_optim_init(&opt, &ocfg, n, &err) != 0) { fprintf(stderr, "bench_coop_step: %s\n", err.msg); return 1; }
    double *ms = malloc(sizeof(double) * steps), mean = 0;
    float loss0 = 0, loss = 0;
    for (int it = -2; it < steps; it++) {   // two warm-up steps (page faults, thread pools)
        double t0 = now();
        if (vf_coop_text_forward(coop, text, &err) != 0) { fprintf(stderr, "bench_coop_step: %s\n", err.msg); return 1; }
        loss = vf_coop_loss(image, labels, N, text, C, D, tower.logit_scale, NULL, dtext, scratch);
        if (vf_coop_text_backward(coop, dtext, dctx, &err) != 0) { fprintf(stderr, "bench_coop_step: %s\n", err.msg); return 1; }
        vf_optim_step(&opt, vf_coop_ctx(coop), dctx, 1e-3f);
        double t = (now() - t0) * 1e3;
        if (it == -2) loss0 = loss;
        if (it >= 0) { ms[it] = t; mean += t / steps; }
    }
    qsort(ms, steps, sizeof *ms, cmp_double);
    printf("coop_step_ms min=%.3f median=%.3f mean=%.3f steps=%d T=%d batch=%d n_ctx=%d loss0=%.6f lossN=%.6f blas=%s\n", ms[0],
           ms[steps / 2], mean, steps, vf_coop_seq_len(coop), N, n_ctx, loss0, loss, vf_blas_core_name());
    free(ms); free(image); free(text); free(dtext); free(dctx); free(scratch); free(labels);
    vf_optim_free(&opt);
    vf_coop_free(coop);
    vf_tokenizer_free(tok);
    vf_clip_text_free(&tower);
    return 0;
}
