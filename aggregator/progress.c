/* progress: the aggregator's durable run state, <state>/runs/<id>/progress.json,
 * rewritten atomically at every commit (after the knowledge party acknowledged
 * its own checkpoint of the same step) and when the run ends.  It holds what
 * the training loop needs to carry on exactly where it was: epoch, step in
 * the epoch, global step, the epoch's loss sum so far, the best epoch and
 * AUC, and the per-epoch history behind metrics.jsonl and the plots.  The
 * batch order needs no state: it is a function of (seed, epoch).
 * <state>/current_run names the run a restarted aggregator resumes. */
#include "agg.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static cJSON *doubles(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, isfinite(v[i]) ? cJSON_CreateNumber(v[i]) : cJSON_CreateNull());
    return a;
}

static void read_doubles(const cJSON *a, double *v, int n) {
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(a, i);
        v[i] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    }
}

static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

int agg_progress_save(const agg_run *r, vf_error *err) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "run_id", r->id);
    cJSON_AddStringToObject(o, "state", agg_run_state_name(r->state));
    cJSON_AddStringToObject(o, "message", r->message);
    cJSON_AddStringToObject(o, "knowledge_party", r->kp_name);
    cJSON *ip = cJSON_AddArrayToObject(o, "image_parties");
    for (int i = 0; i < r->n_img; i++) cJSON_AddItemToArray(ip, cJSON_CreateString(r->img[i].name));
    cJSON_AddNumberToObject(o, "started_unix", (double)r->started_unix);
    cJSON_AddNumberToObject(o, "committed_step", (double)r->committed_step);
    cJSON_AddNumberToObject(o, "epoch", r->epoch);
    cJSON_AddNumberToObject(o, "step_in_epoch", r->step_in_epoch);
    cJSON_AddNumberToObject(o, "global_step", (double)r->global_step);
    cJSON_AddNumberToObject(o, "total_steps", (double)r->total_steps);
    cJSON_AddBoolToObject(o, "stop", r->stop);
    add_num(o, "loss_sum", r->loss_sum);
    add_num(o, "last_loss", r->last_loss);
    add_num(o, "first_loss", r->first_loss);
    add_num(o, "best_val_auc", r->best_auc);
    cJSON_AddNumberToObject(o, "best_epoch", r->best_epoch);
    cJSON_AddBoolToObject(o, "have_best", r->have_best);
    if (r->trainer_ready) {
        const vf_run_log *l = &r->log;
        cJSON *h = cJSON_AddObjectToObject(o, "history");
        cJSON_AddNumberToObject(h, "n", l->n);
        cJSON_AddItemToObject(h, "train_loss", doubles(l->train_loss, l->n));
        cJSON_AddItemToObject(h, "train_eval_loss", doubles(l->train_eval_loss, l->n));
        cJSON_AddItemToObject(h, "val_loss", doubles(l->val_loss, l->n));
        cJSON_AddItemToObject(h, "train_auc", doubles(l->train_auc, l->n));
        cJSON_AddItemToObject(h, "train_acc", doubles(l->train_acc, l->n));
        cJSON_AddItemToObject(h, "val_auc", doubles(l->val_auc, l->n));
        cJSON_AddItemToObject(h, "val_acc", doubles(l->val_acc, l->n));
        cJSON_AddStringToObject(h, "jsonl", l->jsonl ? l->jsonl : "");
    }
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return vf_fail(err, "out of memory");
    char path[4500];
    snprintf(path, sizeof path, "%s/progress.json", r->dir);
    int rc = vf_write_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

static double num(const cJSON *o, const char *k, double def) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : def;
}

int agg_progress_load(agg_run *r, const char *run_dir, vf_error *err) {
    char path[4500], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/progress.json", run_dir);
    if (vf_read_file(path, &text, &len, err)) return -1;
    cJSON *o = cJSON_Parse(text);
    free(text);
    if (!o) return vf_fail(err, "%s: not valid JSON", path);
    int rc = -1;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "run_id"), *st = cJSON_GetObjectItemCaseSensitive(o, "state"),
                *kp = cJSON_GetObjectItemCaseSensitive(o, "knowledge_party"),
                *ip = cJSON_GetObjectItemCaseSensitive(o, "image_parties"), *msg = cJSON_GetObjectItemCaseSensitive(o, "message");
    if (!cJSON_IsString(id) || !cJSON_IsString(st) || !cJSON_IsString(kp) || !cJSON_IsArray(ip)) {
        vf_fail(err, "%s: run_id, state, knowledge_party or image_parties missing", path);
        goto out;
    }
    if (!r->trainer_ready) {
        /* After a restart: who the run is, how far it got. */
        snprintf(r->id, sizeof r->id, "%s", id->valuestring);
        if (run_dir != r->dir) snprintf(r->dir, sizeof r->dir, "%s", run_dir);
        snprintf(r->kp_name, sizeof r->kp_name, "%s", kp->valuestring);
        if (cJSON_IsString(msg)) snprintf(r->message, sizeof r->message, "%s", msg->valuestring);
        r->n_img = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, ip) if (cJSON_IsString(e) && r->n_img < AGG_MAX_PARTIES)
            snprintf(r->img[r->n_img++].name, sizeof r->img[0].name, "%s", e->valuestring);
        r->state = RUN_FAILED;
        for (int s = RUN_IDLE; s <= RUN_FAILED; s++)
            if (!strcmp(st->valuestring, agg_run_state_name((agg_run_state)s))) r->state = (agg_run_state)s;
        r->started_unix = (int64_t)num(o, "started_unix", 0);
        r->committed_step = (long)num(o, "committed_step", 0);
        r->global_step = (long)num(o, "global_step", 0);
        r->total_steps = (long)num(o, "total_steps", 0);
        r->epoch = (int)num(o, "epoch", 0);
        r->last_loss = num(o, "last_loss", NAN);
        r->best_auc = num(o, "best_val_auc", NAN);
        rc = 0;
        goto out;
    }
    /* Training state of the last commit. */
    r->epoch = (int)num(o, "epoch", 0);
    r->step_in_epoch = (int)num(o, "step_in_epoch", 0);
    r->global_step = (long)num(o, "global_step", 0);
    r->committed_step = (long)num(o, "committed_step", 0);
    r->stop = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "stop"));
    r->loss_sum = num(o, "loss_sum", 0);
    r->last_loss = num(o, "last_loss", NAN);
    r->first_loss = num(o, "first_loss", NAN);
    r->best_auc = num(o, "best_val_auc", NAN);
    r->best_epoch = (int)num(o, "best_epoch", 0);
    r->have_best = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "have_best"));
    vf_run_log *l = &r->log;
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "history");
    l->n = 0;
    l->jsonl_len = 0;
    if (l->jsonl) l->jsonl[0] = 0;
    if (h) {
        int n = (int)num(h, "n", 0);
        if (n < 0 || n > l->max_epochs) {
            vf_fail(err, "%s: history of %d epochs for a run of %d", path, n, l->max_epochs);
            goto out;
        }
        l->n = n;
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "train_loss"), l->train_loss, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "train_eval_loss"), l->train_eval_loss, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "val_loss"), l->val_loss, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "train_auc"), l->train_auc, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "train_acc"), l->train_acc, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "val_auc"), l->val_auc, n);
        read_doubles(cJSON_GetObjectItemCaseSensitive(h, "val_acc"), l->val_acc, n);
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(h, "jsonl");
        if (cJSON_IsString(j) && j->valuestring[0]) {
            size_t n2 = strlen(j->valuestring);
            free(l->jsonl);
            l->jsonl = malloc(n2 + 4096);
            if (!l->jsonl) { vf_fail(err, "out of memory"); goto out; }
            memcpy(l->jsonl, j->valuestring, n2 + 1);
            l->jsonl_len = n2;
            l->jsonl_cap = n2 + 4096;
        }
    }
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

int agg_current_run_set(const char *run_id, vf_error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/current_run", g_agg.state_dir);
    char line[128];
    int n = snprintf(line, sizeof line, "%s\n", run_id);
    return vf_write_atomic(path, line, (size_t)n, err);
}

int agg_current_run_get(char *run_id, size_t size) {
    char path[4200], *text;
    size_t len;
    vf_error err;
    snprintf(path, sizeof path, "%s/current_run", g_agg.state_dir);
    if (vf_read_file(path, &text, &len, &err)) return -1;
    char *nl = strchr(text, '\n');
    if (nl) *nl = 0;
    snprintf(run_id, size, "%s", text);
    free(text);
    return run_id[0] ? 0 : -1;
}
