/* parties: Federation.Join on the aggregator.  Each party holds one Join
 * stream; its first message must be a Hello whose role and name (if given)
 * agree with its certificate, which is what counts.  A second stream from
 * the same party replaces the first (a party that reconnects after a
 * network cut).  Everything after the Hello goes to the run (run.c). */
#include "agg.h"
#include "daemon/audit.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t agg_new_task(void) { return ++g_agg.next_task; }

agg_party *agg_party_find(vf_role role, const char *name) {
    for (int i = 0; i < AGG_MAX_PARTIES; i++) {
        agg_party *p = &g_agg.parties[i];
        if (p->used && p->hello_ok && p->id.role == role && (!name || !strcmp(p->id.name, name))) return p;
    }
    return NULL;
}

int agg_parties_connected(void) {
    int n = 0;
    for (int i = 0; i < AGG_MAX_PARTIES; i++) n += g_agg.parties[i].used && g_agg.parties[i].hello_ok;
    return n;
}

int agg_send(agg_party *p, Vflclip__V1__AggregatorMessage *m, vf_error *err) {
    if (!p || !p->call) return vf_fail(err, "party is not connected");
    agg_transcript_record(p, 1, &m->base, NULL, 0);
    return vf_rpc_call_send_pb(p->call, &m->base, err);
}

static void join_start(vf_rpc_call *call, void *ud) {
    agg_party *p = NULL;
    for (int i = 0; i < AGG_MAX_PARTIES && !p; i++)
        if (!g_agg.parties[i].used) p = &g_agg.parties[i];
    vf_error err;
    if (!p || g_agg.shutting_down) {
        vf_rpc_call_finish(call, VF_GRPC_RESOURCE_EXHAUSTED, g_agg.shutting_down ? "aggregator is shutting down" : "too many parties", &err);
        return;
    }
    memset(p, 0, sizeof *p);
    p->used = 1;
    p->call = call;
    p->id = *vf_rpc_call_peer(call);
    p->connected_unix = (int64_t)time(NULL);
    snprintf(p->state, sizeof p->state, "joining");
    vf_rpc_call_set_user(call, p);
}

static void refuse(agg_party *p, int status, const char *msg) {
    vf_error err;
    vf_log(VF_WARN, "event=party_refused peer=%s role=%s reason=\"%s\"", p->id.name, vf_role_name(p->id.role), msg);
    vf_audit(g_agg.audit_path, "party_refused", &p->id, msg, &err);
    vf_rpc_call_finish(p->call, status, msg, &err);
}

static void on_hello(agg_party *p, const Vflclip__V1__Hello *h) {
    char msg[512];
    if (h->role != VFLCLIP__V1__ROLE__ROLE_UNSPECIFIED && (int)h->role != (int)p->id.role) {
        snprintf(msg, sizeof msg, "Hello says role %d but the certificate says %s", (int)h->role, vf_role_name(p->id.role));
        refuse(p, VF_GRPC_PERMISSION_DENIED, msg);
        return;
    }
    if (h->name[0] && strcmp(h->name, p->id.name)) {
        snprintf(msg, sizeof msg, "Hello says name '%s' but the certificate says '%s'", h->name, p->id.name);
        refuse(p, VF_GRPC_PERMISSION_DENIED, msg);
        return;
    }
    /* A party that reconnects replaces its old stream. */
    agg_party *old = agg_party_find(p->id.role, p->id.name);
    if (old && old != p) {
        vf_error err;
        vf_log(VF_INFO, "event=party_replaced peer=%s", old->id.name);
        vf_rpc_call *oc = old->call;
        old->hello_ok = 0;
        agg_run_on_left(old, "replaced by a new connection");
        vf_rpc_call_finish(oc, VF_GRPC_ABORTED, "replaced by a new connection from the same party", &err);
    }
    snprintf(p->fingerprint, sizeof p->fingerprint, "%s", h->model_fingerprint);
    snprintf(p->pp_fingerprint, sizeof p->pp_fingerprint, "%s", h->preprocessing_fingerprint);
    snprintf(p->tok_fingerprint, sizeof p->tok_fingerprint, "%s", h->tokenizer_fingerprint);
    p->embed_dim = h->embed_dim;
    p->embed_clip = h->embed_clip;
    p->embed_noise = h->embed_noise_multiplier;
    p->embed_delta = h->dp_delta;
    for (size_t i = 0; i < h->n_splits; i++) {
        const char *s = h->splits[i]->split;
        int k = !strcmp(s, "train") ? 0 : !strcmp(s, "val") ? 1 : !strcmp(s, "test") ? 2 : -1;
        if (k >= 0) p->split_n[k] = h->splits[i]->count;
    }
    p->hello_ok = 1;
    snprintf(p->state, sizeof p->state, "connected");
    Vflclip__V1__Welcome w = VFLCLIP__V1__WELCOME__INIT;
    w.aggregator_name = g_agg.name;
    w.protocol_version = 1;
    w.run_id = g_agg.run.state != RUN_IDLE && !agg_run_terminal() ? g_agg.run.id : "";
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME;
    am.welcome = &w;
    vf_error err;
    agg_send(p, &am, &err);
    vf_log(VF_INFO, "event=party_joined peer=%s role=%s serial=%s fingerprint=%.16s preprocessing=%.16s tokenizer=%.16s "
           "dim=%u train=%" PRIu64 " val=%" PRIu64
           " test=%" PRIu64, p->id.name, vf_role_name(p->id.role), p->id.serial_hex, p->fingerprint,
           p->pp_fingerprint[0] ? p->pp_fingerprint : "-", p->tok_fingerprint[0] ? p->tok_fingerprint : "-", p->embed_dim,
           p->split_n[0], p->split_n[1], p->split_n[2]);
    agg_admin_event("party", p->id.name);
    agg_run_on_joined(p);
}

static void join_message(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    agg_party *p = vf_rpc_call_user(call);
    if (!p) return;
    Vflclip__V1__PartyMessage *m = vflclip__v1__party_message__unpack(NULL, len, data);
    vf_error err;
    if (!m) {
        vf_log(VF_WARN, "event=bad_message peer=%s bytes=%zu", p->id.name, len);
        vf_rpc_call_finish(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode PartyMessage", &err);
        return;
    }
    agg_transcript_record(p, 0, &m->base, data, len);
    if (!p->hello_ok) {
        if (m->body_case != VFLCLIP__V1__PARTY_MESSAGE__BODY_HELLO) refuse(p, VF_GRPC_FAILED_PRECONDITION, "the first message must be a Hello");
        else on_hello(p, m->hello);
    } else if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_HELLO) {
        refuse(p, VF_GRPC_FAILED_PRECONDITION, "a second Hello on the same stream");
    } else {
        agg_run_on_message(p, m, len);
    }
    vflclip__v1__party_message__free_unpacked(m, NULL);
}

static void join_half_close(vf_rpc_call *call, void *ud) {
    vf_error err;
    vf_rpc_call_finish(call, VF_GRPC_OK, NULL, &err);
}

static void join_done(vf_rpc_call *call, int status, void *ud) {
    agg_party *p = vf_rpc_call_user(call);
    if (!p) return;
    vf_rpc_call_set_user(call, NULL);
    if (p->hello_ok) {
        vf_log(VF_INFO, "event=party_left peer=%s role=%s status=%s", p->id.name, vf_role_name(p->id.role),
               vf_grpc_status_name(status));
        p->hello_ok = 0;
        agg_run_on_left(p, vf_grpc_status_name(status));
        agg_admin_event("party", p->id.name);
    }
    memset(p, 0, sizeof *p);
}

const vf_rpc_method agg_join_method = {
    "/vflclip.v1.Federation/Join", VF_ROLE_BIT(VF_ROLE_IMAGE_PARTY) | VF_ROLE_BIT(VF_ROLE_KNOWLEDGE_PARTY),
    join_start, join_message, join_half_close, join_done, NULL, NULL,
};
