/* classifier: the run's product, its file, scoring and calibration. */
#include "coop/classifier.h"
#include "formats/safetensors.h"
#include "plot/plot.h"
#include "util/fileio.h"
#include "util/sha256.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT_TAG "vflclip-classifier-1"

static int is_hex64(const char *s) {
    if (!s || strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

void vf_classifier_free(vf_classifier *k) {
    if (k->class_names)
        for (int c = 0; c < k->C; c++) free(k->class_names[c]);
    free(k->class_names);
    free(k->text);
    free(k->metrics_json);
    memset(k, 0, sizeof *k);
}

int vf_classifier_set_metrics(vf_classifier *k, const char *metrics_json, vf_error *err) {
    const char *js = metrics_json ? metrics_json : "{}";
    cJSON *o = cJSON_Parse(js);
    int ok = o && cJSON_IsObject(o);
    cJSON_Delete(o);
    if (!ok) return vf_fail(err, "classifier metrics: not a JSON object");
    char *copy = strdup(js);
    if (!copy) return vf_fail(err, "out of memory");
    free(k->metrics_json);
    k->metrics_json = copy;
    return 0;
}

/* Normalises the rows of k->text in place; a zero or non-finite row is an error. */
static int normalise_rows(vf_classifier *k, const char *what, vf_error *err) {
    for (int c = 0; c < k->C; c++) {
        float *r = k->text + (size_t)c * k->D;
        double ss = 0;
        for (int j = 0; j < k->D; j++) ss += (double)r[j] * r[j];
        if (!(ss > 0) || !isfinite(ss)) return vf_fail(err, "%s: text feature of class %d is zero or not finite", what, c);
        float inv = (float)(1.0 / sqrt(ss));
        for (int j = 0; j < k->D; j++) r[j] *= inv;
    }
    return 0;
}

int vf_classifier_init(vf_classifier *k, const float *text, int C, int D, float logit_scale,
                       const char *const *class_names, const char *template_, const char *model_fingerprint,
                       const char *preprocessing_fingerprint, const char *run_id, const char *metrics_json,
                       vf_error *err) {
    memset(k, 0, sizeof *k);
    if (C < 2 || D < 1) return vf_fail(err, "classifier: needs at least 2 classes and D >= 1 (C=%d, D=%d)", C, D);
    if (!isfinite(logit_scale)) return vf_fail(err, "classifier: the logit scale is not finite");
    if (!is_hex64(model_fingerprint)) return vf_fail(err, "classifier: the model fingerprint is not 64 hex digits");
    if (preprocessing_fingerprint && preprocessing_fingerprint[0] && !is_hex64(preprocessing_fingerprint))
        return vf_fail(err, "classifier: the preprocessing fingerprint is not 64 hex digits");
    k->C = C;
    k->D = D;
    k->logit_scale = logit_scale;
    k->temperature = 1.0f;
    k->text = malloc((size_t)C * D * sizeof(float));
    k->class_names = calloc((size_t)C, sizeof(char *));
    if (!k->text || !k->class_names) { vf_classifier_free(k); return vf_fail(err, "out of memory"); }
    memcpy(k->text, text, (size_t)C * D * sizeof(float));
    for (int c = 0; c < C; c++)
        if (!(k->class_names[c] = strdup(class_names[c]))) { vf_classifier_free(k); return vf_fail(err, "out of memory"); }
    unsigned char h[32];
    vf_sha256(template_, strlen(template_), h);
    vf_sha256_to_hex(h, k->template_sha256);
    snprintf(k->model_fingerprint, sizeof k->model_fingerprint, "%s", model_fingerprint);
    snprintf(k->preprocessing_fingerprint, sizeof k->preprocessing_fingerprint, "%s",
             preprocessing_fingerprint ? preprocessing_fingerprint : "");
    snprintf(k->run_id, sizeof k->run_id, "%s", run_id ? run_id : "");
    if (normalise_rows(k, "classifier", err) || vf_classifier_set_metrics(k, metrics_json, err)) {
        vf_classifier_free(k);
        return -1;
    }
    return 0;
}

int vf_classifier_save(const vf_classifier *k, const char *path, vf_error *err) {
    int64_t shape[2] = {k->C, k->D};
    char ls[64], tp[64];
    snprintf(ls, sizeof ls, "%a", (double)k->logit_scale);
    snprintf(tp, sizeof tp, "%a", (double)k->temperature);
    cJSON *names = cJSON_CreateArray();
    for (int c = 0; names && c < k->C; c++) cJSON_AddItemToArray(names, cJSON_CreateString(k->class_names[c]));
    char *names_js = names ? cJSON_PrintUnformatted(names) : NULL;
    cJSON_Delete(names);
    if (!names_js) return vf_fail(err, "%s: out of memory", path);
    vf_st_writer w;
    vf_st_writer_init(&w);
    vf_st_writer_checksum(&w);
    int rc = vf_st_writer_add_f32(&w, "text", VF_DT_F32, 2, shape, k->text, err) ||
             vf_st_writer_meta(&w, "format", FORMAT_TAG, err) ||
             vf_st_writer_meta(&w, "class_names", names_js, err) ||
             vf_st_writer_meta(&w, "template_sha256", k->template_sha256, err) ||
             vf_st_writer_meta(&w, "model_fingerprint", k->model_fingerprint, err) ||
             vf_st_writer_meta(&w, "preprocessing_fingerprint", k->preprocessing_fingerprint, err) ||
             vf_st_writer_meta(&w, "run_id", k->run_id, err) ||
             vf_st_writer_meta(&w, "metrics", k->metrics_json ? k->metrics_json : "{}", err) ||
             vf_st_writer_meta(&w, "logit_scale", ls, err) ||
             vf_st_writer_meta(&w, "temperature", tp, err) ||
             vf_st_writer_save(&w, path, err);
    vf_st_writer_free(&w);
    free(names_js);
    return rc ? -1 : 0;
}

static int meta_float(const vf_safetensors *st, const char *key, float *out, vf_error *err) {
    const char *v = vf_st_meta(st, key);
    if (!v) return vf_fail(err, "%s: metadata %s is missing", st->path, key);
    char *end;
    double d = strtod(v, &end);
    if (*end || end == v || !isfinite(d)) return vf_fail(err, "%s: metadata %s '%s' is not a finite number", st->path, key, v);
    *out = (float)d;
    return 0;
}

int vf_classifier_load(vf_classifier *k, const char *path, vf_error *err) {
    memset(k, 0, sizeof *k);
    vf_safetensors st;
    if (vf_st_open(&st, path, err)) return -1;
    int rc = -1;
    cJSON *names = NULL;
    const char *fmt = vf_st_meta(&st, "format");
    if (!fmt || strcmp(fmt, FORMAT_TAG) != 0) {
        vf_fail(err, "%s: not a vflclip classifier (metadata format is %s, want %s)", path, fmt ? fmt : "missing", FORMAT_TAG);
        goto out;
    }
    const vf_st_tensor *t = vf_st_require(&st, "text", err);
    if (!t) goto out;
    if (t->ndim != 2 || t->shape[0] < 2 || t->shape[0] > 4096 || t->shape[1] < 1 || t->shape[1] > 65536) {
        vf_fail(err, "%s: tensor text must be (C, D) with 2 <= C <= 4096 and 1 <= D <= 65536", path);
        goto out;
    }
    const int C = (int)t->shape[0], D = (int)t->shape[1];
    const char *nj = vf_st_meta(&st, "class_names");
    names = nj ? cJSON_Parse(nj) : NULL;
    if (!cJSON_IsArray(names) || cJSON_GetArraySize(names) != C) {
        vf_fail(err, "%s: metadata class_names must be a JSON array of %d names", path, C);
        goto out;
    }
    k->C = C;
    k->D = D;
    k->text = malloc((size_t)C * D * sizeof(float));
    k->class_names = calloc((size_t)C, sizeof(char *));
    if (!k->text || !k->class_names) { vf_fail(err, "out of memory"); goto out; }
    for (int c = 0; c < C; c++) {
        const cJSON *n = cJSON_GetArrayItem(names, c);
        if (!cJSON_IsString(n)) { vf_fail(err, "%s: class_names[%d] is not a string", path, c); goto out; }
        if (!(k->class_names[c] = strdup(n->valuestring))) { vf_fail(err, "out of memory"); goto out; }
    }
    int64_t shape[2] = {C, D};
    if (vf_st_read_f32(&st, "text", 2, shape, k->text, err)) goto out;
    if (normalise_rows(k, path, err)) goto out;
    static const char *const hex_keys[] = {"template_sha256", "model_fingerprint", "preprocessing_fingerprint"};
    char *hex_dst[] = {k->template_sha256, k->model_fingerprint, k->preprocessing_fingerprint};
    for (int i = 0; i < 3; i++) {
        const char *v = vf_st_meta(&st, hex_keys[i]);
        if (!v) { vf_fail(err, "%s: metadata %s is missing", path, hex_keys[i]); goto out; }
        if (!is_hex64(v) && !(i == 2 && !v[0])) { vf_fail(err, "%s: metadata %s is not 64 hex digits", path, hex_keys[i]); goto out; }
        snprintf(hex_dst[i], 65, "%s", v);
    }
    const char *rid = vf_st_meta(&st, "run_id");
    snprintf(k->run_id, sizeof k->run_id, "%s", rid ? rid : "");
    if (meta_float(&st, "logit_scale", &k->logit_scale, err) || meta_float(&st, "temperature", &k->temperature, err)) goto out;
    if (!(k->temperature > 0)) { vf_fail(err, "%s: metadata temperature must be > 0", path); goto out; }
    if (vf_classifier_set_metrics(k, vf_st_meta(&st, "metrics"), err)) {
        vf_error_prefix(err, "%s: ", path);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(names);
    vf_st_close(&st);
    if (rc) vf_classifier_free(k);
    return rc;
}

int vf_classifier_cosines(const vf_classifier *k, const float *emb, int N, float *cos, vf_error *err) {
    for (int i = 0; i < N; i++) {
        const float *x = emb + (size_t)i * k->D;
        double ss = 0;
        for (int j = 0; j < k->D; j++) ss += (double)x[j] * x[j];
        if (!(ss > 0) || !isfinite(ss)) return vf_fail(err, "image embedding %d is zero or not finite", i);
        double inv = 1.0 / sqrt(ss);
        for (int c = 0; c < k->C; c++) {
            const float *t = k->text + (size_t)c * k->D;
            double d = 0;
            for (int j = 0; j < k->D; j++) d += (double)x[j] * t[j];
            cos[(size_t)i * k->C + c] = (float)(d * inv);
        }
    }
    return 0;
}

void vf_classifier_probs_from_cosines(const float *cos, int N, int C, double scale, float *probs) {
    for (int i = 0; i < N; i++) {
        const float *z = cos + (size_t)i * C;
        float *p = probs + (size_t)i * C;
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < C; c++) mx = fmax(mx, scale * z[c]);
        for (int c = 0; c < C; c++) sum += exp(scale * z[c] - mx);
        for (int c = 0; c < C; c++) p[c] = (float)(exp(scale * z[c] - mx) / sum);
    }
}

int vf_classifier_scores(const vf_classifier *k, const float *emb, int N, float *probs, vf_error *err) {
    /* cosines first into probs (same shape), then the softmax in place row by row */
    if (vf_classifier_cosines(k, emb, N, probs, err)) return -1;
    vf_classifier_probs_from_cosines(probs, N, k->C, exp((double)k->logit_scale) / k->temperature, probs);
    return 0;
}

double vf_calibration(const float *probs, const int *labels, int N, int C, int n_bins, long *count, double *conf,
                      double *acc) {
    long cnt[256] = {0};
    double sc[256] = {0}, sa[256] = {0};
    if (n_bins < 1) n_bins = 1;
    if (n_bins > 256) n_bins = 256;
    for (int i = 0; i < N; i++) {
        const float *p = probs + (size_t)i * C;
        int arg = 0;
        for (int c = 1; c < C; c++)
            if (p[c] > p[arg]) arg = c;
        double q = p[arg];
        /* bin b holds (b/n, (b+1)/n]; 0 goes to the first bin */
        int b = (int)ceil(q * n_bins) - 1;
        if (b < 0) b = 0;
        if (b >= n_bins) b = n_bins - 1;
        cnt[b]++;
        sc[b] += q;
        sa[b] += arg == labels[i];
    }
    double ece = 0;
    for (int b = 0; b < n_bins; b++) {
        double mc = cnt[b] ? sc[b] / cnt[b] : NAN, ma = cnt[b] ? sa[b] / cnt[b] : NAN;
        if (cnt[b]) ece += (double)cnt[b] / N * fabs(ma - mc);
        if (count) count[b] = cnt[b];
        if (conf) conf[b] = mc;
        if (acc) acc[b] = ma;
    }
    return N > 0 ? ece : NAN;
}

static double mean_nll(const float *cos, const int *labels, int N, int C, double scale) {
    double tot = 0;
    for (int i = 0; i < N; i++) {
        const float *z = cos + (size_t)i * C;
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < C; c++) mx = fmax(mx, scale * z[c]);
        for (int c = 0; c < C; c++) sum += exp(scale * z[c] - mx);
        tot += mx + log(sum) - scale * z[labels[i]];
    }
    return N > 0 ? tot / N : NAN;
}

double vf_fit_temperature(const float *cos, const int *labels, int N, int C, float logit_scale, double *nll_before,
                          double *nll_after) {
    const double s = exp((double)logit_scale);
    /* NLL is convex in beta = 1/t (logits linear in beta): golden section on beta in [1/100, 100] */
    double a = 0.01, b = 100.0;
    const double g = (sqrt(5.0) - 1) / 2;
    double x1 = b - g * (b - a), x2 = a + g * (b - a);
    double f1 = mean_nll(cos, labels, N, C, s * x1), f2 = mean_nll(cos, labels, N, C, s * x2);
    for (int it = 0; it < 200 && b - a > 1e-7 * (1 + fabs(a)); it++) {
        if (f1 <= f2) { b = x2; x2 = x1; f2 = f1; x1 = b - g * (b - a); f1 = mean_nll(cos, labels, N, C, s * x1); }
        else { a = x1; x1 = x2; f1 = f2; x2 = a + g * (b - a); f2 = mean_nll(cos, labels, N, C, s * x2); }
    }
    double beta = (a + b) / 2;
    double before = mean_nll(cos, labels, N, C, s), after = mean_nll(cos, labels, N, C, s * beta);
    if (!(after <= before)) { beta = 1; after = before; }   /* never worse than none */
    if (nll_before) *nll_before = before;
    if (nll_after) *nll_after = after;
    return 1.0 / beta;
}

int vf_classifier_calibration_report(const vf_classifier *k, const float *emb, const int *labels, int N,
                                     const char *split_name, const char *png, char **json, vf_error *err) {
    *json = NULL;
    const int nb = VF_ECE_BINS, C = k->C;
    float *cos = malloc((size_t)(N ? N : 1) * C * sizeof(float)), *p = malloc((size_t)(N ? N : 1) * C * sizeof(float));
    long cnt[VF_ECE_BINS];
    double conf[VF_ECE_BINS], acc[VF_ECE_BINS];
    int rc = -1;
    cJSON *o = NULL;
    if (!cos || !p) { vf_fail(err, "out of memory"); goto out; }
    if (vf_classifier_cosines(k, emb, N, cos, err)) goto out;
    const double s = exp((double)k->logit_scale);
    vf_classifier_probs_from_cosines(cos, N, C, s, p);
    double ece_raw = vf_calibration(p, labels, N, C, nb, NULL, NULL, NULL);
    vf_classifier_probs_from_cosines(cos, N, C, s / k->temperature, p);
    double ece = vf_calibration(p, labels, N, C, nb, cnt, conf, acc);
    if (png) {
        char title[160];
        snprintf(title, sizeof title, "Reliability (%s, T = %.3g, ECE = %.4f)", split_name, (double)k->temperature, ece);
        if (vf_plot_reliability(png, title, cnt, conf, acc, nb, err)) goto out;
    }
    o = cJSON_CreateObject();
    if (!o) { vf_fail(err, "out of memory"); goto out; }
    cJSON_AddStringToObject(o, "split", split_name);
    cJSON_AddNumberToObject(o, "n", N);
    cJSON_AddNumberToObject(o, "bins", nb);
    cJSON_AddNumberToObject(o, "temperature", k->temperature);
    if (isnan(ece)) cJSON_AddNullToObject(o, "ece"); else cJSON_AddNumberToObject(o, "ece", ece);
    if (isnan(ece_raw)) cJSON_AddNullToObject(o, "ece_uncalibrated"); else cJSON_AddNumberToObject(o, "ece_uncalibrated", ece_raw);
    cJSON *rel = cJSON_AddObjectToObject(o, "reliability");
    cJSON *jc = cJSON_AddArrayToObject(rel, "count"), *jf = cJSON_AddArrayToObject(rel, "confidence"),
          *ja = cJSON_AddArrayToObject(rel, "accuracy");
    for (int b = 0; b < nb; b++) {
        cJSON_AddItemToArray(jc, cJSON_CreateNumber((double)cnt[b]));
        cJSON_AddItemToArray(jf, isnan(conf[b]) ? cJSON_CreateNull() : cJSON_CreateNumber(conf[b]));
        cJSON_AddItemToArray(ja, isnan(acc[b]) ? cJSON_CreateNull() : cJSON_CreateNumber(acc[b]));
    }
    *json = cJSON_PrintUnformatted(o);
    if (!*json) { vf_fail(err, "out of memory"); goto out; }
    rc = 0;
out:
    cJSON_Delete(o);
    free(cos);
    free(p);
    return rc;
}

int vf_classifier_finish_run(vf_classifier *k, const char *out_dir, const vf_embedded_split *val,
                             const vf_embedded_split *test, int fit_temperature, double *ece, vf_error *err) {
    char path[4200];
    if (ece) *ece = NAN;
    cJSON *cal = cJSON_CreateObject(), *metrics = cJSON_CreateObject();
    char *rep = NULL, *txt = NULL, *js = NULL;
    float *cos = NULL;
    int rc = -1;
    if (!cal || !metrics) { vf_fail(err, "out of memory"); goto out; }
    if (fit_temperature && val && val->n > 0) {
        cos = malloc((size_t)val->n * k->C * sizeof(float));
        if (!cos) { vf_fail(err, "out of memory"); goto out; }
        if (vf_classifier_cosines(k, val->emb, val->n, cos, err)) goto out;
        double before, after;
        k->temperature = (float)vf_fit_temperature(cos, val->labels, val->n, k->C, k->logit_scale, &before, &after);
        cJSON *f = cJSON_AddObjectToObject(cal, "temperature_fit");
        cJSON_AddStringToObject(f, "split", "val");
        cJSON_AddNumberToObject(f, "n", val->n);
        cJSON_AddNumberToObject(f, "temperature", k->temperature);
        cJSON_AddNumberToObject(f, "nll_before", before);
        cJSON_AddNumberToObject(f, "nll_after", after);
    }
    cJSON_AddNumberToObject(cal, "temperature", k->temperature);
    const vf_embedded_split *ev = test && test->n > 0 ? test : val && val->n > 0 ? val : NULL;
    if (ev) {
        snprintf(path, sizeof path, "%s/reliability.png", out_dir);
        if (vf_classifier_calibration_report(k, ev->emb, ev->labels, ev->n, ev == test ? "test" : "val", path, &rep, err))
            goto out;
        cJSON *r = cJSON_Parse(rep);
        if (!r) { vf_fail(err, "out of memory"); goto out; }
        if (ece) *ece = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "ece"));
        cJSON_AddItemToObject(cal, "evaluation", r);
    }
    snprintf(path, sizeof path, "%s/test_metrics.json", out_dir);
    size_t len;
    vf_error ignore;
    if (vf_read_file(path, &txt, &len, &ignore) == 0) {
        cJSON *t = cJSON_Parse(txt);
        if (cJSON_IsObject(t)) cJSON_AddItemToObject(metrics, "test", t);
        else cJSON_Delete(t);
    }
    cJSON_AddItemReferenceToObject(metrics, "calibration", cal);
    js = cJSON_PrintUnformatted(metrics);
    char *cal_js = cJSON_Print(cal);
    if (!js || !cal_js) { free(cal_js); vf_fail(err, "out of memory"); goto out; }
    snprintf(path, sizeof path, "%s/calibration.json", out_dir);
    size_t cl = strlen(cal_js);
    cal_js[cl] = '\n';   /* replaces the terminator; written with its length */
    int wrc = vf_write_atomic(path, cal_js, cl + 1, err);
    free(cal_js);
    if (wrc) goto out;
    if (vf_classifier_set_metrics(k, js, err)) goto out;
    snprintf(path, sizeof path, "%s/%s", out_dir, VF_CLASSIFIER_FILE);
    if (vf_classifier_save(k, path, err)) goto out;
    rc = 0;
out:
    cJSON_Delete(metrics);
    cJSON_Delete(cal);
    free(rep);
    free(txt);
    free(js);
    free(cos);
    return rc;
}
