/* cmd_predict: `vflclip predict` — a run's classifier (coop/classifier.h)
 * applied to images: per image the predicted class and every class
 * probability, as CSV or JSON lines; with labels, the metrics of each split.
 * Images are encoded as `vflclip train` encodes them: a data set through
 * cli/coop_setup (device, precision, embedding cache), single files through
 * the same device tower and preprocessing. */
#include "data/model_encoder.h"
#include "cli/commands.h"
#include "cli/coop_options.h"
#include "cli/coop_setup.h"
#include "clip/checkpoint.h"
#include "coop/classifier.h"
#include "image/image_io.h"
#include "image/preprocess.h"
#include "metrics/metrics.h"
#include "util/name_list.h"
#include "util/sha256.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void usage(FILE *o) {
    fprintf(o,
        "usage: vflclip predict --model DIR --classifier FILE (--image FILE [--image FILE ...] | --data PATH)\n"
        "                       [--out FILE] [--format csv|jsonl] [--split all|train|val|test]\n"
        "                       [--class-codes a,b,..] [--image-dir DIR] [--split-seed N] [--cache-dir DIR | --no-cache]\n"
        "                       [--embed-batch N] [--device auto|cpu|cuda] [--precision fp32|bf16|auto|tf32]\n"
        "                       [--tokenizer DIR|bpe_simple_vocab_16e6.txt.gz]\n"
        "  Applies a run's classifier.safetensors to images: per image its split, id, true label (where known),\n"
        "  the predicted class index and name, and every class probability (softmax of exp(logit_scale) /\n"
        "  temperature times the cosine with each class's text feature).\n"
        "  --data takes what train takes (MedMNIST .npz, labels .csv, a folder with labels.csv), every split it\n"
        "  holds unless --split names one.  --out FILE.csv or FILE.jsonl (default: CSV on stdout); --format overrides.\n"
        "  With labels, each split's metrics (ACC, AUC, ..., ECE) are printed as JSON lines (on stderr when the\n"
        "  predictions go to stdout).  A classifier made for another model or preprocessing is refused.\n");
}

typedef struct predict_args {
    const char *model, *tokenizer, *classifier, *data, *out, *codes, *image_dir, *cache_dir;
    const char **images;
    int n_images, jsonl, format_given, no_cache, embed_batch, split;   /* split: -1 = all */
    unsigned long long split_seed;
    vf_device_kind device;
    vf_device_precision precision;
} predict_args;

/* A CSV field, quoted when it holds a comma, quote or line break. */
static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void write_header(FILE *f, const vf_classifier *k, int jsonl) {
    if (jsonl) return;
    fputs("split,id,label,label_name,pred,pred_name", f);
    for (int c = 0; c < k->C; c++) {
        char col[600];
        snprintf(col, sizeof col, "p_%s", k->class_names[c]);
        fputc(',', f);
        csv_field(f, col);
    }
    fputc('\n', f);
}

/* One image's row; label < 0 = unknown. */
static void write_row(FILE *f, const vf_classifier *k, int jsonl, const char *split, const char *id, int label,
                      const float *p) {
    int arg = 0;
    for (int c = 1; c < k->C; c++)
        if (p[c] > p[arg]) arg = c;
    if (jsonl) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "split", split);
        cJSON_AddStringToObject(o, "id", id);
        if (label >= 0) {
            cJSON_AddNumberToObject(o, "label", label);
            cJSON_AddStringToObject(o, "label_name", k->class_names[label]);
        } else {
            cJSON_AddNullToObject(o, "label");
            cJSON_AddNullToObject(o, "label_name");
        }
        cJSON_AddNumberToObject(o, "pred", arg);
        cJSON_AddStringToObject(o, "pred_name", k->class_names[arg]);
        cJSON *pr = cJSON_AddArrayToObject(o, "probs");
        for (int c = 0; c < k->C; c++) cJSON_AddItemToArray(pr, cJSON_CreateNumber(p[c]));
        char *s = cJSON_PrintUnformatted(o);
        if (s) fprintf(f, "%s\n", s);
        free(s);
        cJSON_Delete(o);
        return;
    }
    csv_field(f, split);
    fputc(',', f);
    csv_field(f, id);
    if (label >= 0) {
        fprintf(f, ",%d,", label);
        csv_field(f, k->class_names[label]);
    } else {
        fputs(",,", f);
    }
    fprintf(f, ",%d,", arg);
    csv_field(f, k->class_names[arg]);
    for (int c = 0; c < k->C; c++) fprintf(f, ",%.9g", p[c]);
    fputc('\n', f);
}

/* The split's metrics and calibration as one JSON line. */
static int print_metrics(FILE *f, const vf_classifier *k, const char *split, const float *probs, const int *labels, int n,
                         vf_error *err) {
    vf_metrics m = {0};
    if (vf_metrics_init(&m, k->C, err) || vf_metrics_compute(&m, probs, labels, n, err)) { vf_metrics_free(&m); return -1; }
    char *mj = vf_metrics_to_json(&m, (const char *const *)k->class_names, 0);
    vf_metrics_free(&m);
    if (!mj) return vf_fail(err, "out of memory");
    double ece = vf_calibration(probs, labels, n, k->C, VF_ECE_BINS, NULL, NULL, NULL);
    fprintf(f, "{\"split\":\"%s\",\"n\":%d,\"temperature\":%.9g,\"ece\":%.9g,\"metrics\":%s}\n", split, n,
            (double)k->temperature, ece, mj);
    free(mj);
    return 0;
}

/* Refuses a classifier made for another model or preprocessing, naming both. */
static int check_fingerprints(const vf_classifier *k, const predict_args *a, const char *model_fp, const char *pp_fp,
                              vf_error *err) {
    if (strcmp(k->model_fingerprint, model_fp) != 0)
        return vf_fail(err, "%s was made for model %s, but %s is model %s", a->classifier, k->model_fingerprint, a->model,
                       model_fp);
    if (k->preprocessing_fingerprint[0] && strcmp(k->preprocessing_fingerprint, pp_fp) != 0)
        return vf_fail(err, "%s was made with preprocessing %s, but %s preprocesses as %s", a->classifier,
                       k->preprocessing_fingerprint, a->model, pp_fp);
    return 0;
}

/* Single image files: the device tower (as coop_setup uses it), no labels. */
static int predict_images(const predict_args *a, vf_checkpoint *ck, const vf_classifier *k, const vf_preprocess_cfg *pp,
                          const char *pp_fp, FILE *out, vf_error *err) {
    vf_model_encoder me;
    if (vf_checkpoint_open_weights(ck, err) ||
        vf_model_encoder_open_from(&me, ck, a->embed_batch > 0 ? a->embed_batch : 32, a->device, a->precision, err))
        return -1;
    const vf_vision_tower *vt = &me.vt;
    char fp[65];
    vf_fingerprint_hex(vt->fingerprint, fp);
    int rc = -1;
    float *px = NULL, *emb = NULL, *probs = NULL;
    if (check_fingerprints(k, a, fp, pp_fp, err)) goto out;
    if (vt->embed_dim != k->D) { vf_fail(err, "%s: features are %d wide, %s's embeddings %d", a->classifier, k->D, a->model, vt->embed_dim); goto out; }
    const int S = vt->image_size;
    if (pp->crop_h != S || pp->crop_w != S) {
        vf_fail(err, "%s: preprocessor crop %dx%d does not match the model's image_size %d", a->model, pp->crop_h, pp->crop_w, S);
        goto out;
    }
    const int B = a->embed_batch > 0 ? a->embed_batch : 32;
    const long per = 3L * S * S;
    px = malloc(sizeof(float) * per * B);
    emb = malloc(sizeof(float) * (size_t)B * k->D);
    probs = malloc(sizeof(float) * (size_t)B * k->C);
    if (!px || !emb || !probs) { vf_fail(err, "out of memory"); goto out; }
    write_header(out, k, a->jsonl);
    for (int i0 = 0; i0 < a->n_images; i0 += B) {
        int m = a->n_images - i0 < B ? a->n_images - i0 : B;
        for (int j = 0; j < m; j++) {
            vf_image img = {0};
            int r = vf_image_load(a->images[i0 + j], &img, err);
            if (r == 0) r = vf_preprocess(pp, &img, px + j * per, err);
            vf_image_free(&img);
            if (r) goto out;
        }
        if (vf_model_encoder_encode(&me, px, m, emb, err) || vf_classifier_scores(k, emb, m, probs, err)) goto out;
        for (int j = 0; j < m; j++) write_row(out, k, a->jsonl, "", a->images[i0 + j], -1, probs + (size_t)j * k->C);
    }
    rc = 0;
out:
    vf_model_encoder_close(&me);
    free(px); free(emb); free(probs);
    return rc;
}

/* The classifier's fingerprints against the model's, before coop_setup
 * encodes any image. */
typedef struct predict_check {
    const vf_classifier *k;
    const predict_args *a;
    const char *pp_fp;
} predict_check;

static int check_before_encoding(void *ctx, const vf_coop_setup *s, vf_error *err) {
    const predict_check *c = ctx;
    return check_fingerprints(c->k, c->a, s->fingerprint, c->pp_fp, err);
}

/* A data set: coop_setup encodes the wanted splits as train does (from ck,
 * the model directory read once). */
static int predict_data(const predict_args *a, vf_checkpoint *ck, const vf_classifier *k, const char *pp_fp, FILE *out,
                        FILE *mout, vf_error *err) {
    vf_name_list codes;
    if (vf_name_list_parse(&codes, a->codes, "class list", 2, err)) return -1;
    vf_coop_setup_options so = {.model_dir = a->model, .ck = ck, .tokenizer = a->tokenizer, .data = a->data,
                                .class_codes = codes.n ? (const char *const *)codes.names : NULL, .n_classes = k->C,
                                .image_dir = a->image_dir, .split_seed = a->split_seed, .cache_dir = a->cache_dir,
                                .no_cache = a->no_cache, .embed_batch = a->embed_batch, .tty = isatty(2),
                                .device = a->device, .precision = a->precision};
    /* the model first (nothing encoded yet), so a mismatch is refused before any image is */
    predict_check check = {k, a, pp_fp};
    so.before_encoding = check_before_encoding;
    so.before_encoding_ctx = &check;
    vf_coop_setup s;
    int rc = -1;
    float *probs = NULL;
    for (int sp = 0; sp < VF_SPLIT_COUNT; sp++) so.want[sp] = a->split < 0 || a->split == sp;
    if (vf_coop_setup_open(&s, &so, err)) goto out_codes;
    if (s.split[VF_SPLIT_TRAIN].D != k->D && s.split[VF_SPLIT_TRAIN].D) {
        vf_fail(err, "%s: features are %d wide, %s's embeddings %d", a->classifier, k->D, a->model, s.split[VF_SPLIT_TRAIN].D);
        goto out;
    }
    write_header(out, k, a->jsonl);
    int any = 0;
    for (int sp = 0; sp < VF_SPLIT_COUNT; sp++) {
        const vf_embedded_split *e = &s.split[sp];
        if (!so.want[sp] || e->n == 0) continue;
        any = 1;
        free(probs);
        probs = malloc((size_t)e->n * k->C * sizeof(float));
        if (!probs) { vf_fail(err, "out of memory"); goto out; }
        if (vf_classifier_scores(k, e->emb, e->n, probs, err)) { vf_error_prefix(err, "%s (%s split): ", a->data, vf_split_name(sp)); goto out; }
        const vf_split_data *d = &s.ds.split[sp];
        for (int i = 0; i < e->n; i++) {
            char idx[32];
            snprintf(idx, sizeof idx, "%d", i);
            write_row(out, k, a->jsonl, vf_split_name(sp), d->ids ? d->ids[i] : idx, e->labels ? e->labels[i] : -1,
                      probs + (size_t)i * k->C);
        }
        if (e->labels && print_metrics(mout, k, vf_split_name(sp), probs, e->labels, e->n, err)) goto out;
    }
    if (!any) { vf_fail(err, "%s: no images in the %s", a->data, a->split < 0 ? "data set" : "chosen split"); goto out; }
    rc = 0;
out:
    free(probs);
    vf_coop_setup_close(&s);
out_codes:
    vf_name_list_free(&codes);
    return rc;
}

int vf_cmd_predict(int argc, char **argv) {
    predict_args a = {.split = -1, .device = VF_DEVICE_AUTO, .precision = VF_PREC_DEFAULT};
    const char *format = NULL;
    int precision_given = 0;
    vf_error err = {{0}};
    a.images = calloc((size_t)argc, sizeof *a.images);
    if (!a.images) { fprintf(stderr, "vflclip predict: out of memory\n"); return 1; }
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { usage(stdout); rc = 0; goto done; }
        if (!strcmp(o, "--no-cache")) { a.no_cache = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip predict: %s needs a value (or is unknown)\n", o); goto done; }
        const char *v = argv[++i];
        if (!strcmp(o, "--model")) a.model = v;
        else if (!strcmp(o, "--tokenizer")) a.tokenizer = v;
        else if (!strcmp(o, "--classifier")) a.classifier = v;
        else if (!strcmp(o, "--data")) a.data = v;
        else if (!strcmp(o, "--image")) a.images[a.n_images++] = v;
        else if (!strcmp(o, "--out")) a.out = v;
        else if (!strcmp(o, "--format")) format = v;
        else if (!strcmp(o, "--class-codes")) a.codes = v;
        else if (!strcmp(o, "--image-dir")) a.image_dir = v;
        else if (!strcmp(o, "--cache-dir")) a.cache_dir = v;
        else if (!strcmp(o, "--split")) {
            vf_split sp;
            if (!strcmp(v, "all")) a.split = -1;
            else if (vf_split_parse(v, &sp)) { fprintf(stderr, "vflclip predict: --split %s: want all, train, val or test\n", v); goto done; }
            else a.split = sp;
        }
        else if (!strcmp(o, "--split-seed")) { if (vf_cli_parse_u64(o, v, &a.split_seed)) goto done; }
        else if (!strcmp(o, "--embed-batch")) { if (vf_cli_parse_int(o, v, 1, 4096, &a.embed_batch)) goto done; }
        else if (!strcmp(o, "--device")) {
            if (vf_device_kind_parse(v, o, &a.device, &err)) { fprintf(stderr, "vflclip predict: %s\n", err.msg); goto done; }
        } else if (!strcmp(o, "--precision")) {
            if (vf_device_precision_parse(v, o, &a.precision, &err)) { fprintf(stderr, "vflclip predict: %s\n", err.msg); goto done; }
            precision_given = 1;
        }
        else { fprintf(stderr, "vflclip predict: unknown option %s\n", o); usage(stderr); goto done; }
    }
    if (!a.model || !a.classifier || (!a.data) == (a.n_images == 0)) {
        fprintf(stderr, "vflclip predict: --model, --classifier and either --data or --image are required\n");
        usage(stderr);
        goto done;
    }
    if (format) {
        if (!strcmp(format, "csv")) a.jsonl = 0;
        else if (!strcmp(format, "jsonl")) a.jsonl = 1;
        else { fprintf(stderr, "vflclip predict: --format %s: want csv or jsonl\n", format); goto done; }
    } else if (a.out) {
        size_t n = strlen(a.out);
        a.jsonl = (n > 6 && !strcasecmp(a.out + n - 6, ".jsonl")) || (n > 5 && !strcasecmp(a.out + n - 5, ".json"));
    }

    rc = 1;
    vf_checkpoint *ck = NULL;
    vf_classifier k;
    if (vf_classifier_load(&k, a.classifier, &err)) { fprintf(stderr, "vflclip predict: %s\n", err.msg); goto done; }
    vf_preprocess_cfg pp;
    char pp_fp[65];
    /* the model directory, read once (its tensor file is opened when single images are encoded) */
    if (!(ck = malloc(sizeof *ck))) { fprintf(stderr, "vflclip predict: out of memory\n"); goto done_k; }
    if (vf_checkpoint_open_files(ck, a.model, &err) || vf_checkpoint_preprocess(ck, &pp, &err)) {
        fprintf(stderr, "vflclip predict: %s\n", err.msg);
        goto done_k;
    }
    vf_preprocess_fingerprint(&pp, pp_fp);
    /* An image party that encodes in bf16 or tf32 folds the precision into its
     * preprocessing fingerprint (a federated run's classifier carries it):
     * predict then encodes in that precision too. */
    for (int pr = VF_PREC_TF32; k.preprocessing_fingerprint[0] && strcmp(k.preprocessing_fingerprint, pp_fp) && pr <= VF_PREC_BF16; pr++) {
        char text[128], tagged[65];
        unsigned char h[32];
        int n = snprintf(text, sizeof text, "%s precision=%s", pp_fp, vf_device_precision_name((vf_device_precision)pr));
        vf_sha256(text, (size_t)n, h);
        vf_sha256_to_hex(h, tagged);
        if (strcmp(tagged, k.preprocessing_fingerprint)) continue;
        if (precision_given && a.precision != (vf_device_precision)pr) {
            fprintf(stderr, "vflclip predict: %s was made from %s embeddings; --precision %s would give other ones\n",
                    a.classifier, vf_device_precision_name((vf_device_precision)pr), vf_device_precision_name(a.precision));
            goto done_k;
        }
        a.precision = (vf_device_precision)pr;
        snprintf(pp_fp, sizeof pp_fp, "%s", tagged);
    }
    if (k.preprocessing_fingerprint[0] && strcmp(k.preprocessing_fingerprint, pp_fp) != 0) {
        fprintf(stderr, "vflclip predict: %s was made with preprocessing %s, but %s preprocesses as %s\n", a.classifier,
                k.preprocessing_fingerprint, a.model, pp_fp);
        goto done_k;
    }
    /* predictions go to a temporary file beside --out, renamed when complete */
    char tmp[4200];
    FILE *out = stdout;
    if (a.out) {
        snprintf(tmp, sizeof tmp, "%s.tmp", a.out);
        if (!(out = fopen(tmp, "w"))) { fprintf(stderr, "vflclip predict: %s: cannot write (%s)\n", tmp, strerror(errno)); goto done_k; }
    }
    FILE *mout = a.out ? stdout : stderr;
    int r = a.data ? predict_data(&a, ck, &k, pp_fp, out, mout, &err) : predict_images(&a, ck, &k, &pp, pp_fp, out, &err);
    if (a.out) {
        int werr = ferror(out);
        if (fclose(out) || werr) { if (!r) r = vf_fail(&err, "%s: write failed", tmp); }
        if (!r && rename(tmp, a.out)) r = vf_fail(&err, "%s: cannot rename to %s (%s)", tmp, a.out, strerror(errno));
        if (r) unlink(tmp);
    } else {
        fflush(stdout);
    }
    if (r) { fprintf(stderr, "vflclip predict: %s\n", err.msg); goto done_k; }
    rc = 0;
done_k:
    vf_classifier_free(&k);
    if (ck) vf_checkpoint_close(ck);
    free(ck);
done:
    free(a.images);
    return rc;
}
