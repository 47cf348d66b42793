/* check_models: whole towers on the GPU against the C towers at the same
 * random weights — image embeddings of a ViT or ModifiedResNet (fp32 mode to
 * 1e-4 relative, TF32 and bf16 modes by cosine >= 0.999), one CoOp step's
 * context gradient through the text tower — and the GPU benchmarks. */
#include "check_models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "coop/loss.h"
#include "cpu/clip_text_backward.h"

#define FP32_TOL 1e-4
#define MIN_COS 0.999

static void report_error(const char *name, const vf_error *err) {
    printf("CHECK %-44s FAIL error=\"%s\"\n", name, err->msg);
    if (vf_check_results) fprintf(vf_check_results, "{\"check\":\"%s\",\"pass\":false,\"error\":\"see log\"}\n", name);
    vf_check_failures++;
}

static float *random_pixels(int B, int S, uint64_t seed) {
    float *p = malloc((size_t)B * 3 * S * S * sizeof(float));
    vf_rng r;
    vf_rng_seed(&r, seed);
    if (p) vf_rng_fill(&r, p, (size_t)B * 3 * S * S, -1.8f, 2.2f);  /* CLIP-normalised pixel range */
    return p;
}

static int median_cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* ---- image towers: one function for both kinds --------------------------------------------- */
typedef int (*make_fn)(vf_cuda_vision **m, vf_cuda_ctx *ctx, const void *host_tower, int B, vf_error *err);
static int make_vit(vf_cuda_vision **m, vf_cuda_ctx *ctx, const void *t, int B, vf_error *err) {
    return vf_cuda_vit_create(m, ctx, (const vf_vit_weights *)t, B, err);
}
static int make_resnet(vf_cuda_vision **m, vf_cuda_ctx *ctx, const void *t, int B, vf_error *err) {
    return vf_cuda_resnet_create(m, ctx, (const vf_resnet *)t, B, err);
}

/* Encodes B images on the GPU in every precision and compares with ref (B, D).
 * max_batch B-1 (when B > 1) makes encode() run two slices through the pipeline. */
static void compare_precisions(const char *label, make_fn make, const void *tower, const float *pixels, int B, int D,
                               const float *ref) {
    const vf_cuda_precision precs[] = {VF_CUDA_FP32, VF_CUDA_TF32, VF_CUDA_BF16};
    float *out = malloc((size_t)B * D * sizeof(float));
    for (int i = 0; i < 3; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s %s", label, vf_cuda_precision_name(precs[i]));
        vf_error err = {{0}};
        vf_cuda_ctx *ctx = NULL;
        vf_cuda_vision *m = NULL;
        for (size_t j = 0; out && j < (size_t)B * D; j++) out[j] = NAN;
        if (!out || vf_cuda_ctx_create(&ctx, 0, precs[i], &err) || make(&m, ctx, tower, B > 1 ? B - 1 : 1, &err) ||
            vf_cuda_vision_encode(m, pixels, B, out, &err)) {
            report_error(name, &err);
        } else if (precs[i] == VF_CUDA_FP32) {
            vf_check_close(name, out, ref, (size_t)B * D, FP32_TOL);
        } else {
            vf_check_cosine(name, out, ref, B, D, MIN_COS);
        }
        vf_cuda_vision_free(m);
        vf_cuda_ctx_free(ctx);
    }
    free(out);
}

void vf_gpu_check_vit(const char *label, const vf_clip_vision_config *cfg, int proj_dim, int B, uint64_t seed) {
    char name[128];
    snprintf(name, sizeof name, "vit %s", label);
    vf_rand_vit v;
    vf_vit_acts acts;
    vf_error err = {{0}};
    float *pixels = random_pixels(B, cfg->image_size, seed + 1), *ref = malloc((size_t)B * proj_dim * sizeof(float));
    if (!pixels || !ref || vf_rand_vit_make(&v, cfg, proj_dim, seed) != 0) {
        snprintf(err.msg, sizeof err.msg, "out of host memory");
        report_error(name, &err);
        free(pixels), free(ref);
        return;
    }
    double t0 = vf_now_s();
    if (vf_vit_acts_init(&acts, &v.w, B, &err) != 0) {
        report_error(name, &err);
    } else {
        vf_vit_forward(&v.w, &acts, pixels, B, ref);
        printf("# %s: C reference forward of %d images took %.2f s\n", name, B, vf_now_s() - t0);
        vf_vit_acts_free(&acts);
        compare_precisions(name, make_vit, &v.w, pixels, B, proj_dim, ref);
    }
    vf_rand_vit_free(&v);
    free(pixels), free(ref);
}

void vf_gpu_check_resnet(const char *label, const vf_resnet_config *cfg, int B, uint64_t seed) {
    char name[128];
    snprintf(name, sizeof name, "resnet %s", label);
    vf_resnet r;
    vf_resnet_acts acts;
    vf_error err = {{0}};
    const int D = cfg->output_dim;
    float *pixels = random_pixels(B, cfg->image_size, seed + 1), *ref = malloc((size_t)B * D * sizeof(float));
    if (!pixels || !ref || vf_resnet_init(&r, cfg, &err) != 0) {
        if (!err.msg[0]) snprintf(err.msg, sizeof err.msg, "out of host memory");
        report_error(name, &err);
        free(pixels), free(ref);
        return;
    }
    vf_rand_resnet_fill(&r, seed);
    double t0 = vf_now_s();
    if (vf_resnet_acts_init(&acts, &r, B, &err) != 0) {
        report_error(name, &err);
    } else {
        vf_resnet_forward(&r, &acts, pixels, B, ref);
        printf("# %s: C reference forward of %d images took %.2f s\n", name, B, vf_now_s() - t0);
        vf_resnet_acts_free(&acts);
        compare_precisions(name, make_resnet, &r, pixels, B, D, ref);
    }
    vf_resnet_free(&r);
    free(pixels), free(ref);
}

/* ---- one CoOp step: text forward, eq. 1 loss, text backward, gather dL/dctx -------------------
 * Prompts (n_cls, T): SOT, n_ctx context vectors, class tokens, EOT at
 * eot[k] = T - 1 - k % 3; the context rows are shared by every class. */
typedef struct coop_case {
    const vf_rand_text *t;
    int n_cls, n_ctx, T, N, D, C;
    float *emb, *image, *text, *dtext, *demb, *dctx, *scratch;
    int *eot, *labels;
} coop_case;

static void gather_dctx(coop_case *k) {
    memset(k->dctx, 0, (size_t)k->n_ctx * k->C * sizeof(float));
    for (int c = 0; c < k->n_cls; c++)
        for (int j = 0; j < k->n_ctx; j++)
            for (int i = 0; i < k->C; i++) k->dctx[(size_t)j * k->C + i] += k->demb[((size_t)c * k->T + 1 + j) * k->C + i];
}

static float loss_and_dtext(coop_case *k) {
    return vf_coop_loss(k->image, k->labels, k->N, k->text, k->n_cls, k->D, logf(100.0f), NULL, k->dtext, k->scratch);
}

static int cuda_step(coop_case *k, vf_cuda_text *m, float *loss, vf_error *err) {
    if (vf_cuda_text_forward(m, k->emb, k->eot, k->n_cls, k->T, k->text, err) != 0) return -1;
    *loss = loss_and_dtext(k);
    if (!isfinite(*loss)) return vf_fail(err, "CoOp loss is not finite");
    if (vf_cuda_text_backward(m, k->dtext, k->demb, err) != 0) return -1;
    gather_dctx(k);
    return 0;
}

void vf_gpu_check_coop(const char *label, const vf_clip_text_config *cfg, int proj_dim, uint64_t seed) {
    char name[128];
    vf_error err = {{0}};
    vf_rand_text t;
    if (vf_rand_text_make(&t, cfg, proj_dim, seed) != 0) {
        snprintf(name, sizeof name, "coop %s", label);
        snprintf(err.msg, sizeof err.msg, "out of host memory");
        report_error(name, &err);
        return;
    }
    coop_case k = {.t = &t, .n_cls = 7, .n_ctx = 16, .T = 24, .N = 32, .D = proj_dim, .C = cfg->enc.hidden_size};
    const size_t BTC = (size_t)k.n_cls * k.T * k.C;
    k.emb = malloc(BTC * 4), k.demb = malloc(BTC * 4), k.image = malloc((size_t)k.N * k.D * 4);
    k.text = malloc((size_t)k.n_cls * k.D * 4), k.dtext = malloc((size_t)k.n_cls * k.D * 4);
    k.dctx = malloc((size_t)k.n_ctx * k.C * 4), k.scratch = malloc(vf_coop_loss_scratch_floats(k.N, k.n_cls, k.D) * 4);
    k.eot = malloc(k.n_cls * sizeof(int)), k.labels = malloc(k.N * sizeof(int));
    float *text_ref = malloc((size_t)k.n_cls * k.D * 4), *dctx_ref = malloc((size_t)k.n_ctx * k.C * 4);
    vf_rng r;
    vf_rng_seed(&r, seed + 7);
    vf_rng_normalish(&r, k.emb, BTC, 0.02f);  /* token and context embeddings are N(0, 0.02)-sized */
    vf_rng_normalish(&r, k.image, (size_t)k.N * k.D, 1.0f);
    for (int c = 0; c < k.n_cls; c++) k.eot[c] = k.T - 1 - c % 3;
    for (int i = 0; i < k.N; i++) k.labels[i] = i % k.n_cls;
    /* C: the specification */
    vf_clip_text_acts acts;
    vf_clip_text_grads grads;
    double t0 = vf_now_s(), c_step = 0;
    float loss_c = NAN, loss_g = NAN;
    snprintf(name, sizeof name, "coop %s dL/dctx fp32", label);
    if (vf_clip_text_acts_init(&acts, &t.w, k.n_cls, k.T, &err) || vf_clip_text_grads_init(&grads, &t.w, k.n_cls, k.T, &err)) {
        report_error(name, &err);
        goto out;
    }
    for (int rep = 0; rep < 2; rep++) {  /* the second run is the timed one (warm caches, BLAS threads up) */
        t0 = vf_now_s();
        if (vf_clip_text_forward(&t.w, &acts, k.emb, k.eot, k.n_cls, k.T, k.text, &err)) break;
        loss_c = loss_and_dtext(&k);
        if (vf_clip_text_backward(&t.w, &acts, &grads, k.dtext, NULL, k.demb, &err)) break;
        gather_dctx(&k);
        c_step = vf_now_s() - t0;
    }
    memcpy(text_ref, k.text, (size_t)k.n_cls * k.D * 4);
    memcpy(dctx_ref, k.dctx, (size_t)k.n_ctx * k.C * 4);
    vf_clip_text_acts_free(&acts);
    vf_clip_text_grads_free(&grads);
    if (err.msg[0]) {
        report_error(name, &err);
        goto out;
    }
    /* GPU, fp32 and TF32 */
    for (int p = 0; p < 2; p++) {
        vf_cuda_ctx *ctx = NULL;
        vf_cuda_text *m = NULL;
        const vf_cuda_precision prec = p ? VF_CUDA_TF32 : VF_CUDA_FP32;
        snprintf(name, sizeof name, "coop %s dL/dctx %s", label, vf_cuda_precision_name(prec));
        if (vf_cuda_ctx_create(&ctx, 0, prec, &err) || vf_cuda_text_create(&m, ctx, &t.w, k.n_cls, k.T, &err) ||
            cuda_step(&k, m, &loss_g, &err)) {
            report_error(name, &err);
        } else {
            char tname[128];
            snprintf(tname, sizeof tname, "coop %s text features %s", label, vf_cuda_precision_name(prec));
            if (prec == VF_CUDA_FP32) {
                vf_check_close(tname, k.text, text_ref, (size_t)k.n_cls * k.D, FP32_TOL);
                vf_check_close(name, k.dctx, dctx_ref, (size_t)k.n_ctx * k.C, FP32_TOL);
            } else {
                vf_check_cosine(tname, k.text, text_ref, k.n_cls, k.D, MIN_COS);
                vf_check_cosine(name, k.dctx, dctx_ref, k.n_ctx, k.C, MIN_COS);
            }
            /* step time: median of 20 after 3 warm-ups (host loss included, as in a real step) */
            float ms[20];
            int ok = 1;
            for (int i = 0; ok && i < 23; i++) {
                double s = vf_now_s();
                ok = cuda_step(&k, m, &loss_g, &err) == 0;
                if (i >= 3) ms[i - 3] = (float)((vf_now_s() - s) * 1e3);
            }
            if (ok) {
                qsort(ms, 20, sizeof ms[0], median_cmp);
                char f[256];
                snprintf(f, sizeof f,
                         "\"precision\":\"%s\",\"classes\":%d,\"n_ctx\":%d,\"T\":%d,\"images\":%d,\"gpu_step_ms\":%.3f,"
                         "\"c_step_ms\":%.2f,\"speedup\":%.1f,\"loss_c\":%.6f,\"loss_gpu\":%.6f",
                         vf_cuda_precision_name(prec), k.n_cls, k.n_ctx, k.T, k.N, ms[10], c_step * 1e3,
                         c_step * 1e3 / ms[10], loss_c, loss_g);
                char rn[128];
                snprintf(rn, sizeof rn, "coop_step %s", label);
                vf_check_result(rn, f);
            } else {
                report_error(name, &err);
            }
        }
        vf_cuda_text_free(m);
        vf_cuda_ctx_free(ctx);
    }
out:
    vf_rand_text_free(&t);
    free(k.emb), free(k.demb), free(k.image), free(k.text), free(k.dtext), free(k.dctx), free(k.scratch), free(k.eot);
    free(k.labels), free(text_ref), free(dctx_ref);
}

/* ---- ViT benchmark ---------------------------------------------------------------------------
 * bf16 forward of B device-resident images: 3 warm-ups, 10 timed runs with
 * CUDA events, median.  Matmul FLOPs counted as 2 per multiply-add (the
 * design's open_clip profile figures).  With dir: writes the weights
 * (weights.safetensors, HF names), 8 of the images (pixels.f32) and our
 * embeddings of them in bf16 and fp32 (ours_bf16.f32, ours_fp32.f32) for
 * tests/gpu/bench_torch.py. */
static double vit_gflop(const vf_clip_vision_config *c, int D) {
    const double C = c->enc.hidden_size, F = c->enc.intermediate_size, P = c->patch_size;
    const double NP = (double)(c->image_size / c->patch_size) * (c->image_size / c->patch_size), T = NP + 1;
    double per_layer = 2 * T * C * 3 * C + 2 * 2 * T * T * C + 2 * T * C * C + 2 * 2 * T * C * F;
    return (2 * NP * 3 * P * P * C + c->enc.num_layers * per_layer + 2 * C * D) / 1e9;
}

typedef struct fwd_arg { vf_cuda_vision *m; const float *x; int B; float *y; } fwd_arg;
static int fwd_once(void *a_, vf_error *err) {
    fwd_arg *a = a_;
    return vf_cuda_vision_forward_device(a->m, a->x, a->B, a->y, err);
}

static int write_raw(const char *dir, const char *file, const float *x, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(x, sizeof(float), n, f) == n;
    if (f && fclose(f)) ok = 0;
    return ok ? 0 : -1;
}

void vf_gpu_bench_vit(const char *label, const vf_clip_vision_config *cfg, int proj_dim, int B, double peak_tflops,
                      const char *dir, uint64_t seed) {
    char name[128];
    snprintf(name, sizeof name, "bench vit %s", label);
    vf_error err = {{0}};
    vf_rand_vit v;
    const int S = cfg->image_size, D = proj_dim, keep = B < 8 ? B : 8;
    float *pixels = random_pixels(B, S, seed + 1), *emb = malloc((size_t)B * D * 4);
    vf_cuda_ctx *ctx = NULL;
    vf_cuda_vision *m = NULL;
    float *dx = NULL, *dy = NULL;
    if (!pixels || !emb || vf_rand_vit_make(&v, cfg, proj_dim, seed) != 0) {
        snprintf(err.msg, sizeof err.msg, "out of host memory");
        report_error(name, &err);
        free(pixels), free(emb);
        return;
    }
    if (dir) {
        char path[1024];
        snprintf(path, sizeof path, "%s/weights.safetensors", dir);
        if (vf_rand_vit_save(&v, path) || write_raw(dir, "pixels.f32", pixels, (size_t)keep * 3 * S * S)) {
            snprintf(err.msg, sizeof err.msg, "cannot write the benchmark files under %s", dir);
            report_error(name, &err);
            goto out;
        }
    }
    /* fp32 embeddings of the kept images for the cross-check with PyTorch */
    if (dir) {
        if (vf_cuda_ctx_create(&ctx, 0, VF_CUDA_FP32, &err) || vf_cuda_vit_create(&m, ctx, &v.w, keep, &err) ||
            vf_cuda_vision_encode(m, pixels, keep, emb, &err) || write_raw(dir, "ours_fp32.f32", emb, (size_t)keep * D)) {
            report_error(name, &err);
            goto out;
        }
        vf_cuda_vision_free(m), m = NULL;
        vf_cuda_ctx_free(ctx), ctx = NULL;
    }
    if (vf_cuda_ctx_create(&ctx, 0, VF_CUDA_BF16, &err) || vf_cuda_vit_create(&m, ctx, &v.w, B, &err) ||
        !(dx = vf_cuda_malloc(ctx, (size_t)B * 3 * S * S * 4, &err)) || !(dy = vf_cuda_malloc(ctx, (size_t)B * D * 4, &err)) ||
        vf_cuda_upload(ctx, dx, pixels, (size_t)B * 3 * S * S * 4, &err)) {
        report_error(name, &err);
        goto out;
    }
    {
        fwd_arg a = {m, dx, B, dy};
        float ms[10], t;
        for (int i = 0; i < 3; i++)
            if (vf_cuda_time_ms(ctx, fwd_once, &a, &t, &err)) goto fail;
        for (int i = 0; i < 10; i++)
            if (vf_cuda_time_ms(ctx, fwd_once, &a, &ms[i], &err)) goto fail;
        qsort(ms, 10, sizeof ms[0], median_cmp);
        /* end to end from host memory: upload overlapped with compute, 2 slices */
        double t0 = vf_now_s();
        if (vf_cuda_vision_encode(m, pixels, B, emb, &err)) goto fail;
        const double e2e = vf_now_s() - t0;
        if (dir && write_raw(dir, "ours_bf16.f32", emb, (size_t)keep * D)) {
            snprintf(err.msg, sizeof err.msg, "cannot write %s/ours_bf16.f32", dir);
            goto fail;
        }
        double prof[VF_PROF_KINDS];
        char pf[256] = "";
        if (vf_cuda_vision_profile(m, dx, B, dy, prof, &err)) goto fail;
        for (int k = 0, len = 0; k < VF_PROF_KINDS; k++)
            len += snprintf(pf + len, sizeof pf - len, "%s\"%s\":%.3f", k ? "," : "", vf_cuda_prof_kind_name(k), prof[k]);
        const double g = vit_gflop(cfg, D), sec = ms[5] / 1e3, tflops = g * B / sec / 1e3;
        char f[1024];
        snprintf(f, sizeof f,
                 "\"precision\":\"bf16\",\"batch\":%d,\"image_size\":%d,\"gflop_per_image\":%.2f,\"median_ms\":%.3f,"
                 "\"min_ms\":%.3f,\"max_ms\":%.3f,\"images_per_s\":%.1f,\"tflops\":%.1f,\"peak_tflops\":%.0f,"
                 "\"fraction_of_peak\":%.3f,\"encode_from_host_images_per_s\":%.1f,\"profile_ms\":{%s}",
                 B, S, g, ms[5], ms[0], ms[9], B / sec, tflops, peak_tflops, tflops / peak_tflops, B / e2e, pf);
        snprintf(name, sizeof name, "vit_forward %s", label);
        vf_check_result(name, f);
        goto out;
    }
fail:
    report_error(name, &err);
out:
    vf_cuda_free(dx), vf_cuda_free(dy);
    vf_cuda_vision_free(m);
    vf_cuda_ctx_free(ctx);
    vf_rand_vit_free(&v);
    free(pixels), free(emb);
}

/* ---- export without a GPU ----------------------------------------------------------------------
 * The files bench-vit writes, with the C tower's embeddings standing in for
 * ours (both files): bench_torch.py --check-only --device cpu then checks the
 * weight export and the C ViT against transformers on any machine. */
int vf_gpu_export_vit(const vf_clip_vision_config *cfg, int proj_dim, int B, const char *dir, uint64_t seed) {
    vf_rand_vit v;
    vf_vit_acts acts;
    vf_error err = {{0}};
    const int S = cfg->image_size;
    float *pixels = random_pixels(B, S, seed + 1), *emb = malloc((size_t)B * proj_dim * 4);
    char path[1024];
    int rc = -1;
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    if (pixels && emb && vf_rand_vit_make(&v, cfg, proj_dim, seed) == 0) {
        if (vf_vit_acts_init(&acts, &v.w, B, &err) == 0) {
            vf_vit_forward(&v.w, &acts, pixels, B, emb);
            vf_vit_acts_free(&acts);
            rc = vf_rand_vit_save(&v, path) || write_raw(dir, "pixels.f32", pixels, (size_t)B * 3 * S * S) ||
                         write_raw(dir, "ours_fp32.f32", emb, (size_t)B * proj_dim) ||
                         write_raw(dir, "ours_bf16.f32", emb, (size_t)B * proj_dim)
                     ? -1
                     : 0;
        }
        vf_rand_vit_free(&v);
    }
    free(pixels), free(emb);
    if (rc) fprintf(stderr, "export-vit: cannot write the files under %s %s\n", dir, err.msg);
    return rc;
}
