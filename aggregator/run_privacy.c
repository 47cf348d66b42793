/* run_privacy: what the aggregator keeps for privacy and accountability:
 * the run's transcript (every message of an active run, hash-chained, signed
 * when the run ends, checked before a resumed run goes on;
 * transcript/transcript.h) and privacy.json (the dL/dT
 * guard's settings and epsilon, each image party's embedding DP from its
 * Hello; privacy/privacy_report.h). */
#include "agg.h"
#include "daemon/audit.h"
#include "privacy/embed_dp.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/sha256.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One of the aggregator's own records (run_start, run_resume,
 * operator_decision): receiver "-", the SHA-256 of `text`. */
static int own_record(const char *kind, const char *text, vf_error *err) {
    agg_run *r = &g_agg.run;
    vf_transcript_entry e = {.sender = g_agg.me.serial_hex, .receiver = "-", .kind = kind, .step = (uint64_t)r->sess.committed_step};
    vf_sha256((const unsigned char *)(text ? text : ""), text ? strlen(text) : 0, e.sha256);
    return vf_transcript_append(&r->transcript, &e, err);
}

/* A transcript that cannot be continued stops the run here, before any
 * message: status shows why and what the operator can do.  Progress is not
 * saved as failed, so the same restart (with or without a decision) tries
 * again. */
static void refuse_run(const char *fmt, const char *what, const char *dir) {
    agg_run *r = &g_agg.run;
    r->state = RUN_FAILED;
    snprintf(r->message, sizeof r->message, fmt, what, dir);
    vf_log(VF_ERROR, "event=transcript_refused run=%s error=\"%s\"", r->id, r->message);
}

/* Opens the run's transcript.  A new run: the run_start record (SHA-256 of
 * run.ini), a durable head mark, and a Welcome naming the run to every
 * connected party, so each party's log marks where the run begins.  A
 * resumed run (progress.json exists): the transcript must verify against its
 * own chain and head mark; a truncated, damaged or missing one refuses the
 * run unless the operator wrote a reason to <run dir>/transcript-continue,
 * which is then recorded (operator_decision, SHA-256 of the reason; the
 * reason itself in the audit log) and consumed. */
void agg_transcript_open(void) {
    agg_run *r = &g_agg.run;
    char path[4500], progress[4500], decision_path[4500];
    vf_error err;
    snprintf(path, sizeof path, "%s/transcript.jsonl", r->dir);
    snprintf(progress, sizeof progress, "%s/progress.json", r->dir);
    snprintf(decision_path, sizeof decision_path, "%s/transcript-continue", r->dir);
    int resuming = access(progress, F_OK) == 0;
    if (!resuming) {
        if (vf_transcript_open(&r->transcript, path, r->id, &err) ||
            own_record(VF_TRANSCRIPT_RUN_START, r->config_text, &err) || vf_transcript_commit(&r->transcript, &err)) {
            vf_transcript_close(&r->transcript);
            return refuse_run("cannot keep the run's transcript: %s%s", err.msg, "");
        }
        for (int i = 0; i < AGG_MAX_PARTIES; i++) {
            agg_party *p = &g_agg.parties[i];
            if (!p->used || !p->hello_ok) continue;
            Vflclip__V1__Welcome w = VFLCLIP__V1__WELCOME__INIT;
            w.aggregator_name = g_agg.name;
            w.protocol_version = 1;
            w.run_id = r->id;
            Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
            am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME;
            am.welcome = &w;
            if (agg_send(p, &am, &err)) vf_log(VF_WARN, "event=run_announce_failed run=%s peer=%s error=\"%s\"", r->id, p->id.name, err.msg);
        }
        return;
    }
    char *decision = NULL;
    size_t len = 0;
    int have_decision = access(decision_path, F_OK) == 0 && vf_read_file(decision_path, &decision, &len, &err) == 0;
    if (have_decision) {
        while (len && (decision[len - 1] == '\n' || decision[len - 1] == ' ')) decision[--len] = 0;
        if (!len) { free(decision); decision = NULL; have_decision = 0; }
    }
    int flags = VF_TRANSCRIPT_RESUME | (have_decision ? VF_TRANSCRIPT_ACCEPT_DAMAGE : 0);
    if (vf_transcript_open_ex(&r->transcript, path, r->id, flags, &err)) {
        free(decision);
        vf_transcript_close(&r->transcript);
        return refuse_run("cannot resume: %s; to go on anyway, write the reason to %s/transcript-continue and restart the "
                          "aggregator (the decision is recorded in the transcript)", err.msg, r->dir);
    }
    char used[4600];
    if (r->transcript.damage[0]) {
        char details[1400];
        snprintf(details, sizeof details, "run=%s transcript_damage=\"%s\" reason=\"%s\"", r->id, r->transcript.damage, decision);
        if (own_record(VF_TRANSCRIPT_OPERATOR_DECISION, decision, &err)) goto fail;
        vf_error aerr;
        if (vf_audit(g_agg.audit_path, "transcript_continue", NULL, details, &aerr))
            vf_log(VF_ERROR, "event=audit_failed error=\"%s\"", aerr.msg);
        vf_log(VF_WARN, "event=transcript_continue_by_decision run=%s seq=%llu %s", r->id,
               (unsigned long long)r->transcript.entries, details);
        snprintf(used, sizeof used, "%s.used-seq%llu", decision_path, (unsigned long long)r->transcript.entries);
        if (rename(decision_path, used)) vf_log(VF_ERROR, "event=transcript_decision_not_consumed path=%s", decision_path);
    } else if (have_decision) {
        /* A reason left for a damage that is not there must not wait for a later one. */
        snprintf(used, sizeof used, "%s.unused", decision_path);
        rename(decision_path, used);
        vf_log(VF_WARN, "event=transcript_decision_unused run=%s detail=\"the transcript verifies; %s set aside\"", r->id, used);
    }
    free(decision);
    decision = NULL;
    if (own_record(VF_TRANSCRIPT_RUN_RESUME, r->config_text, &err) || vf_transcript_commit(&r->transcript, &err)) goto fail;
    return;
fail:
    free(decision);
    vf_transcript_close(&r->transcript);
    refuse_run("cannot resume: %s: %s", err.msg, path);
}

void agg_transcript_record(const vf_peer_identity *peer, int sent, const ProtobufCMessage *m, const uint8_t *raw, size_t len) {
    agg_run *r = &g_agg.run;
    if (!r->transcript.f || !agg_run_active()) return;
    vf_transcript_entry e = {.sender = sent ? g_agg.me.serial_hex : peer->serial_hex,
                             .receiver = sent ? peer->serial_hex : g_agg.me.serial_hex};
    e.kind = vf_transcript_kind(m, &e.step);
    e.task = sent ? ((const Vflclip__V1__AggregatorMessage *)m)->task_id : ((const Vflclip__V1__PartyMessage *)m)->task_id;
    if (raw) vf_sha256(raw, len, e.sha256);
    else vf_pb_sha256(m, e.sha256);
    if (sent && ((const Vflclip__V1__AggregatorMessage *)m)->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_TEXT_BACKWARD) {
        e.has_loss = 1;
        e.loss = r->sess.pending_loss;
    }
    vf_error err;
    /* A checkpoint is where the run commits: the transcript is made durable
     * and its head marked first, so after a restart a transcript shorter
     * than its mark is known to be truncated, not merely unflushed. */
    int commit = sent && ((const Vflclip__V1__AggregatorMessage *)m)->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_CHECKPOINT;
    if (vf_transcript_append(&r->transcript, &e, &err) || (commit && vf_transcript_commit(&r->transcript, &err))) {
        vf_log(VF_ERROR, "event=transcript_failed run=%s error=\"%s\"", r->id, err.msg);
        vf_transcript_close(&r->transcript);
    }
}

double agg_run_epsilon(void) {
    agg_run *r = &g_agg.run;
    if (!r->session_ready) return r->cfg.privacy.noise_multiplier > 0 ? 0 : INFINITY;
    return vf_text_grad_epsilon(&r->cfg.privacy, r->sess.batcher.batch_size, (int)r->n[0], r->sess.global_step);
}

/* privacy.json: the run's privacy settings, each image party's embedding DP, epsilon so far. */
void agg_privacy_report_write(void) {
    agg_run *r = &g_agg.run;
    static vf_privacy_report pr;
    memset(&pr, 0, sizeof pr);
    pr.text = r->cfg.privacy;
    pr.batch = r->sess.batcher.batch_size;
    pr.n_train = (int)r->n[0];
    pr.steps = r->sess.global_step;
    pr.budget_stop = r->sess.budget_stop;
    pr.loss_at_parties = r->cfg.loss_at_parties;
    pr.sum_participants = r->sum.min_participants;
    for (int i = 0; i < r->n_img && i < VF_PRIVACY_MAX_EMBED; i++) {
        agg_party *p = agg_party_find(VF_ROLE_IMAGE_PARTY, r->img[i].name);
        vf_privacy_embed_entry *e = &pr.embed[pr.n_embed++];
        snprintf(e->party, sizeof e->party, "%s", r->img[i].name);
        if (!p) continue;
        vf_embed_privacy ep = {p->embed_clip, p->embed_noise, 0, p->embed_delta > 0 ? p->embed_delta : 1e-5};
        e->clip = ep.clip;
        e->noise_multiplier = ep.noise_multiplier;
        e->delta = ep.delta;
        e->epsilon = vf_embed_epsilon(&ep);
    }
    vf_error err;
    if (vf_privacy_report_write(r->dir, &pr, &err)) vf_log(VF_ERROR, "event=privacy_report_failed run=%s error=\"%s\"", r->id, err.msg);
}
