/* cmd_evaluate: `vflclip evaluate` — the metrics of a saved CoOp context on
 * a split of a data set (reproducing a run's test_metrics.json), or, with
 * --scores/--labels, the metrics of given scores (no model involved).  With
 * --out, the run directory's final figures of the split (confusion matrix,
 * ROC per class with its points as JSON, recall per class) go next to the
 * metrics file, named after its stem. */
#include "util/name_list.h"
#include "cli/commands.h"
#include "cli/coop_options.h"
#include "cli/coop_setup.h"
#include "coop/trainer.h"
#include "coop/trainer_io.h"
#include "formats/npy.h"
#include "metrics/roc.h"
#include "plot/plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *o) {
    fprintf(o,
        "usage: vflclip evaluate --model DIR --context FILE --data PATH [--split test] [--out FILE.json]\n"
        "                        [--no-figures] [--backbone NAME] [--run NAME] [--scores-out SCORES.npy]\n"
        "                        [--confusion-png FILE] [--class-codes a,b,..] [--image-dir DIR] [--split-seed N (default: the context's)]\n"
        "                        [--cache-dir DIR | --no-cache] [--embed-batch N] [--device auto|cpu|cuda]\n"
        "                        [--precision fp32|bf16|auto|tf32] [--tokenizer DIR|bpe_simple_vocab_16e6.txt.gz]\n"
        "       vflclip evaluate --scores SCORES.npy --labels LABELS.npy [--out FILE.json] [--no-figures]\n"
        "  The first form rebuilds the prompts from the context file's metadata (template, class names, n_ctx,\n"
        "  csc, class position), checks the model fingerprint and prints the split's metrics as JSON.\n"
        "  The second computes ACC, AUC, recall, balanced accuracy and the confusion matrix of scores (N, C)\n"
        "  (softmax probabilities) against integer labels (N).\n"
        "  With --out DIR/STEM.json, unless --no-figures, the split's figures go next to it: DIR/STEM_confusion_SPLIT.png,\n"
        "  DIR/STEM_roc_SPLIT.png (one-vs-rest ROC per class, AUC in the legend) with its points in DIR/STEM_roc_SPLIT.json,\n"
        "  DIR/STEM_recall_SPLIT.png; SPLIT is \"scores\" in the second form.  Titles name the run (--run, default:\n"
        "  the context's directory) and the backbone (--backbone, default: the model directory's name).\n"
        "  --scores-out writes the split's softmax scores (N, C) as float32 .npy, in the split's order.\n");
}

/* The last path component of p (trailing slashes ignored) into buf. */
static const char *base_name(const char *p, char *buf, size_t n) {
    size_t e = strlen(p);
    while (e > 1 && p[e - 1] == '/') e--;
    size_t b = e;
    while (b > 0 && p[b - 1] != '/') b--;
    snprintf(buf, n, "%.*s", (int)(e - b), p + b);
    return buf;
}

/* The split's figures next to the metrics file out (DIR/STEM.json ->
 * DIR/STEM_...): the same files and titles the run directory gets. */
static int write_figures(const char *out, const char *run, const char *backbone, const char *split, const vf_metrics *m,
                         const float *scores, const int *labels, int N, const char *const *names, vf_error *err) {
    char prefix[4200], title[600];
    size_t n = strlen(out);
    const char *slash = strrchr(out, '/'), *dot = strrchr(out, '.');
    if (dot && (!slash || dot > slash + 1)) n = (size_t)(dot - out);   /* drop the extension, not a leading dot */
    if (n + 2 > sizeof prefix) return vf_fail(err, "%s: path too long", out);
    snprintf(prefix, sizeof prefix, "%.*s_", (int)n, out);
    int has_run = run && *run, has_bb = backbone && *backbone;
    snprintf(title, sizeof title, "%s%s%s%s", has_run ? "run " : "", has_run ? run : "", has_run && has_bb ? " \u00b7 " : "",
             has_bb ? backbone : "");
    vf_roc roc;
    int rc = vf_roc_from_scores(&roc, scores, labels, N, m->n_classes, err);
    if (!rc) rc = vf_write_split_figures(prefix, title, split, m, &roc, names, err);
    vf_roc_free(&roc);
    return rc;
}

static int emit(const vf_metrics *m, const char *const *names, const char *out, vf_error *err) {
    char *js = vf_metrics_to_json(m, names, 0);
    if (!js) return vf_fail(err, "out of memory");
    puts(js);
    free(js);
    return out ? vf_write_metrics_json(out, m, names, NULL, 0, err) : 0;
}

static int evaluate_scores(const char *scores_path, const char *labels_path, const char *out, int figures) {
    vf_error err = {{0}};
    float *scores = NULL, *lab = NULL;
    int nd_s, nd_l, rc = 1;
    int64_t ss[VF_NPY_MAX_DIMS], sl[VF_NPY_MAX_DIMS];
    int *labels = NULL;
    vf_metrics m = {0};
    if (vf_npy_read_f32(scores_path, &scores, &nd_s, ss, &err) || vf_npy_read_f32(labels_path, &lab, &nd_l, sl, &err)) goto done;
    if (nd_s != 2) { vf_fail(&err, "%s: scores must be (N, C), not %d-D", scores_path, nd_s); goto done; }
    if (!(nd_l == 1 || (nd_l == 2 && sl[1] == 1)) || sl[0] != ss[0]) {
        vf_fail(&err, "%s: labels must be (N) or (N, 1) with N = %lld", labels_path, (long long)ss[0]);
        goto done;
    }
    labels = malloc((size_t)(ss[0] ? ss[0] : 1) * sizeof *labels);
    if (!labels) { vf_fail(&err, "out of memory"); goto done; }
    for (int64_t i = 0; i < ss[0]; i++) {
        if (lab[i] != floorf(lab[i])) { vf_fail(&err, "%s: label %lld is not an integer", labels_path, (long long)i); goto done; }
        labels[i] = (int)lab[i];
    }
    if (vf_metrics_init(&m, (int)ss[1], &err) || vf_metrics_compute(&m, scores, labels, (int)ss[0], &err)) goto done;
    if (emit(&m, NULL, out, &err)) goto done;
    if (out && figures && write_figures(out, NULL, NULL, "scores", &m, scores, labels, (int)ss[0], NULL, &err)) goto done;
    rc = 0;
done:
    if (rc) fprintf(stderr, "vflclip evaluate: %s\n", err.msg);
    vf_metrics_free(&m);
    free(scores); free(lab); free(labels);
    return rc;
}

int vf_cmd_evaluate(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *context = NULL, *data = NULL, *split_name = "test", *out = NULL, *png = NULL;
    const char *codes_csv = NULL, *image_dir = NULL, *cache_dir = NULL, *scores = NULL, *labels = NULL;
    const char *backbone = NULL, *run_name = NULL, *scores_out = NULL;
    int figures = 1;
    unsigned long long split_seed = 0;
    int no_cache = 0, embed_batch = 0, split_seed_given = 0;
    vf_device_kind device = VF_DEVICE_AUTO;
    vf_device_precision precision = VF_PREC_DEFAULT;
    vf_error perr;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { usage(stdout); return 0; }
        if (!strcmp(o, "--no-cache")) { no_cache = 1; continue; }
        if (!strcmp(o, "--no-figures")) { figures = 0; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip evaluate: %s needs a value (or is unknown)\n", o); return 2; }
        const char *v = argv[++i];
        if (!strcmp(o, "--model")) model = v;
        else if (!strcmp(o, "--tokenizer")) tokenizer = v;
        else if (!strcmp(o, "--context")) context = v;
        else if (!strcmp(o, "--data")) data = v;
        else if (!strcmp(o, "--split")) split_name = v;
        else if (!strcmp(o, "--out")) out = v;
        else if (!strcmp(o, "--confusion-png")) png = v;
        else if (!strcmp(o, "--backbone")) backbone = v;
        else if (!strcmp(o, "--run")) run_name = v;
        else if (!strcmp(o, "--scores-out")) scores_out = v;
        else if (!strcmp(o, "--class-codes")) codes_csv = v;
        else if (!strcmp(o, "--image-dir")) image_dir = v;
        else if (!strcmp(o, "--cache-dir")) cache_dir = v;
        else if (!strcmp(o, "--scores")) scores = v;
        else if (!strcmp(o, "--labels")) labels = v;
        else if (!strcmp(o, "--split-seed")) { if (vf_cli_parse_u64(o, v, &split_seed)) return 2; split_seed_given = 1; }
        else if (!strcmp(o, "--embed-batch")) { if (vf_cli_parse_int(o, v, 1, 4096, &embed_batch)) return 2; }
        else if (!strcmp(o, "--device")) {
            if (vf_device_kind_parse(v, o, &device, &perr)) { fprintf(stderr, "vflclip evaluate: %s\n", perr.msg); return 2; }
        } else if (!strcmp(o, "--precision")) {
            if (vf_device_precision_parse(v, o, &precision, &perr)) { fprintf(stderr, "vflclip evaluate: %s\n", perr.msg); return 2; }
        }
        else { fprintf(stderr, "vflclip evaluate: unknown option %s\n", o); usage(stderr); return 2; }
    }
    if (scores || labels) {
        if (!scores || !labels) { fprintf(stderr, "vflclip evaluate: --scores and --labels go together\n"); return 2; }
        if (scores_out || backbone || run_name) {
            fprintf(stderr, "vflclip evaluate: --scores-out, --backbone and --run go with --model/--context/--data\n");
            return 2;
        }
        return evaluate_scores(scores, labels, out, figures);
    }
    if (!model || !context || !data) { usage(stderr); return 2; }
    vf_split split;
    if (vf_split_parse(split_name, &split)) { fprintf(stderr, "vflclip evaluate: --split %s: want train, val or test\n", split_name); return 2; }

    vf_error err = {{0}};
    vf_context_file cf;
    if (vf_context_load(context, &cf, &err)) { fprintf(stderr, "vflclip evaluate: %s\n", err.msg); return 1; }
    if (!split_seed_given) split_seed = cf.split_seed;   /* the split the context was trained on */
    vf_name_list codes;
    if (vf_name_list_parse(&codes, codes_csv, "class list", 2, &err)) { fprintf(stderr, "vflclip evaluate: %s\n", err.msg); vf_context_file_free(&cf); return 2; }
    int rc = 1;
    vf_coop *coop = NULL;
    vf_coop_setup s;
    vf_metrics m = {0};
    float *text = NULL, *probs = NULL;
    vf_loss_step ls;
    int ls_ok = 0;
    vf_coop_setup_options so = {.model_dir = model, .tokenizer = tokenizer, .data = data,
                                .class_codes = codes.n ? (const char *const *)codes.names : NULL, .n_classes = cf.n_classes,
                                .image_dir = image_dir, .split_seed = split_seed, .cache_dir = cache_dir,
                                .no_cache = no_cache, .embed_batch = embed_batch, .tty = isatty(2),
                                .device = device, .precision = precision};
    so.want[split] = 1;
    if (vf_coop_setup_open(&s, &so, &err)) { fprintf(stderr, "vflclip evaluate: %s\n", err.msg); goto out_noset; }
    if (cf.fingerprint[0] && strcmp(cf.fingerprint, s.fingerprint) != 0) {
        fprintf(stderr, "vflclip evaluate: %s was trained with model %.16s..., but %s is %.16s...\n", context,
                cf.fingerprint, model, s.fingerprint);
        goto out;
    }
    if (s.split[split].n == 0) { fprintf(stderr, "vflclip evaluate: %s: the %s split is empty\n", data, split_name); goto out; }
    vf_coop_config cc = vf_coop_config_default();
    cc.n_ctx = cf.n_ctx;
    cc.csc = cf.csc;
    cc.class_pos = cf.class_pos;
    cc.template_ = cf.template_;
    if (vf_coop_create(&coop, &cc, &s.text.w, s.tok, (const char *const *)cf.class_names, cf.n_classes, &err) ||
        vf_coop_set_ctx(coop, cf.ctx, cf.rows, cf.width, context, &err)) {
        fprintf(stderr, "vflclip evaluate: %s\n", err.msg);
        goto out;
    }
    const int C = cf.n_classes, D = vf_coop_feature_dim(coop);
    text = malloc((size_t)C * D * sizeof *text);
    probs = malloc((size_t)s.split[split].n * C * sizeof *probs);
    if (!text || !probs) { fprintf(stderr, "vflclip evaluate: out of memory\n"); goto out; }
    if (vf_coop_text_forward(coop, text, &err) || vf_loss_step_init(&ls, C, D, 256, &err)) {
        fprintf(stderr, "vflclip evaluate: %s\n", err.msg);
        goto out;
    }
    ls_ok = 1;
    char run_buf[256], ctx_dir[4096], bb_buf[256];
    if (!run_name) {   /* the run directory the context lives in */
        snprintf(ctx_dir, sizeof ctx_dir, "%s", context);
        char *sl = strrchr(ctx_dir, '/');
        if (sl) { *sl = '\0'; run_name = base_name(ctx_dir, run_buf, sizeof run_buf); }
        else run_name = "";
    }
    if (!backbone) backbone = base_name(model, bb_buf, sizeof bb_buf);
    const int64_t scores_shape[2] = {s.split[split].n, C};
    if (vf_metrics_init(&m, C, &err) ||
        vf_evaluate_split(&ls, &s.split[split], text, s.text.logit_scale, &m, probs, &err) ||
        emit(&m, (const char *const *)cf.class_names, out, &err) ||
        (png && vf_plot_confusion(png, "Confusion matrix", m.confusion, C, (const char *const *)cf.class_names, &err)) ||
        (out && figures && write_figures(out, run_name, backbone, split_name, &m, probs, s.split[split].labels,
                                         s.split[split].n, (const char *const *)cf.class_names, &err)) ||
        (scores_out && vf_npy_write_f32(scores_out, probs, 2, scores_shape, &err))) {
        fprintf(stderr, "vflclip evaluate: %s\n", err.msg);
        goto out;
    }
    rc = 0;
out:
    if (ls_ok) vf_loss_step_free(&ls);
    vf_metrics_free(&m);
    free(text);
    free(probs);
    vf_coop_free(coop);
    vf_coop_setup_close(&s);
out_noset:
    vf_name_list_free(&codes);
    vf_context_file_free(&cf);
    return rc;
}
