/* run_control: starting a run (the operator's configuration checked, the
 * parties chosen, their models compared, the run directory created and the
 * start audited), aborting it, and picking up after an aggregator restart
 * the run named in <state>/current_run.  The run itself is run.c. */
#include "agg.h"
#include "daemon/audit.h"
#include "daemon/notify.h"
#include "daemon/run_settings.h"
#include "formats/sealed_json.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/sha256.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- start, abort, restart ------------------------------------------------------ */
int agg_valid_run_id(const char *s) {
    if (!*s || strlen(s) > 60 || s[0] == '.' || s[0] == '-') return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

static int cmp_names(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

int agg_run_start(const char *config_text, const char *run_id, const vf_peer_identity *who, char *out_id, size_t out_size,
                  int *grpc_status, vf_error *err) {
    agg_run *r = &g_agg.run;
    *grpc_status = VF_GRPC_FAILED_PRECONDITION;
    if (agg_run_active()) return vf_fail(err, "run %s is %s; abort it first", r->id, agg_run_state_name(r->state));
    vf_run_config cfg;
    if (vf_run_config_parse(config_text, "run config", &cfg, err)) {
        *grpc_status = VF_GRPC_INVALID_ARGUMENT;
        return -1;
    }
    /* the knowledge party: exactly one */
    agg_party *kp = NULL;
    for (int i = 0; i < AGG_MAX_PARTIES; i++) {
        agg_party *p = &g_agg.parties[i];
        if (!p->used || !p->hello_ok || p->id.role != VF_ROLE_KNOWLEDGE_PARTY) continue;
        if (kp) return vf_fail(err, "two knowledge parties are connected ('%s', '%s'); a run needs exactly one", kp->id.name, p->id.name);
        kp = p;
    }
    if (!kp) return vf_fail(err, "no knowledge party is connected");
    /* the image parties: as listed, or every one connected, by name */
    if (cfg.n_parties == 0) {
        /* "every one connected" must not quietly mean "every one that found a slot" */
        if (g_agg.refused_full)
            return vf_fail(err, "%llu Hello(s) were refused since the aggregator started because all %d party slots were "
                           "taken ([server] max_parties): name the run's image_parties, or raise max_parties and restart",
                           g_agg.refused_full, g_agg.max_parties);
        for (int i = 0; i < AGG_MAX_PARTIES; i++) {
            agg_party *p = &g_agg.parties[i];
            if (!p->used || !p->hello_ok || p->id.role != VF_ROLE_IMAGE_PARTY) continue;
            if (cfg.n_parties == VF_RUN_MAX_PARTIES)
                return vf_fail(err, "more than %d image parties are connected; name the run's image_parties", VF_RUN_MAX_PARTIES);
            snprintf(cfg.parties[cfg.n_parties++], sizeof cfg.parties[0], "%s", p->id.name);
        }
        qsort(cfg.parties, (size_t)cfg.n_parties, sizeof cfg.parties[0], cmp_names);
    }
    if (cfg.n_parties == 0) return vf_fail(err, "no image party is connected");
    for (int i = 0; i < cfg.n_parties; i++) {
        agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, cfg.parties[i]);
        if (!p) return vf_fail(err, "image party '%s' is not connected", cfg.parties[i]);
        if (strcmp(p->fingerprint, kp->fingerprint))
            return vf_fail(err, "image party '%s' runs model %.16s but knowledge party '%s' runs %.16s: the vision and "
                           "text towers must come from the same checkpoint", p->id.name, p->fingerprint, kp->id.name,
                           kp->fingerprint);
        agg_party *first = agg_party_find(VF_ROLE_IMAGE_PARTY, cfg.parties[0]);
        if (strcmp(p->pp_fingerprint, first->pp_fingerprint))
            return vf_fail(err, "image party '%s' preprocesses its images differently from image party '%s' "
                           "(preprocessing fingerprints %.16s and %.16s): their embeddings cannot be trained on together",
                           p->id.name, first->id.name, p->pp_fingerprint, first->pp_fingerprint);
        if (p->embed_dim != kp->embed_dim)
            return vf_fail(err, "image party '%s' produces %u-dim embeddings but the text tower of knowledge party '%s' "
                           "projects to %u", p->id.name, p->embed_dim, kp->id.name, kp->embed_dim);
    }
    char id[64];
    if (run_id && *run_id) {
        if (!agg_valid_run_id(run_id)) {
            *grpc_status = VF_GRPC_INVALID_ARGUMENT;
            return vf_fail(err, "run id '%s' must be 1-60 characters of [A-Za-z0-9._-]", run_id);
        }
        snprintf(id, sizeof id, "%s", run_id);
    } else {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(id, sizeof id, "run-%Y%m%d-%H%M%S", &tm);
    }
    char dir[4400], path[4500];
    snprintf(dir, sizeof dir, "%s/runs/%s", g_agg.state_dir, id);
    struct stat st;
    if (stat(dir, &st) == 0) {
        *grpc_status = VF_GRPC_ALREADY_EXISTS;
        return vf_fail(err, "run '%s' already exists in %s", id, dir);
    }
    if (vf_mkdirs(dir, 0750, err)) return -1;
    snprintf(path, sizeof path, "%s/run.ini", dir);
    if (vf_write_atomic(path, config_text, strlen(config_text), err)) return -1;

    agg_run_free(r);
    r->cfg = cfg;
    r->config_text = strdup(config_text);
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    snprintf(r->kp_name, sizeof r->kp_name, "%s", kp->id.name);
    snprintf(r->model_fp, sizeof r->model_fp, "%s", kp->fingerprint);
    snprintf(r->tok_fp, sizeof r->tok_fp, "%s", kp->tok_fingerprint);
    snprintf(r->pp_fp, sizeof r->pp_fp, "%s", agg_party_find(VF_ROLE_IMAGE_PARTY, cfg.parties[0])->pp_fingerprint);
    if (agg_run_settings_write(NULL, err)) {
        agg_run_free(r);
        return -1;
    }
    r->n_img = cfg.n_parties;
    for (int i = 0; i < cfg.n_parties; i++) snprintf(r->img[i].name, sizeof r->img[i].name, "%s", cfg.parties[i]);
    r->started_unix = (int64_t)time(NULL);
    r->sess.best_auc = NAN;
    r->state = RUN_SETUP;
    agg_transcript_open();
    if (agg_progress_save(r, err) || agg_current_run_set(id, err)) {
        r->state = RUN_FAILED;
        return -1;
    }
    char details[1024];
    snprintf(details, sizeof details, "run=%s knowledge_party=%s image_parties=%d epochs=%d batch=%d lr=%g seed=%llu", id,
             r->kp_name, r->n_img, cfg.epochs, cfg.batch_size, cfg.schedule.base_lr, cfg.seed);
    if (vf_audit(g_agg.audit_path, "run_start", who, details, err)) vf_log(VF_ERROR, "event=audit_failed error=\"%s\"", err->msg);
    vf_log(VF_INFO, "event=run_start run=%s peer=%s %s", id, who ? who->name : "local", details);
    snprintf(out_id, out_size, "%s", id);
    vf_notify_status("run %s started", id);
    agg_admin_event("state", "started");
    agg_run_continue();
    return 0;
}

int agg_run_abort(const char *reason, const vf_peer_identity *who, vf_error *err) {
    agg_run *r = &g_agg.run;
    if (!agg_run_active()) return vf_fail(err, "no run is in progress");
    char details[768];
    snprintf(details, sizeof details, "run=%s step=%ld reason=\"%s\"", r->id, r->sess.global_step, reason && *reason ? reason : "");
    vf_error aerr;
    if (vf_audit(g_agg.audit_path, "run_abort", who, details, &aerr)) vf_log(VF_ERROR, "event=audit_failed error=\"%s\"", aerr.msg);
    char msg[600];
    snprintf(msg, sizeof msg, "aborted by %s %s%s%s", who ? vf_role_name(who->role) : "operator", who ? who->name : "",
             reason && *reason ? ": " : "", reason ? reason : "");
    agg_run_end(RUN_ABORTED, msg);
    return 0;
}

int agg_run_settings_write(const char *kp_template, vf_error *err) {
    agg_run *r = &g_agg.run;
    vf_run_settings s = {.program = "vflclip-aggregator", .run_id = r->id, .cfg = &r->cfg, .template_ = kp_template,
                         .config_text = r->config_text, .model_fingerprint = r->model_fp, .tokenizer_fingerprint = r->tok_fp,
                         .preprocessing_fingerprint = r->pp_fp, .knowledge_party = r->kp_name,
                         .class_names = (const char *const *)r->class_names, .n_classes = r->C};
    return vf_run_settings_write(r->dir, &s, err);
}

static void resume_run(const char *id);

/* After a restart: the run that was going on carries on once its parties are back. */
void agg_run_resume_at_start(void) {
    char id[64];
    if (agg_current_run_get(id, sizeof id)) return;
    resume_run(id);
}

/* The run in <state>/runs/<id> carries on from its committed progress once
 * its parties are back (a restarted aggregator, `vflclip run continue`). */
static void resume_run(const char *id) {
    agg_run *r = &g_agg.run;
    char path[4500];
    vf_error err;
    /* A run that cannot be picked up stays in status as failed, with the
     * reason, and its files stay as they are for the operator. */
    if (!agg_valid_run_id(id)) {
        r->state = RUN_FAILED;
        snprintf(r->id, sizeof r->id, "?");
        snprintf(r->message, sizeof r->message, "needs attention: %s/current_run names no valid run id", g_agg.state_dir);
        vf_log(VF_ERROR, "event=resume_failed error=\"%s\"", r->message);
        return;
    }
    snprintf(r->dir, sizeof r->dir, "%s/runs/%s", g_agg.state_dir, id);
    if (agg_progress_load(r, r->dir, &err)) {
        snprintf(r->id, sizeof r->id, "%s", id);
        r->state = RUN_FAILED;
        snprintf(r->message, sizeof r->message, "needs attention: cannot resume: %s", err.msg);
        vf_log(VF_ERROR, "event=resume_failed run=%s error=\"%s\"", id, err.msg);
        return;
    }
    if (agg_run_terminal()) {
        vf_log(VF_INFO, "event=last_run run=%s state=%s", r->id, agg_run_state_name(r->state));
        return;
    }
    char *text;
    size_t len;
    snprintf(path, sizeof path, "%s/run.ini", r->dir);
    if (vf_read_file(path, &text, &len, &err) || vf_run_config_parse(text, path, &r->cfg, &err)) {
        r->state = RUN_FAILED;
        snprintf(r->message, sizeof r->message, "cannot resume: %s", err.msg);
        vf_log(VF_ERROR, "event=resume_failed run=%s error=\"%s\"", id, err.msg);
        return;
    }
    r->config_text = text;
    r->state = RUN_SETUP;
    r->sess.best_auc = NAN;
    agg_transcript_open();
    vf_log(VF_INFO, "event=run_resuming run=%s committed_step=%ld detail=\"waiting for its parties\"", r->id, r->sess.committed_step);
    agg_run_continue();
}

/* ---- continuing a run of the history ----------------------------------------------- */
static uint64_t json_u64(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) && x->valuedouble >= 0 ? (uint64_t)x->valuedouble : 0;
}

/* The run's committed progress, made the current progress.json with the
 * state "setup": progress.json when it is a commit (its position is the
 * committed step), else progress.json.prev, the commit before it (an abort
 * writes the position it reached, past the last commit). */
static int reopen_progress(const char *dir, uint64_t *step, vf_error *err) {
    char path[4500], prev[4600];
    snprintf(path, sizeof path, "%s/progress.json", dir);
    snprintf(prev, sizeof prev, "%s.prev", path);
    vf_error e1;
    cJSON *o = vf_sealed_json_read(path, &e1);
    if (o && json_u64(o, "global_step") != json_u64(o, "committed_step")) {
        uint64_t committed = json_u64(o, "committed_step");
        cJSON_Delete(o);
        o = vf_sealed_json_read(prev, err);
        if (!o) return vf_error_prefix(err, "%s is past its last commit (step %" PRIu64 ") and the commit", path, committed);
        uint64_t at = json_u64(o, "global_step");
        if (at != committed || json_u64(o, "committed_step") != committed) {
            cJSON_Delete(o);
            return vf_fail(err, "%s holds step %" PRIu64 ", not the committed step %" PRIu64 " of %s", prev, at, committed, path);
        }
    } else if (!o) {
        o = vf_sealed_json_read(prev, err);
        if (!o) return vf_error_prefix(err, "%s; and the copy before it", e1.msg);
        if (json_u64(o, "global_step") != json_u64(o, "committed_step")) {
            cJSON_Delete(o);
            return vf_fail(err, "%s is damaged (%s) and %s is not a commit", path, e1.msg, prev);
        }
    }
    *step = json_u64(o, "committed_step");
    cJSON_ReplaceItemInObjectCaseSensitive(o, "state", cJSON_CreateString(agg_run_state_name(RUN_SETUP)));
    cJSON_ReplaceItemInObjectCaseSensitive(o, "message", cJSON_CreateString(""));
    /* .prev is left as it is: the commit the knowledge party can fall back to */
    int rc = vf_sealed_json_write(path, o, 0, err);
    cJSON_Delete(o);
    return rc;
}

/* The transcript of the ended part is signed and complete: it is kept as
 * transcript.<k>.jsonl (with its .head), and the part that follows gets a
 * transcript of its own that starts, as every transcript does, with the
 * run_start record (SHA-256 of run.ini); resume_run adds run_resume. */
static int new_transcript_part(const char *dir, const char *id, const char *config_text, vf_error *err) {
    char path[4500], head[4600], old[4600], old_head[4700];
    snprintf(path, sizeof path, "%s/transcript.jsonl", dir);
    snprintf(head, sizeof head, "%s.head", path);
    if (access(path, F_OK) == 0) {
        for (int k = 1;; k++) {
            snprintf(old, sizeof old, "%s/transcript.%d.jsonl", dir, k);
            if (access(old, F_OK) != 0) break;
        }
        snprintf(old_head, sizeof old_head, "%s.head", old);
        if (rename(path, old)) return vf_fail_errno(err, path);
        if (access(head, F_OK) == 0 && rename(head, old_head)) return vf_fail_errno(err, head);
        vf_log(VF_INFO, "event=transcript_part_kept run=%s file=%s", id, old);
    }
    vf_transcript t;
    if (vf_transcript_open(&t, path, id, err)) return -1;
    vf_transcript_entry e = {.sender = g_agg.me.serial_hex, .receiver = "-", .kind = VF_TRANSCRIPT_RUN_START};
    vf_sha256(config_text, strlen(config_text), e.sha256);
    int rc = vf_transcript_append(&t, &e, err) || vf_transcript_commit(&t, err) ? -1 : 0;
    vf_transcript_close(&t);
    return rc;
}

int agg_run_continue_from(const char *run_id, const vf_peer_identity *who, uint64_t *resume_step, int *grpc_status,
                          vf_error *err) {
    agg_run *r = &g_agg.run;
    *grpc_status = VF_GRPC_FAILED_PRECONDITION;
    if (agg_run_active()) return vf_fail(err, "run %s is %s; it must end before another run goes on", r->id, agg_run_state_name(r->state));
    if (!agg_valid_run_id(run_id)) {
        *grpc_status = VF_GRPC_INVALID_ARGUMENT;
        return vf_fail(err, "run id '%s' must be 1-60 characters of [A-Za-z0-9._-]", run_id);
    }
    char dir[4400], path[4500];
    snprintf(dir, sizeof dir, "%s/runs/%s", g_agg.state_dir, run_id);
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        *grpc_status = VF_GRPC_NOT_FOUND;
        return vf_fail(err, "no run '%s' in %s/runs", run_id, g_agg.state_dir);
    }
    /* What the run's files say it is: only an aborted or failed run goes on. */
    static agg_run probe;   /* large: not on the stack */
    memset(&probe, 0, sizeof probe);
    if (agg_progress_load(&probe, dir, err)) return vf_error_prefix(err, "run '%s' cannot go on", run_id);
    if (probe.state == RUN_DONE) return vf_fail(err, "run '%s' is done; start a new run instead", run_id);
    int stale = !(probe.state == RUN_ABORTED || probe.state == RUN_FAILED);
    if (stale && !(r->state == RUN_FAILED && !strcmp(r->id, run_id)))
        return vf_fail(err, "run '%s' is %s, not aborted or failed", run_id, agg_run_state_name(probe.state));
    char *text;
    size_t len;
    vf_run_config cfg;
    snprintf(path, sizeof path, "%s/run.ini", dir);
    if (vf_read_file(path, &text, &len, err)) return -1;
    int rc = vf_run_config_parse(text, path, &cfg, err);
    if (rc == 0) rc = reopen_progress(dir, resume_step, err);
    if (rc == 0) rc = new_transcript_part(dir, run_id, text, err);
    free(text);
    if (rc || agg_current_run_set(run_id, err)) return -1;
    char details[512];
    snprintf(details, sizeof details, "run=%s was=%s resume_step=%" PRIu64, run_id, agg_run_state_name(probe.state), *resume_step);
    vf_error aerr;
    if (vf_audit(g_agg.audit_path, "run_continue", who, details, &aerr)) vf_log(VF_ERROR, "event=audit_failed error=\"%s\"", aerr.msg);
    vf_log(VF_INFO, "event=run_continue peer=%s %s", who ? who->name : "local", details);
    agg_run_free(r);
    resume_run(run_id);
    if (r->state == RUN_FAILED) return vf_fail(err, "%s", r->message);
    agg_admin_event("state", "continued");
    return 0;
}
