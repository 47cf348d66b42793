/* trainer_io: run-directory files (metrics.jsonl, test_metrics.json, plots)
 * and context files (context.safetensors with its description). */
#include "coop/trainer_io.h"
#include "coop/trainer.h"
#include "formats/safetensors.h"
#include "plot/plot.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- run log ------------------------------------------------------------ */
int vf_run_log_init(vf_run_log *l, const char *dir, int max_epochs, const char *const *class_names, int n_classes,
                    vf_error *err) {
    memset(l, 0, sizeof *l);
    snprintf(l->dir, sizeof l->dir, "%s", dir);
    l->max_epochs = max_epochs;
    l->class_names = class_names;
    l->n_classes = n_classes;
    vf_run_log_set_title(l, NULL, NULL);
    if (vf_mkdirs(dir, 0755, err)) return -1;
    double **arrays[] = {&l->train_loss, &l->train_eval_loss, &l->val_loss, &l->train_auc, &l->train_acc, &l->val_auc, &l->val_acc};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) {
        *arrays[i] = malloc((size_t)max_epochs * sizeof(double));
        if (!*arrays[i]) { vf_run_log_free(l); return vf_fail(err, "out of memory"); }
    }
    return 0;
}

void vf_run_log_free(vf_run_log *l) {
    free(l->train_loss); free(l->train_eval_loss); free(l->val_loss);
    free(l->train_auc); free(l->train_acc); free(l->val_auc); free(l->val_acc);
    free(l->jsonl);
    memset(l, 0, sizeof *l);
}

void vf_run_log_set_title(vf_run_log *l, const char *run, const char *backbone) {
    char dir_name[256] = "";
    if (!run) {   /* the run directory's last component */
        size_t n = strlen(l->dir);
        while (n > 1 && l->dir[n - 1] == '/') n--;
        size_t b = n;
        while (b > 0 && l->dir[b - 1] != '/') b--;
        snprintf(dir_name, sizeof dir_name, "%.*s", (int)(n - b), l->dir + b);
        if (!strcmp(dir_name, ".") || !strcmp(dir_name, "/")) dir_name[0] = '\0';
        run = dir_name;
    }
    int has_run = run && *run, has_bb = backbone && *backbone;
    snprintf(l->title, sizeof l->title, "%s%s%s%s", has_run ? "run " : "", has_run ? run : "",
             has_run && has_bb ? " \u00b7 " : "", has_bb ? backbone : "");
}

/* "PREFIX · WHAT" (or WHAT alone) into buf. */
static const char *fig_title(char *buf, size_t n, const char *prefix, const char *what) {
    if (prefix && *prefix) snprintf(buf, n, "%s \u00b7 %s", prefix, what);
    else snprintf(buf, n, "%s", what);
    return buf;
}

static int append_line(vf_run_log *l, const char *s, vf_error *err) {
    size_t n = strlen(s);
    if (l->jsonl_len + n + 2 > l->jsonl_cap) {
        size_t cap = l->jsonl_cap ? l->jsonl_cap : 4096;
        while (cap < l->jsonl_len + n + 2) cap *= 2;
        char *p = realloc(l->jsonl, cap);
        if (!p) return vf_fail(err, "out of memory");
        l->jsonl = p;
        l->jsonl_cap = cap;
    }
    memcpy(l->jsonl + l->jsonl_len, s, n);
    l->jsonl_len += n;
    l->jsonl[l->jsonl_len++] = '\n';
    l->jsonl[l->jsonl_len] = '\0';
    return 0;
}

static int write_plots(vf_run_log *l, vf_error *err) {
    char path[4400], title[700];
    const vf_plot_lines_options opt = {.mark_epoch = l->best_epoch};
    vf_plot_series metric[4] = {
        {"train AUC", l->train_auc, l->n, 0}, {"val AUC", l->val_auc, l->n, 1},
        {"train ACC", l->train_acc, l->n, 0}, {"val ACC", l->val_acc, l->n, 1},
    };
    snprintf(path, sizeof path, "%s/auc_acc.png", l->dir);
    if (vf_plot_lines_ex(path, fig_title(title, sizeof title, l->title, "AUC and ACC per epoch"), "epoch", "AUC / ACC",
                         metric, 4, 0, 1, &opt, err))
        return -1;
    vf_plot_series loss[3] = {
        {"train loss (mean over steps)", l->train_loss, l->n, 0},
        {"train loss (end of epoch)", l->train_eval_loss, l->n, 1},
        {"val loss", l->val_loss, l->n, 1},
    };
    snprintf(path, sizeof path, "%s/loss.png", l->dir);
    return vf_plot_lines_ex(path, fig_title(title, sizeof title, l->title, "Loss per epoch"), "epoch", "cross-entropy",
                            loss, 3, 0, 0, &opt, err);
}

int vf_run_log_epoch(vf_run_log *l, const vf_epoch_record *r, const vf_metrics *train, const vf_metrics *val,
                     vf_error *err) {
    if (l->n >= l->max_epochs) return vf_fail(err, "run log: more epochs than the %d planned", l->max_epochs);
    int e = l->n++;
    l->train_loss[e] = r->train_loss;
    l->train_eval_loss[e] = train->loss;
    l->train_auc[e] = train->auc;
    l->train_acc[e] = train->acc;
    l->val_loss[e] = val ? val->loss : NAN;
    l->val_auc[e] = val ? val->auc : NAN;
    l->val_acc[e] = val ? val->acc : NAN;
    l->best_epoch = r->best_epoch;

    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "epoch", r->epoch);
    cJSON_AddNumberToObject(o, "steps", r->steps);
    cJSON_AddNumberToObject(o, "lr", r->lr);
    cJSON_AddNumberToObject(o, "train_loss", r->train_loss);
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    cJSON_AddNumberToObject(o, "best_epoch", r->best_epoch);
    vf_metrics_add_to_json(cJSON_AddObjectToObject(o, "train"), train, NULL);
    if (val) vf_metrics_add_to_json(cJSON_AddObjectToObject(o, "val"), val, NULL);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line) return vf_fail(err, "out of memory");
    int rc = append_line(l, line, err);
    free(line);
    char path[4400];
    snprintf(path, sizeof path, "%s/metrics.jsonl", l->dir);
    if (rc == 0) rc = vf_write_atomic(path, l->jsonl, l->jsonl_len, err);
    if (rc == 0) rc = write_plots(l, err);
    return rc;
}

int vf_write_metrics_json(const char *path, const vf_metrics *m, const char *const *class_names, const char *extra_key,
                          int extra_value, vf_error *err) {
    cJSON *o = cJSON_CreateObject();
    vf_metrics_add_to_json(o, m, class_names);
    if (extra_key) cJSON_AddNumberToObject(o, extra_key, extra_value);
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    if (!s) return vf_fail(err, "%s: out of memory", path);
    size_t n = strlen(s);
    s[n] = '\n';   /* cJSON_Print leaves the NUL; replace it with a newline for the file */
    int rc = vf_write_atomic(path, s, n + 1, err);
    free(s);
    return rc;
}

int vf_run_log_test(vf_run_log *l, const vf_metrics *test, int best_epoch, vf_error *err) {
    char path[4400];
    snprintf(path, sizeof path, "%s/test_metrics.json", l->dir);
    return vf_write_metrics_json(path, test, l->class_names, "context_epoch", best_epoch, err);
}

int vf_run_log_sites(vf_run_log *l, const vf_site_rows *sites, int n_sites, const float *const scores[3],
                     const int *const labels[3], const int n[3], int context_epoch, vf_error *err) {
    static const char *const split_names[3] = {"train", "val", "test"};
    char path[4400];
    snprintf(path, sizeof path, "%s/site_metrics.json", l->dir);
    vf_metrics m;
    if (vf_metrics_init(&m, l->n_classes, err)) return -1;
    cJSON *o = cJSON_CreateObject(), *arr = o ? cJSON_AddArrayToObject(o, "sites") : NULL;
    int rc = arr ? 0 : vf_fail(err, "%s: out of memory", path);
    cJSON_AddNumberToObject(o, "context_epoch", context_epoch);
    if (!rc && l->class_names) {
        cJSON *names = cJSON_AddArrayToObject(o, "class_names");
        for (int k = 0; k < l->n_classes; k++) cJSON_AddItemToArray(names, cJSON_CreateString(l->class_names[k]));
    }
    for (int i = 0; i < n_sites && !rc; i++) {
        const vf_site_rows *st = &sites[i];
        cJSON *so = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, so);
        cJSON_AddStringToObject(so, "name", st->name);
        for (int k = 1; k < 3 && !rc; k++) {
            if (!scores[k] || !labels[k] || st->n[k] <= 0) {
                cJSON_AddNullToObject(so, split_names[k]);
                continue;
            }
            if (st->first[k] < 0 || st->first[k] > n[k] || st->n[k] > n[k] - st->first[k]) {
                rc = vf_fail(err, "%s: site '%s' claims %s rows %d..%d of %d", path, st->name, split_names[k], st->first[k],
                             st->first[k] + st->n[k], n[k]);
                break;
            }
            if (vf_metrics_for_rows(&m, scores[k], labels[k], st->first[k], st->n[k], err)) {
                rc = vf_error_prefix(err, "%s: site '%s' %s", path, st->name, split_names[k]);
                break;
            }
            cJSON *sm = cJSON_AddObjectToObject(so, split_names[k]);
            cJSON_AddNumberToObject(sm, "first_row", st->first[k]);
            vf_metrics_add_to_json(sm, &m, NULL);
        }
    }
    char *text = rc ? NULL : cJSON_Print(o);
    cJSON_Delete(o);
    vf_metrics_free(&m);
    if (rc) return rc;
    if (!text) return vf_fail(err, "%s: out of memory", path);
    size_t len = strlen(text);
    text[len] = '\n';   /* cJSON_Print leaves the NUL; replace it with a newline for the file */
    rc = vf_write_atomic(path, text, len + 1, err);
    free(text);
    return rc;
}

static int write_confusion(const char *prefix, const char *title_prefix, const char *split, const vf_metrics *m,
                           const char *const *class_names, vf_error *err) {
    char path[4400], what[200], title[800];
    snprintf(path, sizeof path, "%sconfusion_%s.png", prefix, split);
    snprintf(what, sizeof what, "%s: confusion matrix (ACC %.3f, AUC %.3f)", split, m->acc, m->auc);
    char nb[VF_METRICS_MAX_CLASSES][16];
    const char *fallback[VF_METRICS_MAX_CLASSES];
    if (!class_names) {
        for (int k = 0; k < m->n_classes && k < VF_METRICS_MAX_CLASSES; k++) {
            snprintf(nb[k], sizeof nb[k], "class %d", k);
            fallback[k] = nb[k];
        }
        class_names = fallback;
    }
    return vf_plot_confusion(path, fig_title(title, sizeof title, title_prefix, what), m->confusion, m->n_classes,
                             class_names, err);
}

int vf_run_log_confusion(vf_run_log *l, const char *split, const vf_metrics *m, vf_error *err) {
    char prefix[4200];
    snprintf(prefix, sizeof prefix, "%s/", l->dir);
    return write_confusion(prefix, l->title, split, m, l->class_names, err);
}

int vf_write_split_figures(const char *prefix, const char *title_prefix, const char *split, const vf_metrics *m,
                           const vf_roc *roc, const char *const *class_names, vf_error *err) {
    const int C = m->n_classes;
    char path[4400], what[200], title[800];
    if (roc && roc->n_classes != C)
        return vf_fail(err, "%sroc_%s: %d ROC curves for %d classes", prefix, split, roc->n_classes, C);
    if (write_confusion(prefix, title_prefix, split, m, class_names, err)) return -1;
    int64_t *support = malloc((size_t)C * sizeof *support);
    if (!support) return vf_fail(err, "out of memory");
    for (int k = 0; k < C; k++) {
        support[k] = 0;
        for (int j = 0; j < C; j++) support[k] += m->confusion[(size_t)k * C + j];
    }
    snprintf(path, sizeof path, "%srecall_%s.png", prefix, split);
    snprintf(what, sizeof what, "%s: recall per class (balanced accuracy %.3f)", split, m->balanced_acc);
    int rc = vf_plot_recall_bars(path, fig_title(title, sizeof title, title_prefix, what), m->class_recall, support, C,
                                 class_names, err);
    free(support);
    if (rc || !roc) return rc;
    snprintf(path, sizeof path, "%sroc_%s.json", prefix, split);
    if (vf_roc_write_json(path, roc, class_names, err)) return -1;
    snprintf(path, sizeof path, "%sroc_%s.png", prefix, split);
    snprintf(what, sizeof what, "%s: ROC per class (mean AUC %.3f)", split, m->auc);
    return vf_plot_roc(path, fig_title(title, sizeof title, title_prefix, what), roc, class_names, err);
}

int vf_run_log_final_figures(vf_run_log *l, const char *split, const vf_metrics *m, const vf_roc *roc, vf_error *err) {
    char prefix[4200];
    snprintf(prefix, sizeof prefix, "%s/", l->dir);
    return vf_write_split_figures(prefix, l->title, split, m, roc, l->class_names, err);
}

int vf_run_log_final_figures_scores(vf_run_log *l, const char *split, const vf_metrics *m, const float *scores,
                                    const int *labels, int n, vf_error *err) {
    vf_roc roc;
    int rc = vf_roc_from_scores(&roc, scores, labels, n, m->n_classes, err);
    if (rc) vf_error_prefix(err, "%s ROC", split);
    else rc = vf_run_log_final_figures(l, split, m, &roc, err);
    vf_roc_free(&roc);
    return rc;
}

int vf_run_log_final_figures_counts(vf_run_log *l, const char *split, const vf_metrics *m, const uint64_t *counts,
                                    const vf_auc_grid *grid, vf_error *err) {
    vf_roc roc;
    int rc = vf_roc_from_counts(&roc, counts, m->n_classes, grid, err);
    if (rc) vf_error_prefix(err, "%s ROC", split);
    else rc = vf_run_log_final_figures(l, split, m, &roc, err);
    vf_roc_free(&roc);
    return rc;
}

/* ---- context files ------------------------------------------------------ */
int vf_context_save(const char *path, const vf_coop *c_, const vf_context_info *info, vf_error *err) {
    vf_coop *c = (vf_coop *)c_;
    const int rows = vf_coop_ctx_rows(c), W = vf_coop_width(c), n_ctx = vf_coop_n_ctx(c);
    int64_t shape[3];
    int ndim;
    if (info->csc) { shape[0] = info->n_classes; shape[1] = n_ctx; shape[2] = W; ndim = 3; }
    else { shape[0] = rows; shape[1] = W; ndim = 2; }
    cJSON *names = cJSON_CreateArray();
    for (int k = 0; k < info->n_classes; k++) cJSON_AddItemToArray(names, cJSON_CreateString(info->class_names[k]));
    char *names_json = cJSON_PrintUnformatted(names);
    cJSON_Delete(names);
    char n_ctx_s[16], csc_s[4], epoch_s[16], auc_s[32], seed_s[32], split_seed_s[32], n_classes_s[16];
    snprintf(n_ctx_s, sizeof n_ctx_s, "%d", n_ctx);
    snprintf(n_classes_s, sizeof n_classes_s, "%d", info->n_classes);
    snprintf(csc_s, sizeof csc_s, "%d", info->csc ? 1 : 0);
    snprintf(epoch_s, sizeof epoch_s, "%d", info->epoch);
    snprintf(auc_s, sizeof auc_s, isnan(info->val_auc) ? "null" : "%.17g", info->val_auc);
    snprintf(seed_s, sizeof seed_s, "%llu", info->seed);
    snprintf(split_seed_s, sizeof split_seed_s, "%llu", info->split_seed);
    vf_st_writer w;
    vf_st_writer_init(&w);
    vf_st_writer_checksum(&w);   /* a state file: a torn or flipped copy is refused on load */
    int rc = names_json ? 0 : vf_fail(err, "%s: out of memory", path);
    if (!rc) rc = vf_st_writer_add_f32(&w, "ctx", VF_DT_F32, ndim, shape, vf_coop_ctx(c), err);
    const char *meta[][2] = {
        {"format", "vflclip-coop-context-1"},
        {"template", info->template_ ? info->template_ : ""},
        {"class_names", names_json ? names_json : "[]"},
        {"n_classes", n_classes_s},
        {"n_ctx", n_ctx_s},
        {"csc", csc_s},
        {"class_pos", vf_class_pos_name(info->class_pos)},
        {"init_words", info->init_words ? info->init_words : ""},
        {"model_fingerprint", info->model_fingerprint ? info->model_fingerprint : ""},
        {"epoch", epoch_s},
        {"val_auc", auc_s},
        {"seed", seed_s},
        {"split_seed", split_seed_s},
    };
    for (size_t i = 0; i < sizeof meta / sizeof *meta && !rc; i++) rc = vf_st_writer_meta(&w, meta[i][0], meta[i][1], err);
    if (!rc) rc = vf_st_writer_save(&w, path, err);
    vf_st_writer_free(&w);
    free(names_json);
    return rc;
}

static int meta_int(const vf_safetensors *st, const char *key, int lo, int hi, int *out, vf_error *err) {
    const char *v = vf_st_meta(st, key);
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < lo || x > hi)
        return vf_fail(err, "%s: metadata '%s' is %s%s%s (want an integer in %d..%d)", st->path, key, v ? "'" : "missing",
                       v ? v : "", v ? "'" : "", lo, hi);
    *out = (int)x;
    return 0;
}

void vf_context_file_free(vf_context_file *f) {
    if (f->class_names)
        for (int k = 0; k < f->n_classes; k++) free(f->class_names[k]);
    free(f->class_names);
    free(f->template_);
    free(f->init_words);
    free(f->fingerprint);
    free(f->ctx);
    memset(f, 0, sizeof *f);
}

int vf_context_load(const char *path, vf_context_file *f, vf_error *err) {
    memset(f, 0, sizeof *f);
    vf_safetensors st;
    if (vf_st_open(&st, path, err)) return -1;
    int rc = -1;
    const char *fmt = vf_st_meta(&st, "format");
    if (!fmt || strcmp(fmt, "vflclip-coop-context-1") != 0) {
        vf_fail(err, "%s: not a vflclip context file (metadata format is %s)", path, fmt ? fmt : "missing");
        goto done;
    }
    const char *tmpl = vf_st_meta(&st, "template"), *names = vf_st_meta(&st, "class_names");
    const char *pos = vf_st_meta(&st, "class_pos"), *fp = vf_st_meta(&st, "model_fingerprint");
    const char *words = vf_st_meta(&st, "init_words");
    if (!tmpl || !names || !pos) { vf_fail(err, "%s: metadata lacks template, class_names or class_pos", path); goto done; }
    if (meta_int(&st, "n_ctx", 1, 77, &f->n_ctx, err) || meta_int(&st, "csc", 0, 1, &f->csc, err) ||
        meta_int(&st, "n_classes", 2, 4096, &f->n_classes, err))
        goto done;
    if (vf_class_pos_parse(pos, &f->class_pos, err)) { vf_error_prefix(err, "%s: metadata class_pos", path); goto done; }
    cJSON *arr = cJSON_Parse(names);
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != f->n_classes) {
        cJSON_Delete(arr);
        vf_fail(err, "%s: metadata class_names is not a JSON array of %d names", path, f->n_classes);
        goto done;
    }
    f->class_names = calloc(f->n_classes, sizeof *f->class_names);
    for (int k = 0; f->class_names && k < f->n_classes; k++) {
        cJSON *it = cJSON_GetArrayItem(arr, k);
        f->class_names[k] = cJSON_IsString(it) ? strdup(it->valuestring) : NULL;
    }
    cJSON_Delete(arr);
    for (int k = 0; k < f->n_classes; k++)
        if (!f->class_names || !f->class_names[k]) { vf_fail(err, "%s: class_names entry %d is not a string", path, k); goto done; }
    const char *ss = vf_st_meta(&st, "split_seed");
    f->split_seed = ss ? strtoull(ss, NULL, 10) : 0;
    f->template_ = strdup(tmpl);
    f->init_words = words && *words ? strdup(words) : NULL;
    f->fingerprint = strdup(fp ? fp : "");
    const vf_st_tensor *t = vf_st_require(&st, "ctx", err);
    if (!t) goto done;
    if (f->csc ? (t->ndim != 3 || t->shape[0] != f->n_classes || t->shape[1] != f->n_ctx)
               : (t->ndim != 2 || t->shape[0] != f->n_ctx)) {
        vf_fail(err, "%s: tensor ctx has the wrong shape for n_ctx %d, csc %d, %d classes", path, f->n_ctx, f->csc,
                f->n_classes);
        goto done;
    }
    f->width = (int)t->shape[t->ndim - 1];
    f->rows = (int)(t->numel / f->width);
    f->ctx = malloc((size_t)t->numel * sizeof(float));
    if (!f->ctx) { vf_fail(err, "%s: out of memory", path); goto done; }
    if (vf_st_read_f32(&st, "ctx", t->ndim, t->shape, f->ctx, err)) goto done;
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(f->ctx[i])) { vf_fail(err, "%s: ctx element %lld is not finite", path, (long long)i); goto done; }
    rc = 0;
done:
    vf_st_close(&st);
    if (rc) vf_context_file_free(f);
    return rc;
}
