/* cmd_train: `vflclip train` — CoOp prompt tuning in one process: cached
 * image embeddings, the prompt learner over the frozen text tower, the
 * trainer loop, and the run directory (see coop/trainer.h). */
#include "util/name_list.h"
#include "cli/commands.h"
#include "cli/coop_options.h"
#include "cli/coop_setup.h"
#include "coop/classifier.h"
#include "coop/trainer.h"
#include "daemon/run_settings.h"
#include "util/fileio.h"
#include "formats/npy.h"
#include "image/preprocess.h"
#include "privacy/embed_dp.h"
#include "privacy/privacy_report.h"
#include "util/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>


static void usage(FILE *o) {
    fprintf(o,
        "usage: vflclip train --model DIR --data PATH --out RUN_DIR [options]\n"
        "  --model DIR            Hugging Face CLIP directory (config.json, model.safetensors, vocab.json, merges.txt)\n"
        "                         or OpenCLIP checkpoint (open_clip_config.json, open_clip_model.safetensors)\n"
        "  --tokenizer PATH       a directory with vocab.json + merges.txt or OpenAI's bpe_simple_vocab_16e6.txt.gz\n"
        "                         (default: those files in the model directory)\n"
        "  --data PATH            MedMNIST .npz, labels .csv (image_id,dx[,split]) or a folder with labels.csv\n"
        "  --out RUN_DIR          metrics.jsonl, test_metrics.json, context.safetensors, classifier.safetensors,\n"
        "                         calibration.json, *.png\n"
        "  --fit-temperature      fit the classifier's temperature on the val split (NLL); ECE before/after in calibration.json\n"
        "prompt:\n"
        "  --template T           with {ctx} and {class} slots (default \"" VF_COOP_DEFAULT_TEMPLATE "\")\n"
        "  --classes a,b,...      class names in label order (default: the 7 DermaMNIST names); a .npz's labels\n"
        "                         must be exactly 0..(names - 1)\n"
        "  --n-ctx N              context vectors (default 16)\n"
        "  --init-words W         initialise the context from these words (n_ctx = their token count; a --n-ctx\n"
        "                         that differs is an error)\n"
        "  --csc                  class-specific contexts\n"
        "  --class-pos P          end | middle | front (default end)\n"
        "  --init-ctx FILE        start from this context (.npy (rows, W) or a context.safetensors)\n"
        "optimisation:\n"
        "  --optimizer O          adam | sgd (default adam)\n"
        "  --lr X                 base learning rate (default 1e-3 adam, 2e-3 sgd)\n"
        "  --momentum X           SGD momentum (default 0.9)\n"
        "  --weight-decay X       L2 weight decay (default 0)\n"
        "  --warmup-epochs N      warm-up epochs (default 0), --warmup constant|linear, --warmup-lr X (default 1e-5)\n"
        "  --batch-size N         (default 32)   --epochs N (default 10)   --seed N (default 1)\n"
        "  --max-steps N          stop after N optimizer steps in total\n"
        "privacy (docs/threat-model.md; the same as `vflclip run start`'s flags):\n"
        "  --text-grad-accumulate K  one step per K batches (mean dL/dT)   --text-grad-clip X  per-example L2 bound\n"
        "  --text-grad-noise X    Gaussian noise std X * clip on dL/dT     --dp-delta X (default 1e-5)\n"
        "  --epsilon-budget X     stop before dL/dT's epsilon would exceed X\n"
        "  --embed-clip X --embed-noise X --embed-seed N   clip + noise every image embedding (as an image party's [privacy])\n"
        "data:\n"
        "  --class-codes a,b,...  CSV dx codes in label order (default akiec,bcc,bkl,df,mel,nv,vasc)\n"
        "  --image-dir DIR        where the CSV's images are (default: beside the CSV)\n"
        "  --split-seed N         seed of the 7:1:2 split when the CSV has no split column (default 0)\n"
        "  --cache-dir DIR        embedding cache (default $VFLCLIP_CACHE or ~/.cache/vflclip/embeddings); --no-cache\n"
        "  --embed-batch N        images per vision-tower batch (default 32)\n"
        "  --device D             where images are encoded: auto (a GPU when there is one) | cpu | cuda\n"
        "  --precision P          image encoding: fp32 | bf16 (CUDA, or a CPU with AVX512_BF16/AMX) | auto (bf16 where\n"
        "                         the device has it, else fp32) | tf32 (CUDA); default bf16 on CUDA, fp32 on the CPU\n"
        "                         (the CoOp text forward/backward runs on the CPU)\n"
        "  --quiet                no progress lines\n");
}

typedef struct train_args {
    const char *model, *tokenizer, *data, *out, *template_, *classes, *init_words, *init_ctx, *class_codes, *image_dir, *cache_dir;
    int n_ctx, n_ctx_given, csc, batch_size, epochs, warmup_epochs, embed_batch, no_cache, quiet, fit_temperature;
    long max_steps;
    float lr, momentum, weight_decay, warmup_lr;
    int lr_given, momentum_given;
    vf_class_pos class_pos;
    vf_optim_kind optimizer;
    vf_warmup_kind warmup;
    unsigned long long seed, split_seed;
    vf_device_kind device;
    vf_device_precision precision;
    vf_text_grad_privacy privacy;
    float tg_clip, tg_noise, embed_clip, embed_noise;
    double dp_delta, epsilon_budget;
    unsigned long long embed_seed;
} train_args;

static int parse_args(train_args *a, int argc, char **argv) {
    *a = (train_args){.n_ctx = 16, .batch_size = 32, .epochs = 10, .seed = 1, .warmup = VF_WARMUP_CONSTANT,
                      .warmup_lr = 1e-5f, .class_pos = VF_CLASS_END, .optimizer = VF_OPT_ADAM,
                      .device = VF_DEVICE_AUTO, .precision = VF_PREC_DEFAULT, .privacy = vf_text_grad_privacy_default(),
                      .dp_delta = 1e-5};
    vf_error err;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { usage(stdout); return 1; }
        if (!strcmp(o, "--csc")) { a->csc = 1; continue; }
        if (!strcmp(o, "--no-cache")) { a->no_cache = 1; continue; }
        if (!strcmp(o, "--quiet")) { a->quiet = 1; continue; }
        if (!strcmp(o, "--fit-temperature")) { a->fit_temperature = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip train: %s needs a value (or is unknown)\n", o); return 2; }
        const char *v = argv[++i];
        int bad = 0, n;
        if (!strcmp(o, "--model")) a->model = v;
        else if (!strcmp(o, "--tokenizer")) a->tokenizer = v;
        else if (!strcmp(o, "--data")) a->data = v;
        else if (!strcmp(o, "--out")) a->out = v;
        else if (!strcmp(o, "--template")) a->template_ = v;
        else if (!strcmp(o, "--classes")) a->classes = v;
        else if (!strcmp(o, "--class-codes")) a->class_codes = v;
        else if (!strcmp(o, "--init-words")) a->init_words = v;
        else if (!strcmp(o, "--init-ctx")) a->init_ctx = v;
        else if (!strcmp(o, "--image-dir")) a->image_dir = v;
        else if (!strcmp(o, "--cache-dir")) a->cache_dir = v;
        else if (!strcmp(o, "--n-ctx")) { bad = vf_cli_parse_int(o, v, 1, 72, &a->n_ctx); a->n_ctx_given = 1; }
        else if (!strcmp(o, "--batch-size")) bad = vf_cli_parse_int(o, v, 1, 1 << 20, &a->batch_size);
        else if (!strcmp(o, "--epochs")) bad = vf_cli_parse_int(o, v, 1, 100000, &a->epochs);
        else if (!strcmp(o, "--warmup-epochs")) bad = vf_cli_parse_int(o, v, 0, 100000, &a->warmup_epochs);
        else if (!strcmp(o, "--embed-batch")) bad = vf_cli_parse_int(o, v, 1, 4096, &a->embed_batch);
        else if (!strcmp(o, "--max-steps")) { bad = vf_cli_parse_int(o, v, 0, 1 << 30, &n); a->max_steps = n; }
        else if (!strcmp(o, "--lr")) { bad = vf_cli_parse_float(o, v, 0, 1e3f, &a->lr); a->lr_given = 1; }
        else if (!strcmp(o, "--momentum")) { bad = vf_cli_parse_float(o, v, 0, 1, &a->momentum); a->momentum_given = 1; }
        else if (!strcmp(o, "--weight-decay")) bad = vf_cli_parse_float(o, v, 0, 10, &a->weight_decay);
        else if (!strcmp(o, "--warmup-lr")) bad = vf_cli_parse_float(o, v, 0, 1e3f, &a->warmup_lr);
        else if (!strcmp(o, "--seed")) bad = vf_cli_parse_u64(o, v, &a->seed);
        else if (!strcmp(o, "--text-grad-accumulate")) bad = vf_cli_parse_int(o, v, 1, 1 << 20, &a->privacy.accumulate);
        else if (!strcmp(o, "--text-grad-clip")) bad = vf_cli_parse_float(o, v, 0, 1e30f, &a->privacy.clip);
        else if (!strcmp(o, "--text-grad-noise")) bad = vf_cli_parse_float(o, v, 0, 1e30f, &a->privacy.noise_multiplier);
        else if (!strcmp(o, "--embed-clip")) bad = vf_cli_parse_float(o, v, 0, 1e30f, &a->embed_clip);
        else if (!strcmp(o, "--embed-noise")) bad = vf_cli_parse_float(o, v, 0, 1e30f, &a->embed_noise);
        else if (!strcmp(o, "--embed-seed")) bad = vf_cli_parse_u64(o, v, &a->embed_seed);
        else if (!strcmp(o, "--dp-delta") || !strcmp(o, "--epsilon-budget")) {
            char *end;
            double d = strtod(v, &end);
            bad = *end || !isfinite(d) || d < 0;
            if (bad) fprintf(stderr, "vflclip train: %s: '%s' is not a non-negative number\n", o, v);
            else if (!strcmp(o, "--dp-delta")) a->privacy.delta = d;
            else a->privacy.epsilon_budget = d;
        }
        else if (!strcmp(o, "--split-seed")) bad = vf_cli_parse_u64(o, v, &a->split_seed);
        else if (!strcmp(o, "--class-pos")) bad = vf_class_pos_parse(v, &a->class_pos, &err);
        else if (!strcmp(o, "--optimizer")) bad = vf_optim_kind_parse(v, &a->optimizer, &err);
        else if (!strcmp(o, "--warmup")) bad = vf_warmup_kind_parse(v, &a->warmup, &err);
        else if (!strcmp(o, "--device")) bad = vf_device_kind_parse(v, o, &a->device, &err);
        else if (!strcmp(o, "--precision")) bad = vf_device_precision_parse(v, o, &a->precision, &err);
        else { fprintf(stderr, "vflclip train: unknown option %s\n", o); usage(stderr); return 2; }
        if (bad) {
            if (!strcmp(o, "--device") || !strcmp(o, "--precision"))
                fprintf(stderr, "vflclip train: %s\n", err.msg);
            else if (!strcmp(o, "--class-pos") || !strcmp(o, "--optimizer") || !strcmp(o, "--warmup"))
                fprintf(stderr, "vflclip train: %s: %s\n", o, err.msg);
            return 2;
        }
    }
    if (vf_text_grad_privacy_check(&a->privacy, "vflclip train", &err)) { fprintf(stderr, "%s\n", err.msg); return 2; }
    vf_embed_privacy ep = {a->embed_clip, a->embed_noise, a->embed_seed, a->privacy.delta};
    if (vf_embed_privacy_check(&ep, "vflclip train", &err)) { fprintf(stderr, "%s\n", err.msg); return 2; }
    if (!a->model || !a->data || !a->out) { fprintf(stderr, "vflclip train: --model, --data and --out are required\n"); usage(stderr); return 2; }
    return 0;
}

/* --init-ctx: a .npy of (rows, W) (or (C, n_ctx, W) for CSC) or a context file. */
static int load_init_ctx(const char *path, float **ctx, int *rows, int *width, int *n_ctx_hint, vf_error *err) {
    size_t n = strlen(path);
    if (n > 4 && !strcasecmp(path + n - 4, ".npy")) {
        int ndim;
        int64_t shape[VF_NPY_MAX_DIMS];
        if (vf_npy_read_f32(path, ctx, &ndim, shape, err)) return -1;
        if (ndim != 2 && ndim != 3) { free(*ctx); return vf_fail(err, "%s: context must be (n_ctx, W) or (C, n_ctx, W), not %d-D", path, ndim); }
        *width = (int)shape[ndim - 1];
        *rows = (int)(ndim == 2 ? shape[0] : shape[0] * shape[1]);
        *n_ctx_hint = (int)(ndim == 2 ? shape[0] : shape[1]);
    } else {
        vf_context_file f;
        if (vf_context_load(path, &f, err)) return -1;
        *ctx = f.ctx;
        f.ctx = NULL;
        *rows = f.rows;
        *width = f.width;
        *n_ctx_hint = f.n_ctx;
        vf_context_file_free(&f);
    }
    for (long i = 0; i < (long)*rows * *width; i++)
        if (!isfinite((*ctx)[i])) { free(*ctx); return vf_fail(err, "%s: element %ld is not finite", path, i); }
    return 0;
}

/* run_settings.json in the run directory: the same file a federated run
 * keeps (daemon/run_settings.h), with the [run] keys this run's options map
 * to; the keys that only a federation has (party_timeout_s,
 * checkpoint_every, chunk_size) are 0. */
static int write_settings(const train_args *a, const vf_train_config *tc, const vf_coop *coop, const char *template_,
                          vf_coop_setup *s, const char *const *class_names, int C, vf_error *err) {
    vf_run_config rc;
    if (vf_run_config_parse("[run]\n", "defaults", &rc, err)) return -1;
    rc.epochs = a->epochs;
    rc.batch_size = a->batch_size;
    rc.max_steps = a->max_steps;
    rc.seed = a->seed;
    rc.optim = tc->optim;
    rc.schedule = tc->schedule;
    rc.n_ctx = vf_coop_n_ctx(coop);
    rc.csc = a->csc;
    rc.class_pos = a->class_pos;
    snprintf(rc.template_, sizeof rc.template_, "%s", template_);
    snprintf(rc.init_words, sizeof rc.init_words, "%s", a->init_words ? a->init_words : "");
    rc.party_timeout_s = rc.checkpoint_every = rc.chunk_size = 0;
    rc.privacy = a->privacy;
    rc.fit_temperature = a->fit_temperature;
    char tok_fp[65];
    if (vf_tokenizer_fingerprint(s->tok, tok_fp, err)) return -1;
    vf_run_settings st = {.program = "vflclip train", .cfg = &rc, .model_fingerprint = s->fingerprint,
                          .tokenizer_fingerprint = tok_fp, .data = a->data, .split_seed = a->split_seed,
                          .class_names = class_names, .n_classes = C};
    if (vf_mkdirs(a->out, 0755, err)) return -1;
    return vf_run_settings_write(a->out, &st, err);
}

/* classifier.safetensors (coop/classifier.h): T of the context the run ended
 * with — vf_trainer_run's RESTORE_BEST put the best context back into coop —
 * its calibration (calibration.json, reliability.png) and the test metrics. */
static int write_classifier(const train_args *a, vf_coop *coop, vf_coop_setup *s, const char *template_,
                            const char *const *class_names, int C, vf_error *err) {
    const int D = vf_coop_feature_dim(coop);
    vf_preprocess_cfg pp;
    char pp_fp[65];
    if (vf_checkpoint_preprocess(s->ck, &pp, err)) return -1;
    snprintf(pp_fp, sizeof pp_fp, "%s", s->ck->preprocess_fingerprint);   /* vf_preprocess_fingerprint of pp */
    float *text = malloc((size_t)C * D * sizeof *text);
    if (!text) return vf_fail(err, "out of memory");
    vf_classifier k;
    int rc = -1;
    if (vf_coop_text_forward(coop, text, err) == 0 &&
        vf_classifier_init(&k, text, C, D, s->text.logit_scale, class_names, template_, s->fingerprint, pp_fp, NULL,
                           NULL, err) == 0) {
        rc = vf_classifier_finish_run(&k, a->out, &s->split[VF_SPLIT_VAL], &s->split[VF_SPLIT_TEST], a->fit_temperature,
                                      NULL, err);
        vf_classifier_free(&k);
    }
    free(text);
    return rc;
}

int vf_cmd_train(int argc, char **argv) {
    train_args a;
    int prc = parse_args(&a, argc, argv);
    if (prc) return prc == 1 ? 0 : prc;
    vf_error err = {{0}};
    vf_name_list names, codes;
    if (vf_name_list_parse(&names, a.classes, "class list", 2, &err) || vf_name_list_parse(&codes, a.class_codes, "class list", 2, &err)) {
        fprintf(stderr, "vflclip train: %s\n", err.msg);
        return 2;
    }
    const char *const *class_names = names.n ? (const char *const *)names.names : vf_dermamnist_names;
    int C = names.n ? names.n : 7;
    if (codes.n && codes.n != C) {
        fprintf(stderr, "vflclip train: --class-codes has %d codes but there are %d classes\n", codes.n, C);
        return 2;
    }
    if (!codes.n && C != 7 && !(strlen(a.data) > 4 && !strcasecmp(a.data + strlen(a.data) - 4, ".npz"))) {
        fprintf(stderr, "vflclip train: %d classes given; a CSV data set then needs --class-codes too\n", C);
        return 2;
    }
    float *init_ctx = NULL;
    int init_rows = 0, init_width = 0, init_n_ctx = 0;
    if (a.init_ctx && load_init_ctx(a.init_ctx, &init_ctx, &init_rows, &init_width, &init_n_ctx, &err)) {
        fprintf(stderr, "vflclip train: --init-ctx %s\n", err.msg);
        return 1;
    }
    if (init_ctx && !a.n_ctx_given && !a.init_words) a.n_ctx = init_n_ctx;

    int rc = 1;
    vf_coop *coop = NULL;
    float *private_emb[3] = {NULL, NULL, NULL};
    vf_coop_setup s;
    vf_coop_setup_options so = {.model_dir = a.model, .tokenizer = a.tokenizer, .data = a.data,
                                .class_codes = codes.n ? (const char *const *)codes.names : NULL, .n_classes = C,
                                .image_dir = a.image_dir, .split_seed = a.split_seed, .cache_dir = a.cache_dir,
                                .no_cache = a.no_cache, .embed_batch = a.embed_batch, .want = {1, 1, 1},
                                .tty = isatty(2), .device = a.device, .precision = a.precision,
                                .classes_from = names.n ? "--classes" : "the default class list (DermaMNIST's; name yours with --classes)",
                                .init_words = a.init_words, .n_ctx = a.n_ctx, .n_ctx_given = a.n_ctx_given};
    if (vf_coop_setup_open(&s, &so, &err)) { fprintf(stderr, "vflclip train: %s\n", err.msg); goto out_noset; }
    if (s.split[VF_SPLIT_TRAIN].n == 0) { fprintf(stderr, "vflclip train: %s: the train split is empty\n", a.data); goto out; }

    vf_coop_config cc = vf_coop_config_default();
    cc.n_ctx = a.n_ctx;
    cc.csc = a.csc;
    cc.class_pos = a.class_pos;
    cc.template_ = a.template_ ? a.template_ : VF_COOP_DEFAULT_TEMPLATE;
    cc.init_words = a.init_words;
    cc.n_ctx_given = a.n_ctx_given;
    cc.seed = a.seed;
    if (vf_coop_create(&coop, &cc, &s.text.w, s.tok, class_names, C, &err)) { fprintf(stderr, "vflclip train: %s\n", err.msg); goto out; }
    if (init_ctx && vf_coop_set_ctx(coop, init_ctx, init_rows, init_width, a.init_ctx, &err)) {
        fprintf(stderr, "vflclip train: --init-ctx %s\n", err.msg);
        goto out;
    }

    vf_train_config tc = {.epochs = a.epochs, .batch_size = a.batch_size, .max_steps = a.max_steps, .seed = a.seed,
                          .out_dir = a.out, .progress_tty = isatty(2), .quiet = a.quiet, .privacy = &a.privacy};
    vf_embed_privacy ep = {a.embed_clip, a.embed_noise, a.embed_seed, a.privacy.delta};
    for (int k = 0; k < 3 && ep.clip > 0; k++)   /* the cached embeddings are the clean ones; privatise a copy */
        if (s.split[k].n > 0) {
            float *copy = malloc((size_t)s.split[k].n * s.split[k].D * sizeof(float));
            if (!copy) { fprintf(stderr, "vflclip train: out of memory\n"); goto out; }
            memcpy(copy, s.split[k].emb, (size_t)s.split[k].n * s.split[k].D * sizeof(float));
            vf_embed_privatize(&ep, k, 0, copy, s.split[k].n, s.split[k].D);
            private_emb[k] = copy;
            s.split[k].emb = copy;
        }
    tc.optim = vf_optim_defaults(a.optimizer);
    tc.optim.weight_decay = a.weight_decay;
    if (a.momentum_given) tc.optim.momentum = a.momentum;
    tc.schedule = (vf_lr_schedule){.base_lr = a.lr_given ? a.lr : (a.optimizer == VF_OPT_SGD ? 2e-3f : 1e-3f),
                                   .max_epochs = a.epochs, .warmup = a.warmup_epochs ? a.warmup : VF_WARMUP_NONE,
                                   .warmup_epochs = a.warmup_epochs, .warmup_lr = a.warmup_lr};
    vf_context_info info = {.template_ = cc.template_, .init_words = a.init_words, .class_names = class_names,
                            .n_classes = C, .n_ctx = vf_coop_n_ctx(coop), .csc = a.csc, .class_pos = a.class_pos,
                            .model_fingerprint = s.fingerprint, .seed = a.seed,
                            .split_seed = a.split_seed};
    if (write_settings(&a, &tc, coop, cc.template_, &s, class_names, C, &err)) {
        fprintf(stderr, "vflclip train: %s\n", err.msg);
        goto out;
    }
    vf_train_result res;
    if (vf_trainer_run(&tc, coop, s.text.logit_scale, &s.split[VF_SPLIT_TRAIN], &s.split[VF_SPLIT_VAL],
                       &s.split[VF_SPLIT_TEST], &info, &res, &err)) {
        fprintf(stderr, "vflclip train: %s\n", err.msg);
        goto out;
    }
    vf_privacy_report pr = {.text = a.privacy, .batch = a.batch_size < s.split[VF_SPLIT_TRAIN].n ? a.batch_size
                                                                                                  : s.split[VF_SPLIT_TRAIN].n,
                            .n_train = s.split[VF_SPLIT_TRAIN].n, .steps = res.steps, .budget_stop = res.budget_stop};
    if (ep.clip > 0) {
        pr.n_embed = 1;
        pr.embed[0] = (vf_privacy_embed_entry){"(one process)", ep.clip, ep.noise_multiplier, ep.delta, vf_embed_epsilon(&ep)};
    }
    if (vf_privacy_report_write(a.out, &pr, &err)) { fprintf(stderr, "vflclip train: %s\n", err.msg); goto out; }
    if (write_classifier(&a, coop, &s, cc.template_, class_names, C, &err)) {
        fprintf(stderr, "vflclip train: %s/%s: %s\n", a.out, VF_CLASSIFIER_FILE, err.msg);
        goto out;
    }
    char auc[32] = "null", eps[32] = "null";
    if (!isnan(res.best_val_auc)) snprintf(auc, sizeof auc, "%.6f", res.best_val_auc);
    if (isfinite(res.epsilon)) snprintf(eps, sizeof eps, "%.6f", res.epsilon);
    printf("{\"epochs\":%d,\"steps\":%ld,\"best_epoch\":%d,\"best_val_auc\":%s,\"first_loss\":%.6f,"
           "\"last_loss\":%.6f,\"cache_hits\":%d,\"images_encoded\":%d,\"random_weights\":%s,\"epsilon\":%s,"
           "\"budget_stop\":%s}\n",
           res.epochs_run, res.steps, res.best_epoch, auc, res.first_loss,
           res.last_loss, s.cache_hits, s.encoded, s.random_weights ? "true" : "false", eps,
           res.budget_stop ? "true" : "false");
    rc = 0;
out:
    for (int k = 0; k < 3; k++) free(private_emb[k]);
    vf_coop_free(coop);
    vf_coop_setup_close(&s);
out_noset:
    free(init_ctx);
    vf_name_list_free(&names);
    vf_name_list_free(&codes);
    return rc;
}
