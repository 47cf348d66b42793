/* cmd_coop_debug: hidden debugging subcommands that expose the CoOp maths to
 * the reference tests (tests/python/test_coop_grad.py), one computation each,
 * with .npy files in and out:
 *   coop-grad   text forward + loss + text backward: dL/dctx for a model dir
 *   coop-loss   the eq. 1 loss, logits and dL/dtext for given features
 *   coop-optim  S optimizer steps from given params over given gradients
 *   coop-lr     the learning rate of each epoch under CoOp's schedule
 *               (tests/python/test_lr_schedule.py) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/name_list.h"
#include "cli/coop_options.h"
#include "clip/checkpoint.h"
#include "clip/clip_model.h"
#include "clip/tokenizer.h"
#include "coop/loss.h"
#include "coop/optim.h"
#include "coop/prompt.h"
#include "formats/npy.h"

/* Reads a .npy and checks its rank; on success *data is malloc'd. */
static int read_npy(const char *path, int want_ndim, float **data, int64_t *shape, vf_error *err) {
    int ndim;
    if (vf_npy_read_f32(path, data, &ndim, shape, err) != 0) return -1;
    if (ndim != want_ndim) { free(*data); *data = NULL; return vf_fail(err, "%s: expected a %d-D array, found %d-D", path, want_ndim, ndim); }
    return 0;
}

/* labels.npy (N) of integers -> int array. */
static int read_labels(const char *path, int N, int n_classes, int **labels, vf_error *err) {
    float *f;
    int64_t shape[8];
    if (read_npy(path, 1, &f, shape, err) != 0) return -1;
    if (shape[0] != N) { free(f); return vf_fail(err, "%s: %lld labels for %d image embeddings", path, (long long)shape[0], N); }
    *labels = malloc((size_t)N * sizeof(int));
    for (int i = 0; i < N; i++) {
        if (!(f[i] >= 0 && f[i] < n_classes) || f[i] != floorf(f[i])) {
            int bad = i;
            free(f); free(*labels); *labels = NULL;
            return vf_fail(err, "%s: label %d is not a class index in 0..%d", path, bad, n_classes - 1);
        }
        (*labels)[i] = (int)f[i];
    }
    free(f);
    return 0;
}

static int fail_cmd(const char *cmd, vf_error *err) {
    fprintf(stderr, "vflclip %s: %s\n", cmd, err->msg);
    return 1;
}

#define NEED_ARG() do { if (i + 1 >= argc) { fprintf(stderr, "vflclip %s: %s needs a value\n", argv[0], a); return 2; } } while (0)

/* ---- coop-grad ---------------------------------------------------------------- */
int vf_cmd_coop_grad(int argc, char **argv) {
    const char *model = NULL, *classes = NULL, *init_ctx = NULL, *image_emb = NULL, *labels_path = NULL, *out = NULL,
               *out_features = NULL;
    vf_coop_config cfg = vf_coop_config_default();
    int have_scale = 0;
    float logit_scale = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            printf("usage: vflclip coop-grad --model DIR --classes A,B,.. --image-emb EMB.npy --labels L.npy --out GRAD.npy\n"
                   "         [--template T] [--n-ctx N] [--csc] [--class-pos end|middle|front] [--init-words W | --init-ctx CTX.npy]\n"
                   "         [--seed S] [--logit-scale X] [--out-features TEXT.npy]\n"
                   "Prints the loss; writes dL/dctx (debugging aid for the reference tests).\n");
            return 0;
        }
        if (strcmp(a, "--csc") == 0) { cfg.csc = 1; continue; }
        NEED_ARG();
        const char *v = argv[++i];
        vf_error e;
        if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--classes") == 0) classes = v;
        else if (strcmp(a, "--template") == 0) cfg.template_ = v;
        else if (strcmp(a, "--init-words") == 0) cfg.init_words = v;
        else if (strcmp(a, "--init-ctx") == 0) init_ctx = v;
        else if (strcmp(a, "--image-emb") == 0) image_emb = v;
        else if (strcmp(a, "--labels") == 0) labels_path = v;
        else if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--out-features") == 0) out_features = v;
        else if (strcmp(a, "--n-ctx") == 0) { if (vf_cli_parse_int(a, v, 1, 75, &cfg.n_ctx)) return 2; }
        else if (strcmp(a, "--seed") == 0) { if (vf_cli_parse_u64(a, v, &cfg.seed)) return 2; }
        else if (strcmp(a, "--logit-scale") == 0) { if (vf_cli_parse_float(a, v, -100, 100, &logit_scale)) return 2; have_scale = 1; }
        else if (strcmp(a, "--class-pos") == 0) { if (vf_class_pos_parse(v, &cfg.class_pos, &e)) return fail_cmd(argv[0], &e); }
        else { fprintf(stderr, "vflclip coop-grad: unknown option %s\n", a); return 2; }
    }
    if (!model || !classes || !image_emb || !labels_path || !out) {
        fprintf(stderr, "vflclip coop-grad: --model, --classes, --image-emb, --labels and --out are required\n");
        return 2;
    }
    vf_error err = {{0}};
    vf_checkpoint ck;
    vf_clip_text_tower tower;
    vf_tokenizer *tok = NULL;
    vf_name_list cl;
    vf_coop *coop = NULL;
    float *emb = NULL, *ctx0 = NULL, *text = NULL, *dtext = NULL, *dctx = NULL, *scratch = NULL;
    int *labels = NULL, rc = 1, ck_open = 0, tower_loaded = 0;
    int64_t eshape[8], cshape[8];
    if (vf_name_list_parse(&cl, classes, "class list", 2, &err) != 0) return fail_cmd(argv[0], &err);
    if (vf_checkpoint_open(&ck, model, &err) != 0) goto done;
    ck_open = 1;
    if (vf_clip_text_load_from(&tower, &ck, &err) != 0) goto done;
    tower_loaded = 1;
    if (vf_checkpoint_tokenizer(&ck, NULL, &tok, NULL, 0, &err) != 0) goto done;
    if (vf_coop_create(&coop, &cfg, &tower.w, tok, (const char *const *)cl.names, cl.n, &err) != 0) goto done;
    if (init_ctx) {
        if (read_npy(init_ctx, 2, &ctx0, cshape, &err) != 0) goto done;
        if (vf_coop_set_ctx(coop, ctx0, (int)cshape[0], (int)cshape[1], init_ctx, &err) != 0) goto done;
    }
    const int C = cl.n, D = vf_coop_feature_dim(coop);
    if (read_npy(image_emb, 2, &emb, eshape, &err) != 0) goto done;
    if (eshape[1] != D) { vf_fail(&err, "%s: embeddings are %lld wide but the model's features are %d", image_emb, (long long)eshape[1], D); goto done; }
    const int N = (int)eshape[0];
    if (read_labels(labels_path, N, C, &labels, &err) != 0) goto done;
    text = malloc((size_t)C * D * sizeof(float));
    dtext = malloc((size_t)C * D * sizeof(float));
    dctx = malloc((size_t)vf_coop_ctx_count(coop) * sizeof(float));
    scratch = malloc((size_t)vf_coop_loss_scratch_floats(N, C, D) * sizeof(float));
    if (!text || !dtext || !dctx || !scratch) { vf_fail(&err, "out of memory"); goto done; }
    if (vf_coop_text_forward(coop, text, &err) != 0) goto done;
    float loss = vf_coop_loss(emb, labels, N, text, C, D, have_scale ? logit_scale : tower.logit_scale, NULL, dtext, scratch);
    if (!isfinite(loss)) { vf_fail(&err, "loss is not finite (zero-norm embedding?)"); goto done; }
    if (vf_coop_text_backward(coop, dtext, dctx, &err) != 0) goto done;
    int64_t gshape[2] = {vf_coop_ctx_rows(coop), vf_coop_width(coop)}, fshape[2] = {C, D};
    if (vf_npy_write_f32(out, dctx, 2, gshape, &err) != 0) goto done;
    if (out_features && vf_npy_write_f32(out_features, text, 2, fshape, &err) != 0) goto done;
    printf("loss %.9g\nT %d\nn_ctx %d\n", loss, vf_coop_seq_len(coop), vf_coop_n_ctx(coop));
    rc = 0;
done:
    if (rc) fail_cmd(argv[0], &err);
    free(emb); free(ctx0); free(text); free(dtext); free(dctx); free(scratch); free(labels);
    vf_coop_free(coop);
    if (tok) vf_tokenizer_free(tok);
    if (tower_loaded) vf_clip_text_free(&tower);
    if (ck_open) vf_checkpoint_close(&ck);   /* after the tower that borrowed it */
    vf_name_list_free(&cl);
    return rc;
}

/* ---- coop-loss ---------------------------------------------------------------- */
int vf_cmd_coop_loss(int argc, char **argv) {
    const char *image_emb = NULL, *text_path = NULL, *labels_path = NULL, *out_dtext = NULL, *out_logits = NULL;
    float logit_scale = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            printf("usage: vflclip coop-loss --image-emb EMB.npy --text TEXT.npy --labels L.npy [--logit-scale X]\n"
                   "         [--out-dtext D.npy] [--out-logits LOGITS.npy]\nPrints the loss.\n");
            return 0;
        }
        NEED_ARG();
        const char *v = argv[++i];
        if (strcmp(a, "--image-emb") == 0) image_emb = v;
        else if (strcmp(a, "--text") == 0) text_path = v;
        else if (strcmp(a, "--labels") == 0) labels_path = v;
        else if (strcmp(a, "--out-dtext") == 0) out_dtext = v;
        else if (strcmp(a, "--out-logits") == 0) out_logits = v;
        else if (strcmp(a, "--logit-scale") == 0) { if (vf_cli_parse_float(a, v, -100, 100, &logit_scale)) return 2; }
        else { fprintf(stderr, "vflclip coop-loss: unknown option %s\n", a); return 2; }
    }
    if (!image_emb || !text_path || !labels_path) {
        fprintf(stderr, "vflclip coop-loss: --image-emb, --text and --labels are required\n");
        return 2;
    }
    vf_error err = {{0}};
    float *img = NULL, *text = NULL, *dtext = NULL, *logits = NULL, *scratch = NULL;
    int *labels = NULL, rc = 1;
    int64_t ishape[8], tshape[8];
    if (read_npy(image_emb, 2, &img, ishape, &err) != 0 || read_npy(text_path, 2, &text, tshape, &err) != 0) goto done;
    if (ishape[1] != tshape[1]) { vf_fail(&err, "%s and %s differ in width", image_emb, text_path); goto done; }
    int N = (int)ishape[0], C = (int)tshape[0], D = (int)ishape[1];
    if (read_labels(labels_path, N, C, &labels, &err) != 0) goto done;
    dtext = malloc((size_t)C * D * sizeof(float));
    logits = malloc((size_t)N * C * sizeof(float));
    scratch = malloc((size_t)vf_coop_loss_scratch_floats(N, C, D) * sizeof(float));
    if (!dtext || !logits || !scratch) { vf_fail(&err, "out of memory"); goto done; }
    float loss = vf_coop_loss(img, labels, N, text, C, D, logit_scale, logits, dtext, scratch);
    if (!isfinite(loss)) { vf_fail(&err, "loss is not finite (zero-norm feature?)"); goto done; }
    int64_t dshape[2] = {C, D}, lshape[2] = {N, C};
    if (out_dtext && vf_npy_write_f32(out_dtext, dtext, 2, dshape, &err) != 0) goto done;
    if (out_logits && vf_npy_write_f32(out_logits, logits, 2, lshape, &err) != 0) goto done;
    printf("loss %.9g\n", loss);
    rc = 0;
done:
    if (rc) fail_cmd(argv[0], &err);
    free(img); free(text); free(dtext); free(logits); free(scratch); free(labels);
    return rc;
}

/* ---- coop-optim --------------------------------------------------------------- */
int vf_cmd_coop_optim(int argc, char **argv) {
    const char *params_path = NULL, *grads_path = NULL, *out = NULL, *state_path = NULL;
    vf_optim_kind kind = VF_OPT_ADAM;
    vf_lr_schedule sched = {1e-3f, 0, VF_WARMUP_NONE, 0, 0};
    float wd = 0, momentum = -1, beta1 = -1, beta2 = -1, eps = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            printf("usage: vflclip coop-optim --params P.npy --grads G.npy --out P_FINAL.npy [--optimizer adam|sgd] [--lr X]\n"
                   "         [--weight-decay X] [--momentum X] [--beta1 X] [--beta2 X] [--eps X]\n"
                   "         [--max-epochs E] [--warmup none|constant|linear] [--warmup-epochs W] [--warmup-lr X]\n"
                   "         [--state OPTIM.safetensors]\n"
                   "Applies one step per row of G (S, n), step s at the schedule's lr of epoch s; prints the lrs.\n");
            return 0;
        }
        NEED_ARG();
        const char *v = argv[++i];
        vf_error e;
        if (strcmp(a, "--params") == 0) params_path = v;
        else if (strcmp(a, "--grads") == 0) grads_path = v;
        else if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--state") == 0) state_path = v;
        else if (strcmp(a, "--optimizer") == 0) { if (vf_optim_kind_parse(v, &kind, &e)) return fail_cmd(argv[0], &e); }
        else if (strcmp(a, "--warmup") == 0) { if (vf_warmup_kind_parse(v, &sched.warmup, &e)) return fail_cmd(argv[0], &e); }
        else if (strcmp(a, "--lr") == 0) { if (vf_cli_parse_float(a, v, 0, 10, &sched.base_lr)) return 2; }
        else if (strcmp(a, "--warmup-lr") == 0) { if (vf_cli_parse_float(a, v, 0, 10, &sched.warmup_lr)) return 2; }
        else if (strcmp(a, "--max-epochs") == 0) { if (vf_cli_parse_int(a, v, 0, 1000000, &sched.max_epochs)) return 2; }
        else if (strcmp(a, "--warmup-epochs") == 0) { if (vf_cli_parse_int(a, v, 0, 1000000, &sched.warmup_epochs)) return 2; }
        else if (strcmp(a, "--weight-decay") == 0) { if (vf_cli_parse_float(a, v, 0, 1, &wd)) return 2; }
        else if (strcmp(a, "--momentum") == 0) { if (vf_cli_parse_float(a, v, 0, 1, &momentum)) return 2; }
        else if (strcmp(a, "--beta1") == 0) { if (vf_cli_parse_float(a, v, 0, 1, &beta1)) return 2; }
        else if (strcmp(a, "--beta2") == 0) { if (vf_cli_parse_float(a, v, 0, 1, &beta2)) return 2; }
        else if (strcmp(a, "--eps") == 0) { if (vf_cli_parse_float(a, v, 0, 1, &eps)) return 2; }
        else { fprintf(stderr, "vflclip coop-optim: unknown option %s\n", a); return 2; }
    }
    if (!params_path || !grads_path || !out) {
        fprintf(stderr, "vflclip coop-optim: --params, --grads and --out are required\n");
        return 2;
    }
    vf_optim_config cfg = vf_optim_defaults(kind);
    cfg.weight_decay = wd;
    if (momentum >= 0) cfg.momentum = momentum;
    if (beta1 >= 0) cfg.beta1 = beta1;
    if (beta2 >= 0) cfg.beta2 = beta2;
    if (eps >= 0) cfg.eps = eps;
    vf_error err = {{0}};
    float *params = NULL, *grads = NULL;
    int64_t pshape[8], gshape[8];
    vf_optim opt = {0};
    int rc = 1;
    if (read_npy(params_path, 1, &params, pshape, &err) != 0 || read_npy(grads_path, 2, &grads, gshape, &err) != 0) goto done;
    if (gshape[1] != pshape[0]) { vf_fail(&err, "%s: gradients are %lld wide for %lld parameters", grads_path, (long long)gshape[1], (long long)pshape[0]); goto done; }
    if (vf_optim_init(&opt, &cfg, (long)pshape[0], &err) != 0) goto done;
    printf("lr");
    for (int s = 0; s < gshape[0]; s++) {
        float lr = vf_lr_at_epoch(&sched, s);
        printf(" %.9g", lr);
        vf_optim_step(&opt, params, grads + (size_t)s * pshape[0], lr);
    }
    printf("\n");
    if (vf_npy_write_f32(out, params, 1, pshape, &err) != 0) goto done;
    if (state_path && vf_optim_save(&opt, state_path, &err) != 0) goto done;
    rc = 0;
done:
    if (rc) fail_cmd(argv[0], &err);
    free(params); free(grads);
    vf_optim_free(&opt);
    return rc;
}

/* ---- coop-lr ------------------------------------------------------------------ */
int vf_cmd_coop_lr(int argc, char **argv) {
    vf_lr_schedule sched = {1e-3f, 0, VF_WARMUP_NONE, 0, 1e-5f};
    int epochs = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            printf("usage: vflclip coop-lr --max-epochs E [--epochs N] [--lr X] [--warmup none|constant|linear]\n"
                   "         [--warmup-epochs W] [--warmup-lr X]\n"
                   "Prints one line per epoch: the epoch (0-based) and its learning rate under CoOp's\n"
                   "schedule (cosine over E epochs, warm-up in front); N defaults to E.\n");
            return 0;
        }
        NEED_ARG();
        const char *v = argv[++i];
        vf_error e;
        if (strcmp(a, "--warmup") == 0) { if (vf_warmup_kind_parse(v, &sched.warmup, &e)) return fail_cmd(argv[0], &e); }
        else if (strcmp(a, "--lr") == 0) { if (vf_cli_parse_float(a, v, 0, 10, &sched.base_lr)) return 2; }
        else if (strcmp(a, "--warmup-lr") == 0) { if (vf_cli_parse_float(a, v, 0, 10, &sched.warmup_lr)) return 2; }
        else if (strcmp(a, "--max-epochs") == 0) { if (vf_cli_parse_int(a, v, 0, 1000000, &sched.max_epochs)) return 2; }
        else if (strcmp(a, "--warmup-epochs") == 0) { if (vf_cli_parse_int(a, v, 0, 1000000, &sched.warmup_epochs)) return 2; }
        else if (strcmp(a, "--epochs") == 0) { if (vf_cli_parse_int(a, v, 0, 1000000, &epochs)) return 2; }
        else { fprintf(stderr, "vflclip coop-lr: unknown option %s\n", a); return 2; }
    }
    if (epochs < 0) epochs = sched.max_epochs;
    if (sched.warmup_epochs == 0) sched.warmup = VF_WARMUP_NONE; /* as the run settings do */
    for (int e = 0; e < epochs; e++) printf("%d %.9g\n", e, vf_lr_at_epoch(&sched, e));
    return 0;
}
