/* run_privacy: what the aggregator keeps for privacy and accountability:
 * the run's transcript (every message of an active run, hash-chained, signed
 * when the run ends; transcript/transcript.h) and privacy.json (the dL/dT
 * guard's settings and epsilon, each image party's embedding DP from its
 * Hello; privacy/privacy_report.h). */
#include "agg.h"
#include "privacy/embed_dp.h"
#include "util/log.h"

#include <math.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <string.h>

void agg_transcript_open(void) {
    agg_run *r = &g_agg.run;
    char path[4500];
    vf_error err;
    snprintf(path, sizeof path, "%s/transcript.jsonl", r->dir);
    if (vf_transcript_open(&r->transcript, path, r->id, &err))
        vf_log(VF_ERROR, "event=transcript_failed run=%s error=\"%s\"", r->id, err.msg);
}

void agg_transcript_record(const vf_peer_identity *peer, int sent, const ProtobufCMessage *m, const uint8_t *raw, size_t len) {
    agg_run *r = &g_agg.run;
    if (!r->transcript.f || !agg_run_active()) return;
    vf_transcript_entry e = {.sender = sent ? g_agg.me.serial_hex : peer->serial_hex,
                             .receiver = sent ? peer->serial_hex : g_agg.me.serial_hex};
    e.kind = vf_transcript_kind(m, &e.step);
    e.task = sent ? ((const Vflclip__V1__AggregatorMessage *)m)->task_id : ((const Vflclip__V1__PartyMessage *)m)->task_id;
    if (raw) mbedtls_sha256_ret(raw, len, e.sha256, 0);
    else vf_pb_sha256(m, e.sha256);
    if (sent && ((const Vflclip__V1__AggregatorMessage *)m)->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_TEXT_BACKWARD) {
        e.has_loss = 1;
        e.loss = r->pending_loss;
    }
    vf_error err;
    if (vf_transcript_append(&r->transcript, &e, &err)) {
        vf_log(VF_ERROR, "event=transcript_failed run=%s error=\"%s\"", r->id, err.msg);
        vf_transcript_close(&r->transcript);
    }
}

double agg_run_epsilon(void) {
    agg_run *r = &g_agg.run;
    if (!r->trainer_ready) return r->cfg.privacy.noise_multiplier > 0 ? 0 : INFINITY;
    return vf_text_grad_epsilon(&r->cfg.privacy, r->batcher.batch_size, (int)r->n[0], r->global_step);
}

/* privacy.json: the run's privacy settings, each image party's embedding DP, epsilon so far. */
void agg_privacy_report_write(void) {
    agg_run *r = &g_agg.run;
    static vf_privacy_report pr;
    memset(&pr, 0, sizeof pr);
    pr.text = r->cfg.privacy;
    pr.batch = r->batcher.batch_size;
    pr.n_train = (int)r->n[0];
    pr.steps = r->global_step;
    pr.budget_stop = r->budget_stop;
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
