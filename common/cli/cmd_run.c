/* cmd_run: `vflclip run start|watch|abort|results|list|show|continue`, the
 * operator's control of federated training runs through the aggregator's
 * Admin API (mutual TLS with an admin certificate): the current run, and
 * every run the aggregator keeps (list, show, results and continue of any
 * run id).  `start` takes the run configuration as an INI
 * file (--config RUN.ini, keys in daemon/run_config.h) or as flags, checks
 * it here against the same schema the aggregator uses, and sends it. */
#include "cli/admin_client.h"
#include "cli/commands.h"
#include "daemon/run_config.h"
#include "proto/admin.pb-c.h"
#include "util/log.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *o) {
    fprintf(o,
        "usage: vflclip run start (--config RUN.ini | [run flags]) [--run-id ID] [--watch]\n"
        "       vflclip run watch [--run-id ID]\n"
        "       vflclip run abort [--reason TEXT]\n"
        "       vflclip run results [ID] --out DIR      (any run of the history; default the current or last)\n"
        "       vflclip run list [--json]                 every run the aggregator keeps\n"
        "       vflclip run show [ID] [--json]            one run: settings, metrics, per-site results\n"
        "       vflclip run continue ID [--watch]         an aborted or failed run goes on from its last commit\n"
        "common: --admin admin.ini (default $VFLCLIP_ADMIN_CONFIG or ./admin.ini), --timeout-ms N\n"
        "run flags (each is the [run] key of the same name, see `vflclip run keys`):\n"
        "  --epochs N --batch-size N --lr X --optimizer adam|sgd --momentum X --weight-decay X --n-ctx N\n"
        "  --template T --init-words W --csc --class-pos end|middle|front --seed N --max-steps N\n"
        "  --image-parties a,b,c --party-timeout-s N --checkpoint-every N --warmup-epochs N --warmup K --warmup-lr X\n"
        "  privacy (docs/threat-model.md): --text-grad-accumulate K --text-grad-clip X --text-grad-noise X\n"
        "  --dp-delta X --epsilon-budget X --loss-at aggregator|image-parties\n"
        "  --share-classifier none|image-parties --warm-start RUN_ID (start from that run's best context)\n");
}

/* ---- start ------------------------------------------------------------------ */
static int build_config(int argc, char **argv, char **text, const char **run_id, int *watch) {
    static const char *const flags[][2] = {
        {"--epochs", "epochs"}, {"--batch-size", "batch_size"}, {"--lr", "lr"}, {"--optimizer", "optimizer"},
        {"--momentum", "momentum"}, {"--weight-decay", "weight_decay"}, {"--n-ctx", "n_ctx"}, {"--template", "template"},
        {"--init-words", "init_words"}, {"--class-pos", "class_pos"}, {"--seed", "seed"}, {"--max-steps", "max_steps"},
        {"--image-parties", "image_parties"}, {"--party-timeout-s", "party_timeout_s"},
        {"--checkpoint-every", "checkpoint_every"}, {"--warmup-epochs", "warmup_epochs"}, {"--warmup", "warmup"},
        {"--warmup-lr", "warmup_lr"}, {"--chunk-size", "chunk_size"}, {"--text-grad-accumulate", "text_grad_accumulate"},
        {"--text-grad-clip", "text_grad_clip"}, {"--text-grad-noise", "text_grad_noise"}, {"--dp-delta", "dp_delta"},
        {"--epsilon-budget", "epsilon_budget"}, {"--loss-at", "loss_at"}, {"--share-classifier", "share_classifier"},
        {"--warm-start", "warm_start"}};
    const char *config = NULL;
    size_t cap = 8192, used = 0;
    char *t = malloc(cap);
    used += (size_t)snprintf(t, cap, "[run]\n");
    int n_flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--watch")) { *watch = 1; continue; }
        if (!strcmp(o, "--csc")) { used += (size_t)snprintf(t + used, cap - used, "csc = true\n"); n_flags++; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip run start: %s needs a value (or is unknown)\n", o); free(t); return 2; }
        const char *v = argv[++i];
        if (!strcmp(o, "--config")) { config = v; continue; }
        if (!strcmp(o, "--run-id")) { *run_id = v; continue; }
        const char *key = NULL;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
            if (!strcmp(o, flags[k][0])) key = flags[k][1];
        if (!key) { fprintf(stderr, "vflclip run start: unknown option %s\n", o); usage(stderr); free(t); return 2; }
        if (strchr(v, '\n')) { fprintf(stderr, "vflclip run start: %s: value has a line break\n", o); free(t); return 2; }
        if (used + strlen(key) + strlen(v) + 8 > cap) { fprintf(stderr, "vflclip run start: options too long\n"); free(t); return 2; }
        used += (size_t)snprintf(t + used, cap - used, "%s = %s\n", key, v);
        n_flags++;
    }
    if (config) {
        if (n_flags) {
            fprintf(stderr, "vflclip run start: give the run either as --config %s or as flags, not both\n", config);
            free(t);
            return 2;
        }
        free(t);
        size_t len;
        vf_error err;
        if (vf_read_file(config, &t, &len, &err)) { fprintf(stderr, "vflclip run start: --config %s\n", err.msg); return 2; }
    }
    vf_run_config rc;
    vf_error err;
    if (vf_run_config_parse(t, config ? config : "run flags", &rc, &err)) {
        fprintf(stderr, "vflclip run start: %s\n", err.msg);
        free(t);
        return 2;
    }
    *text = t;
    return 0;
}

static void print_start(const uint8_t *d, size_t n, void *ud) {
    Vflclip__V1__StartRunReply *r = vflclip__v1__start_run_reply__unpack(NULL, n, d);
    if (!r) return;
    snprintf(ud, 64, "%s", r->run_id);
    vflclip__v1__start_run_reply__free_unpacked(r, NULL);
}

static int run_watch(const vf_admin *a, const char *run_id);

static int run_start(const vf_admin *a, int argc, char **argv) {
    char *text;
    const char *run_id = NULL;
    int watch = 0;
    int rc = build_config(argc, argv, &text, &run_id, &watch);
    if (rc) return rc;
    Vflclip__V1__StartRunRequest q = VFLCLIP__V1__START_RUN_REQUEST__INIT;
    q.config = text;
    q.run_id = (char *)(run_id ? run_id : "");
    char id[64] = "";
    vf_error err;
    int st = vf_admin_call(a, "/vflclip.v1.Admin/StartRun", &q.base, print_start, id, &err);
    free(text);
    if (st != 0) {
        fprintf(stderr, "vflclip run start: %s\n", err.msg);
        return 1;
    }
    printf("run_id=%s\n", id);
    fflush(stdout);
    return watch ? run_watch(a, id) : 0;
}

/* ---- watch ------------------------------------------------------------------ */
typedef struct watch_state {
    int tty, line_open;
    char final_state[64], message[512];
    int have_final;
} watch_state;

static double metric(const Vflclip__V1__RunEvent *e, const char *name) {
    for (size_t i = 0; i < e->n_metrics; i++)
        if (!strcmp(e->metrics[i]->name, name)) return e->metrics[i]->value;
    return NAN;
}

static void on_event(const uint8_t *d, size_t n, void *ud) {
    watch_state *w = ud;
    Vflclip__V1__RunEvent *e = vflclip__v1__run_event__unpack(NULL, n, d);
    if (!e) return;
    double ep = metric(e, "epoch"), eps = metric(e, "total_epochs"), tot = metric(e, "total_steps"),
           vauc = metric(e, "val_auc");
    char line[512];
    int len = snprintf(line, sizeof line, "[%s] %s", e->run_id[0] ? e->run_id : "-", e->state);
    if (isfinite(ep) && isfinite(eps) && eps > 0) len += snprintf(line + len, sizeof line - len, "  epoch %.0f/%.0f", ep, eps);
    if (isfinite(tot) && tot > 0) {
        int width = 20, fill = (int)(width * (double)e->step / tot + 0.5);
        if (fill > width) fill = width;
        len += snprintf(line + len, sizeof line - len, "  [%.*s%*s] step %llu/%.0f", fill, "####################",
                        width - fill, "", (unsigned long long)e->step, tot);
    }
    if (e->step > 0 && isfinite(e->loss)) len += snprintf(line + len, sizeof line - len, "  loss %.4f", e->loss);
    if (isfinite(vauc)) len += snprintf(line + len, sizeof line - len, "  val AUC %.4f", vauc);
    if (e->message[0]) len += snprintf(line + len, sizeof line - len, "  (%s)", e->message);
    int final = !strcmp(e->kind, "done");
    if (w->tty && !final && !strcmp(e->kind, "step")) {
        fprintf(stderr, "\r\033[K%s", line);
        w->line_open = 1;
    } else if (strcmp(e->kind, "step") || !w->tty) {
        if (w->line_open) fputc('\n', stderr);
        w->line_open = 0;
        if (strcmp(e->kind, "step") || e->step % 10 == 0) fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
    if (final) {
        w->have_final = 1;
        snprintf(w->final_state, sizeof w->final_state, "%s", e->state);
        snprintf(w->message, sizeof w->message, "%s", e->message);
        double tauc = metric(e, "test_auc"), tacc = metric(e, "test_acc"), best = metric(e, "best_val_auc");
        printf("{\"run_id\":\"%s\",\"state\":\"%s\",\"step\":%llu", e->run_id, e->state, (unsigned long long)e->step);
        if (isfinite(best)) printf(",\"best_val_auc\":%.6f", best);
        if (isfinite(tauc)) printf(",\"test_auc\":%.6f", tauc);
        if (isfinite(tacc)) printf(",\"test_acc\":%.6f", tacc);
        double epsilon = metric(e, "epsilon");
        if (isfinite(epsilon)) printf(",\"epsilon\":%.6f", epsilon);
        if (e->message[0]) {
            printf(",\"message\":\"");
            for (const char *c = e->message; *c; c++) printf(*c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
            printf("\"");
        }
        printf("}\n");
        fflush(stdout);
    }
    vflclip__v1__run_event__free_unpacked(e, NULL);
}

static int run_watch(const vf_admin *a, const char *run_id) {
    Vflclip__V1__WatchRunRequest q = VFLCLIP__V1__WATCH_RUN_REQUEST__INIT;
    q.run_id = (char *)(run_id ? run_id : "");
    watch_state w = {.tty = isatty(2)};
    vf_error err;
    int st = vf_admin_call(a, "/vflclip.v1.Admin/WatchRun", &q.base, on_event, &w, &err);
    if (w.line_open) fputc('\n', stderr);
    if (st != 0) {
        fprintf(stderr, "vflclip run watch: %s\n", err.msg);
        return 1;
    }
    if (!w.have_final) return 1;
    if (!strcmp(w.final_state, "done")) return 0;
    fprintf(stderr, "vflclip run watch: the run ended %s%s%s\n", w.final_state, w.message[0] ? ": " : "", w.message);
    return 1;
}

/* ---- abort ------------------------------------------------------------------ */
static void print_abort(const uint8_t *d, size_t n, void *ud) {
    Vflclip__V1__AbortRunReply *r = vflclip__v1__abort_run_reply__unpack(NULL, n, d);
    if (r) printf("state=%s\n", r->state);
    if (r) vflclip__v1__abort_run_reply__free_unpacked(r, NULL);
}

/* ---- results ---------------------------------------------------------------- */
typedef struct results_state {
    const char *out;
    int files, failed;
    vf_atomic_file f;
    int open;
    char name[256];
} results_state;

static void on_piece(const uint8_t *d, size_t n, void *ud) {
    results_state *s = ud;
    Vflclip__V1__ResultFile *r = vflclip__v1__result_file__unpack(NULL, n, d);
    vf_error err;
    if (!r || s->failed) goto out;
    if (!r->name[0] || strchr(r->name, '/') || r->name[0] == '.') {
        fprintf(stderr, "vflclip run results: the aggregator sent a bad file name '%s'\n", r->name);
        s->failed = 1;
        goto out;
    }
    if (r->offset == 0) {
        char path[4500];
        snprintf(path, sizeof path, "%s/%s", s->out, r->name);
        if (vf_atomic_open(&s->f, path, &err)) { fprintf(stderr, "vflclip run results: %s\n", err.msg); s->failed = 1; goto out; }
        s->open = 1;
        snprintf(s->name, sizeof s->name, "%s", r->name);
    }
    if (!s->open || strcmp(s->name, r->name) || vf_atomic_write(&s->f, r->data.data, r->data.len, &err)) {
        fprintf(stderr, "vflclip run results: %s: pieces out of order or write failed\n", r->name);
        if (s->open) vf_atomic_abort(&s->f);
        s->open = 0;
        s->failed = 1;
        goto out;
    }
    if (r->last) {
        if (vf_atomic_commit(&s->f, &err)) { fprintf(stderr, "vflclip run results: %s\n", err.msg); s->failed = 1; }
        else { printf("%s/%s\n", s->out, r->name); s->files++; }
        s->open = 0;
    }
out:
    if (r) vflclip__v1__result_file__free_unpacked(r, NULL);
}

static int run_results(const vf_admin *a, int argc, char **argv) {
    const char *out = NULL, *run_id = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--run-id") && i + 1 < argc) run_id = argv[++i];
        else if (argv[i][0] != '-' && !run_id[0]) run_id = argv[i];
        else { fprintf(stderr, "vflclip run results: unknown option %s\n", argv[i]); return 2; }
    }
    if (!out) { fprintf(stderr, "vflclip run results: --out DIR is required\n"); return 2; }
    vf_error err;
    if (vf_mkdirs(out, 0755, &err)) { fprintf(stderr, "vflclip run results: %s\n", err.msg); return 1; }
    Vflclip__V1__GetResultsRequest q = VFLCLIP__V1__GET_RESULTS_REQUEST__INIT;
    q.run_id = (char *)run_id;
    results_state s = {.out = out};
    int st = vf_admin_call(a, "/vflclip.v1.Admin/GetResults", &q.base, on_piece, &s, &err);
    if (s.open) vf_atomic_abort(&s.f);
    if (st != 0) { fprintf(stderr, "vflclip run results: %s\n", err.msg); return 1; }
    if (s.failed) return 1;
    fprintf(stderr, "vflclip run results: %d files in %s\n", s.files, out);
    return 0;
}

/* ---- the run history ------------------------------------------------------------ */
static void fmt_time(int64_t t, char *out, size_t size) {
    if (t <= 0) { snprintf(out, size, "-"); return; }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, size, "%Y-%m-%d %H:%M:%S", &tm);
}

static void fmt_num(double v, const char *fmt, char *out, size_t size) {
    if (isfinite(v)) snprintf(out, size, fmt, v);
    else snprintf(out, size, "-");
}

static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static cJSON *summary_json(const Vflclip__V1__RunSummary *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "run_id", s->run_id);
    cJSON_AddStringToObject(o, "state", s->state);
    cJSON_AddBoolToObject(o, "current", s->current);
    cJSON_AddNumberToObject(o, "started_unix", (double)s->started_unix);
    if (s->ended_unix) cJSON_AddNumberToObject(o, "ended_unix", (double)s->ended_unix);
    else cJSON_AddNullToObject(o, "ended_unix");
    cJSON_AddStringToObject(o, "model_fingerprint", s->model_fingerprint);
    cJSON_AddStringToObject(o, "knowledge_party", s->knowledge_party);
    cJSON *p = cJSON_AddArrayToObject(o, "image_parties");
    for (size_t i = 0; i < s->n_image_parties; i++) cJSON_AddItemToArray(p, cJSON_CreateString(s->image_parties[i]));
    add_num(o, "best_val_auc", s->best_val_auc);
    cJSON_AddNumberToObject(o, "best_epoch", s->best_epoch);
    add_num(o, "test_auc", s->test_auc);
    add_num(o, "test_acc", s->test_acc);
    add_num(o, "epsilon", s->epsilon);
    cJSON_AddNumberToObject(o, "step", (double)s->step);
    cJSON_AddNumberToObject(o, "total_steps", (double)s->total_steps);
    cJSON_AddStringToObject(o, "message", s->message);
    return o;
}

static void print_json(cJSON *o) {
    char *t = cJSON_PrintUnformatted(o);
    if (t) printf("%s\n", t);
    free(t);
    cJSON_Delete(o);
}

static void keep_list(const uint8_t *d, size_t n, void *ud) {
    *(Vflclip__V1__ListRunsReply **)ud = vflclip__v1__list_runs_reply__unpack(NULL, n, d);
}

static int run_list(const vf_admin *a, int argc, char **argv) {
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else { fprintf(stderr, "vflclip run list: unknown option %s\n", argv[i]); return 2; }
    }
    Vflclip__V1__ListRunsRequest q = VFLCLIP__V1__LIST_RUNS_REQUEST__INIT;
    Vflclip__V1__ListRunsReply *r = NULL;
    vf_error err;
    int st = vf_admin_call(a, "/vflclip.v1.Admin/ListRuns", &q.base, keep_list, &r, &err);
    if (st || !r) {
        fprintf(stderr, "vflclip run list: %s\n", st ? err.msg : "no answer from the aggregator");
        if (r) vflclip__v1__list_runs_reply__free_unpacked(r, NULL);
        return 1;
    }
    if (json) {
        cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "runs");
        for (size_t i = 0; i < r->n_runs; i++) cJSON_AddItemToArray(arr, summary_json(r->runs[i]));
        print_json(o);
    } else {
        printf("%-2s%-24s %-16s %-19s  %-19s  %-12s %-24s %8s %8s %8s %8s\n", "", "RUN", "STATE", "STARTED (UTC)",
               "ENDED (UTC)", "MODEL", "PARTIES", "BEST VAL", "TEST AUC", "TEST ACC", "EPSILON");
        for (size_t i = 0; i < r->n_runs; i++) {
            const Vflclip__V1__RunSummary *s = r->runs[i];
            char st[32], en[32], bv[16], ta[16], tc[16], ep[16], parties[256] = "";
            size_t used = 0;
            fmt_time(s->started_unix, st, sizeof st);
            fmt_time(s->ended_unix, en, sizeof en);
            fmt_num(s->best_val_auc, "%.4f", bv, sizeof bv);
            fmt_num(s->test_auc, "%.4f", ta, sizeof ta);
            fmt_num(s->test_acc, "%.4f", tc, sizeof tc);
            fmt_num(s->epsilon, "%.3g", ep, sizeof ep);
            for (size_t k = 0; k < s->n_image_parties && used < sizeof parties - 1; k++)
                used += (size_t)snprintf(parties + used, sizeof parties - used, "%s%s", k ? "," : "", s->image_parties[k]);
            printf("%-2s%-24s %-16s %-19s  %-19s  %-12.12s %-24s %8s %8s %8s %8s\n", s->current ? "*" : "", s->run_id,
                   s->state, st, en, s->model_fingerprint[0] ? s->model_fingerprint : "-", parties, bv, ta, tc, ep);
        }
        if (r->n_runs == 0) printf("  (no runs yet)\n");
    }
    vflclip__v1__list_runs_reply__free_unpacked(r, NULL);
    return 0;
}

static void keep_show(const uint8_t *d, size_t n, void *ud) {
    *(Vflclip__V1__ShowRunReply **)ud = vflclip__v1__show_run_reply__unpack(NULL, n, d);
}

/* One line of metrics from a metrics object ({"n", "acc", "auc", "balanced_acc", ...}). */
static void print_metrics_line(const char *label, const cJSON *m) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(m, "n"), *acc = cJSON_GetObjectItemCaseSensitive(m, "acc"),
                *auc = cJSON_GetObjectItemCaseSensitive(m, "auc"), *bal = cJSON_GetObjectItemCaseSensitive(m, "balanced_acc");
    char a[16], b[16], c[16];
    fmt_num(cJSON_IsNumber(auc) ? auc->valuedouble : NAN, "%.4f", a, sizeof a);
    fmt_num(cJSON_IsNumber(acc) ? acc->valuedouble : NAN, "%.4f", b, sizeof b);
    fmt_num(cJSON_IsNumber(bal) ? bal->valuedouble : NAN, "%.4f", c, sizeof c);
    printf("  %-28s %6d %8s %8s %12s\n", label, cJSON_IsNumber(n) ? n->valueint : 0, a, b, c);
}

static void print_confusion(const char *label, const cJSON *m, const cJSON *names) {
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(m, "confusion"), *row;
    if (!cJSON_IsArray(cm)) return;
    printf("  %s confusion (rows true, columns predicted%s):\n", label, cJSON_IsArray(names) ? ", classes in this order" : "");
    int k = 0;
    cJSON_ArrayForEach(row, cm) {
        const cJSON *name = cJSON_GetArrayItem(names, k++), *x;
        printf("    %-20.20s", cJSON_IsString(name) ? name->valuestring : "");
        cJSON_ArrayForEach(x, row) printf(" %6d", x->valueint);
        printf("\n");
    }
}

static int run_show(const vf_admin *a, int argc, char **argv) {
    int json = 0;
    const char *id = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--run-id") && i + 1 < argc) id = argv[++i];
        else if (argv[i][0] != '-' && !id[0]) id = argv[i];
        else { fprintf(stderr, "vflclip run show: unknown option %s\n", argv[i]); return 2; }
    }
    Vflclip__V1__ShowRunRequest q = VFLCLIP__V1__SHOW_RUN_REQUEST__INIT;
    q.run_id = (char *)id;
    Vflclip__V1__ShowRunReply *r = NULL;
    vf_error err;
    int call_rc = vf_admin_call(a, "/vflclip.v1.Admin/ShowRun", &q.base, keep_show, &r, &err);
    if (call_rc || !r || !r->summary) {
        fprintf(stderr, "vflclip run show: %s\n", call_rc ? err.msg : "the aggregator sent no summary");
        if (r) vflclip__v1__show_run_reply__free_unpacked(r, NULL);
        return 1;
    }
    const Vflclip__V1__RunSummary *s = r->summary;
    cJSON *settings = cJSON_Parse(r->settings_json), *test = cJSON_Parse(r->test_metrics_json),
          *sites = cJSON_Parse(r->site_metrics_json), *privacy = cJSON_Parse(r->privacy_json);
    if (json) {
        cJSON *o = summary_json(s);
        cJSON_AddItemToObject(o, "settings", settings ? settings : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "test_metrics", test ? test : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "site_metrics", sites ? sites : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "privacy", privacy ? privacy : cJSON_CreateNull());
        cJSON *epochs = cJSON_AddArrayToObject(o, "epochs");
        char *copy = strdup(r->metrics_jsonl), *save = NULL;
        for (char *line = copy ? strtok_r(copy, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
            cJSON *e = cJSON_Parse(line);
            if (e) cJSON_AddItemToArray(epochs, e);
        }
        free(copy);
        cJSON *files = cJSON_AddArrayToObject(o, "files");
        for (size_t i = 0; i < r->n_files; i++) cJSON_AddItemToArray(files, cJSON_CreateString(r->files[i]));
        print_json(o);
        vflclip__v1__show_run_reply__free_unpacked(r, NULL);
        return 0;
    }
    char st[32], en[32], bv[16], ep[16];
    fmt_time(s->started_unix, st, sizeof st);
    fmt_time(s->ended_unix, en, sizeof en);
    fmt_num(s->best_val_auc, "%.4f", bv, sizeof bv);
    fmt_num(s->epsilon, "%.4f", ep, sizeof ep);
    printf("run         %s%s\n", s->run_id, s->current ? " (current)" : "");
    printf("state       %s, step %llu/%llu%s%s\n", s->state, (unsigned long long)s->step, (unsigned long long)s->total_steps,
           s->message[0] ? ": " : "", s->message);
    printf("time        started %s UTC, ended %s%s\n", st, en, s->ended_unix ? " UTC" : "");
    printf("model       %s\n", s->model_fingerprint[0] ? s->model_fingerprint : "-");
    printf("parties     knowledge party %s; image parties", s->knowledge_party);
    for (size_t i = 0; i < s->n_image_parties; i++) printf("%s %s", i ? "," : "", s->image_parties[i]);
    printf("\nbest        val AUC %s at epoch %d; epsilon %s\n", bv, s->best_epoch, ep);
    if (settings) {
        const cJSON *run = cJSON_GetObjectItemCaseSensitive(settings, "run"), *x;
        const cJSON *ver = cJSON_GetObjectItemCaseSensitive(settings, "software_version");
        printf("settings    (run_settings.json, %s)\n", cJSON_IsString(ver) ? ver->valuestring : "?");
        cJSON_ArrayForEach(x, run) {
            char *v = cJSON_PrintUnformatted(x);
            printf("  %-22s %s\n", x->string, v ? v : "?");
            free(v);
        }
        const char *fps[] = {"model_fingerprint", "tokenizer_fingerprint", "preprocessing_fingerprint"};
        for (int i = 0; i < 3; i++) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(settings, fps[i]);
            printf("  %-22s %s\n", fps[i], cJSON_IsString(f) ? f->valuestring : "-");
        }
    }
    printf("results     %28s %6s %8s %8s %12s\n", "", "n", "AUC", "ACC", "balanced ACC");
    if (test) print_metrics_line("all sites, test", test);
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(sites, "class_names"), *site;
    const cJSON *site_list = cJSON_GetObjectItemCaseSensitive(sites, "sites");
    cJSON_ArrayForEach(site, site_list) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(site, "name");
        for (int k = 0; k < 2; k++) {
            const char *split = k ? "test" : "val";
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(site, split);
            if (!cJSON_IsObject(m)) continue;
            char label[160];
            snprintf(label, sizeof label, "%s, %s", cJSON_IsString(name) ? name->valuestring : "?", split);
            print_metrics_line(label, m);
        }
    }
    if (!test && !sites) printf("  (no final results: the run did not finish)\n");
    cJSON_ArrayForEach(site, site_list) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(site, "name"), *m = cJSON_GetObjectItemCaseSensitive(site, "test");
        char label[160];
        snprintf(label, sizeof label, "%s test", cJSON_IsString(name) ? name->valuestring : "?");
        if (cJSON_IsObject(m)) print_confusion(label, m, names);
    }
    printf("files       ");
    for (size_t i = 0; i < r->n_files; i++) printf("%s%s", i ? " " : "", r->files[i]);
    printf("\n");
    cJSON_Delete(settings);
    cJSON_Delete(test);
    cJSON_Delete(sites);
    cJSON_Delete(privacy);
    vflclip__v1__show_run_reply__free_unpacked(r, NULL);
    return 0;
}

static void keep_continue(const uint8_t *d, size_t n, void *ud) {
    *(Vflclip__V1__ContinueRunReply **)ud = vflclip__v1__continue_run_reply__unpack(NULL, n, d);
}

static int run_continue(const vf_admin *a, int argc, char **argv) {
    const char *id = NULL;
    int watch = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--watch")) watch = 1;
        else if (!strcmp(argv[i], "--run-id") && i + 1 < argc) id = argv[++i];
        else if (argv[i][0] != '-' && !id) id = argv[i];
        else { fprintf(stderr, "vflclip run continue: unknown option %s\n", argv[i]); return 2; }
    }
    if (!id) { fprintf(stderr, "vflclip run continue: which run? (vflclip run list shows them)\n"); return 2; }
    Vflclip__V1__ContinueRunRequest q = VFLCLIP__V1__CONTINUE_RUN_REQUEST__INIT;
    q.run_id = (char *)id;
    Vflclip__V1__ContinueRunReply *r = NULL;
    vf_error err;
    int st = vf_admin_call(a, "/vflclip.v1.Admin/ContinueRun", &q.base, keep_continue, &r, &err);
    if (st || !r) {
        fprintf(stderr, "vflclip run continue: %s\n", st ? err.msg : "no answer from the aggregator");
        if (r) vflclip__v1__continue_run_reply__free_unpacked(r, NULL);
        return 1;
    }
    printf("run_id=%s resume_step=%llu\n", r->run_id, (unsigned long long)r->resume_step);
    fflush(stdout);
    vflclip__v1__continue_run_reply__free_unpacked(r, NULL);
    return watch ? run_watch(a, id) : 0;
}

int vf_cmd_run(int argc, char **argv) {
    vf_log_set_level(VF_WARN);   /* connection chatter is for the daemons' logs */
    const char *admin_path = NULL;
    int timeout_ms = 0;
    argc = vf_admin_take_options(argc, argv, &admin_path, &timeout_ms);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "keys")) {
        vf_ini_print_schema(stdout, vf_run_config_schema);
        return 0;
    }
    vf_admin a;
    vf_error err;
    if (vf_admin_load(&a, admin_path, &err)) {
        fprintf(stderr, "vflclip run: %s\n", err.msg);
        return 2;
    }
    a.timeout_ms = timeout_ms;
    const char *sub = argv[1];
    if (!strcmp(sub, "start")) return run_start(&a, argc - 1, argv + 1);
    if (!strcmp(sub, "watch")) {
        const char *id = NULL;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--run-id") && i + 1 < argc) id = argv[++i];
            else { fprintf(stderr, "vflclip run watch: unknown option %s\n", argv[i]); return 2; }
        }
        return run_watch(&a, id);
    }
    if (!strcmp(sub, "abort")) {
        Vflclip__V1__AbortRunRequest q = VFLCLIP__V1__ABORT_RUN_REQUEST__INIT;
        q.reason = "";
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--reason") && i + 1 < argc) q.reason = argv[++i];
            else if (!strcmp(argv[i], "--run-id") && i + 1 < argc) q.run_id = argv[++i];
            else { fprintf(stderr, "vflclip run abort: unknown option %s\n", argv[i]); return 2; }
        }
        if (vf_admin_call(&a, "/vflclip.v1.Admin/AbortRun", &q.base, print_abort, NULL, &err)) {
            fprintf(stderr, "vflclip run abort: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    if (!strcmp(sub, "results")) return run_results(&a, argc - 1, argv + 1);
    if (!strcmp(sub, "list")) return run_list(&a, argc - 1, argv + 1);
    if (!strcmp(sub, "show")) return run_show(&a, argc - 1, argv + 1);
    if (!strcmp(sub, "continue")) return run_continue(&a, argc - 1, argv + 1);
    fprintf(stderr, "vflclip run: unknown subcommand '%s'\n", sub);
    usage(stderr);
    return 2;
}
