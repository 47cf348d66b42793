/* progress: the aggregator's durable run state, <state>/runs/<id>/progress.json,
 * rewritten atomically at every commit (after the knowledge party acknowledged
 * its own checkpoint of the same step) and when the run ends.  It holds who
 * the run is (id, state, parties) and the training session's state
 * (vf_train_session_state_to_json: position, losses, best, history).
 * <state>/current_run names the run a restarted aggregator resumes. */
#include "agg.h"
#include "formats/sealed_json.h"
#include "util/fileio.h"
#include "util/log.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int agg_progress_save(agg_run *r, vf_error *err) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "run_id", r->id);
    cJSON_AddStringToObject(o, "state", agg_run_state_name(r->state));
    cJSON_AddStringToObject(o, "message", r->message);
    cJSON_AddStringToObject(o, "knowledge_party", r->kp_name);
    cJSON *ip = cJSON_AddArrayToObject(o, "image_parties");
    for (int i = 0; i < r->n_img; i++) cJSON_AddItemToArray(ip, cJSON_CreateString(r->img[i].name));
    cJSON_AddNumberToObject(o, "started_unix", (double)r->started_unix);
    vf_train_session_state_to_json(&r->sess, o);
    char path[4500];
    snprintf(path, sizeof path, "%s/progress.json", r->dir);
    /* progress.json.prev keeps the commit a reader may need when this file
     * cannot serve: rotated when the committed step moves (an epoch end that
     * is also a checkpoint saves step N twice: both copies at N would leave
     * no earlier commit to fall back to), and when a commit is about to be
     * replaced by a position past it (an abort: `run continue` resumes from
     * that commit). */
    const int is_commit = r->sess.global_step == r->sess.committed_step;
    const int rotate = r->sess.committed_step != r->progress_file_step || (r->progress_file_is_commit && !is_commit);
    int rc = vf_sealed_json_write(path, o, rotate, err);
    cJSON_Delete(o);
    if (rc == 0) {
        r->progress_file_step = r->sess.committed_step;
        r->progress_file_is_commit = is_commit;
    }
    return rc;
}

static double num(const cJSON *o, const char *k, double def) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : def;
}

/* After a restart, before the session is set up: who the run is and how far
 * it got (for status; the session reads its own state once it exists). */
static void load_identity(agg_run *r, const char *run_dir, const cJSON *o) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "run_id"), *st = cJSON_GetObjectItemCaseSensitive(o, "state"),
                *kp = cJSON_GetObjectItemCaseSensitive(o, "knowledge_party"),
                *ip = cJSON_GetObjectItemCaseSensitive(o, "image_parties"), *msg = cJSON_GetObjectItemCaseSensitive(o, "message");
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
    vf_train_session *s = &r->sess;
    s->committed_step = (long)num(o, "committed_step", 0);
    s->global_step = (long)num(o, "global_step", 0);
    s->total_steps = (long)num(o, "total_steps", 0);
    s->epoch = (int)num(o, "epoch", 0);
    s->last_loss = num(o, "last_loss", NAN);
    s->best_auc = num(o, "best_val_auc", NAN);
}

/* progress.json, or where it is damaged or missing the copy before it
 * (progress.json.prev: an earlier commit, whose knowledge-party checkpoint
 * is still kept), said loudly. */
static cJSON *read_progress(const char *run_dir, vf_error *err) {
    char path[4500], prev[4600];
    snprintf(path, sizeof path, "%s/progress.json", run_dir);
    snprintf(prev, sizeof prev, "%s.prev", path);
    cJSON *o = vf_sealed_json_read(path, err);
    if (o) return o;
    vf_error e2;
    o = vf_sealed_json_read(prev, &e2);
    if (!o) {
        char first[sizeof err->msg];
        snprintf(first, sizeof first, "%s", err->msg);
        vf_fail(err, "%s; and the copy before it: %s", first, e2.msg);
        return NULL;
    }
    vf_log(VF_ERROR, "event=progress_damaged file=%s error=\"%s\" detail=\"falling back to %s, the commit before it\"", path,
           err->msg, prev);
    return o;
}

int agg_progress_load(agg_run *r, const char *run_dir, vf_error *err) {
    cJSON *o = read_progress(run_dir, err);
    if (!o) return -1;
    int rc = 0;
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "run_id")) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "state")) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "knowledge_party")) ||
        !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "image_parties")))
        rc = vf_fail(err, "%s/progress.json: run_id, state, knowledge_party or image_parties missing", run_dir);
    else if (!r->session_ready) load_identity(r, run_dir, o);
    else rc = vf_train_session_state_from_json(&r->sess, o, "progress.json", err);
    if (rc == 0) {
        r->progress_file_step = r->sess.committed_step;
        r->progress_file_is_commit = r->sess.global_step == r->sess.committed_step;
    }
    cJSON_Delete(o);
    return rc;
}

int agg_progress_restore_previous(agg_run *r, vf_error *err) {
    char path[4500], prev[4600];
    snprintf(path, sizeof path, "%s/progress.json", r->dir);
    snprintf(prev, sizeof prev, "%s.prev", path);
    cJSON *o = vf_sealed_json_read(prev, err);
    if (!o) return -1;
    int rc = vf_sealed_json_write(path, o, 0, err);
    cJSON_Delete(o);
    return rc ? rc : agg_progress_load(r, r->dir, err);
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
