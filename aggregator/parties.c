/* parties: Federation.Join on the aggregator.  Each party holds one Join
 * stream; its first message must be a Hello whose role and name (if given)
 * agree with its certificate, which is what counts.  A second stream from
 * the same party replaces the first (a party that reconnects after a
 * network cut).  Everything after the Hello goes to the run (run.c). */
#include "agg.h"
#include "daemon/audit.h"
#include "daemon/peer_limits.h"
#include "util/log.h"
#include "util/progress.h"

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
    agg_transcript_record(&p->id, 1, &m->base, NULL, 0);
    return vf_rpc_call_send_pb(p->call, &m->base, err);
}

/* One Join stream, from its start to its end.  It holds a party slot only
 * once its Hello is valid, so streams that never say Hello take none; the
 * timer (a libuv handle embedded in the request, freed by its close
 * callback) ends a stream that is silent for hello_timeout_ms. */
typedef struct agg_join {
    uv_timer_t hello_timer;
    vf_rpc_call *call;
    agg_party *party;                /* NULL until the Hello is accepted */
} agg_join;

static void on_join_freed(uv_handle_t *h) { free(h->data); }

static void on_hello_timeout(uv_timer_t *t) {
    agg_join *j = t->data;
    const vf_peer_identity *id = vf_rpc_call_peer(j->call);
    char msg[160];
    snprintf(msg, sizeof msg, "no Hello within %d ms of opening the Join stream", g_agg.hello_timeout_ms);
    vf_log(VF_WARN, "event=party_refused peer=%s role=%s reason=\"%s\"", id->name, vf_role_name(id->role), msg);
    vf_error err;
    vf_audit(g_agg.audit_path, "party_refused", id, msg, &err);
    vf_rpc_call_finish(j->call, VF_GRPC_DEADLINE_EXCEEDED, msg, &err);
}

static void join_start(vf_rpc_call *call, void *ud) {
    vf_error err;
    if (g_agg.shutting_down) {
        vf_rpc_call_finish(call, VF_GRPC_UNAVAILABLE, "aggregator is shutting down", &err);
        return;
    }
    agg_join *j = calloc(1, sizeof *j);
    if (!j) {
        vf_rpc_call_finish(call, VF_GRPC_RESOURCE_EXHAUSTED, "aggregator is out of memory", &err);
        return;
    }
    j->call = call;
    uv_timer_init(g_agg.loop, &j->hello_timer);
    j->hello_timer.data = j;
    uv_timer_start(&j->hello_timer, on_hello_timeout, (uint64_t)g_agg.hello_timeout_ms, 0);
    vf_rpc_call_set_user(call, j);
}

/* A free slot for a party whose Hello was accepted; NULL when max_parties are taken. */
static agg_party *take_slot(vf_rpc_call *call) {
    int used = 0;
    agg_party *p = NULL;
    for (int i = 0; i < AGG_MAX_PARTIES; i++) {
        if (g_agg.parties[i].used) used++;
        else if (!p) p = &g_agg.parties[i];
    }
    if (used >= g_agg.max_parties) return NULL;
    memset(p, 0, sizeof *p);
    p->used = 1;
    p->call = call;
    p->id = *vf_rpc_call_peer(call);
    p->connected_unix = (int64_t)time(NULL);
    return p;
}

static void refuse(vf_rpc_call *call, int status, const char *msg) {
    const vf_peer_identity *id = vf_rpc_call_peer(call);
    vf_error err;
    vf_log(VF_WARN, "event=party_refused peer=%s role=%s reason=\"%s\"", id->name, vf_role_name(id->role), msg);
    vf_audit(g_agg.audit_path, "party_refused", id, msg, &err);
    vf_rpc_call_finish(call, status, msg, &err);
}

static void on_hello(agg_join *j, const Vflclip__V1__Hello *h) {
    char msg[1200];
    const vf_peer_identity *id = vf_rpc_call_peer(j->call);
    vf_error err;
    uint64_t split_n[3];
    if (vf_peer_check_hello(h, split_n, &err)) {
        snprintf(msg, sizeof msg, "Hello refused: %s", err.msg);
        return refuse(j->call, VF_GRPC_INVALID_ARGUMENT, msg);
    }
    if (h->role != VFLCLIP__V1__ROLE__ROLE_UNSPECIFIED && (int)h->role != (int)id->role) {
        snprintf(msg, sizeof msg, "Hello says role %d but the certificate says %s", (int)h->role, vf_role_name(id->role));
        return refuse(j->call, VF_GRPC_PERMISSION_DENIED, msg);
    }
    if (h->name[0] && strcmp(h->name, id->name)) {
        snprintf(msg, sizeof msg, "Hello says name '%s' but the certificate says '%s'", h->name, id->name);
        return refuse(j->call, VF_GRPC_PERMISSION_DENIED, msg);
    }
    /* A party that reconnects replaces its old stream (and so needs no new slot). */
    agg_party *old = agg_party_find(id->role, id->name);
    if (old) {
        vf_log(VF_INFO, "event=party_replaced peer=%s", old->id.name);
        vf_rpc_call *oc = old->call;
        agg_join *oj = vf_rpc_call_user(oc);
        old->hello_ok = 0;
        agg_run_on_left(old, "replaced by a new connection");
        if (oj) oj->party = NULL;
        memset(old, 0, sizeof *old);
        vf_rpc_call_finish(oc, VF_GRPC_ABORTED, "replaced by a new connection from the same party", &err);
    }
    agg_party *p = take_slot(j->call);
    if (!p) {
        g_agg.refused_full++;
        snprintf(msg, sizeof msg, "too many parties: all %d slots are taken ([server] max_parties)", g_agg.max_parties);
        return refuse(j->call, VF_GRPC_RESOURCE_EXHAUSTED, msg);
    }
    uv_timer_stop(&j->hello_timer);
    j->party = p;
    snprintf(p->fingerprint, sizeof p->fingerprint, "%s", h->model_fingerprint);
    snprintf(p->pp_fingerprint, sizeof p->pp_fingerprint, "%s", h->preprocessing_fingerprint);
    snprintf(p->tok_fingerprint, sizeof p->tok_fingerprint, "%s", h->tokenizer_fingerprint);
    p->embed_dim = h->embed_dim;
    p->embed_clip = h->embed_clip;
    p->embed_noise = h->embed_noise_multiplier;
    p->embed_delta = h->dp_delta;
    /* sizes bounded by vf_peer_check_hello */
    if ((p->mask_pub_len = h->mask_public_key.len)) memcpy(p->mask_pub, h->mask_public_key.data, p->mask_pub_len);
    if ((p->mask_sig_len = h->mask_key_signature.len)) memcpy(p->mask_sig, h->mask_key_signature.data, p->mask_sig_len);
    if ((p->mask_cert_len = h->certificate.len)) memcpy(p->mask_cert, h->certificate.data, p->mask_cert_len);
    for (int k = 0; k < 3; k++) p->split_n[k] = split_n[k];
    p->hello_ok = 1;
    snprintf(p->state, sizeof p->state, "connected");
    Vflclip__V1__Welcome w = VFLCLIP__V1__WELCOME__INIT;
    w.aggregator_name = g_agg.name;
    w.protocol_version = 1;
    w.run_id = g_agg.run.state != RUN_IDLE && !agg_run_terminal() ? g_agg.run.id : "";
    Vflclip__V1__AggregatorMessage am = VFLCLIP__V1__AGGREGATOR_MESSAGE__INIT;
    am.body_case = VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME;
    am.welcome = &w;
    agg_send(p, &am, &err);
    vf_log(VF_INFO, "event=party_joined peer=%s role=%s serial=%s fingerprint=%.16s preprocessing=%.16s tokenizer=%.16s "
           "dim=%u train=%" PRIu64 " val=%" PRIu64
           " test=%" PRIu64, p->id.name, vf_role_name(p->id.role), p->id.serial_hex, p->fingerprint,
           p->pp_fingerprint[0] ? p->pp_fingerprint : "-", p->tok_fingerprint[0] ? p->tok_fingerprint : "-", p->embed_dim,
           p->split_n[0], p->split_n[1], p->split_n[2]);
    agg_admin_event("party", p->id.name);
    agg_run_on_joined(p);
}

/* An image party's EncodingProgress: its state in status and watch
 * ("encoding 3,412/7,007 eta 04:52"); "connected" when it is done. */
static void on_progress(agg_party *p, const Vflclip__V1__EncodingProgress *ep) {
    vf_error err;
    if (p->id.role != VF_ROLE_IMAGE_PARTY || vf_peer_check_progress(ep, &err)) {
        char msg[400];
        snprintf(msg, sizeof msg, "EncodingProgress refused: %s", p->id.role != VF_ROLE_IMAGE_PARTY ? "not an image party" : err.msg);
        vf_log(VF_WARN, "event=bad_message peer=%s reason=\"%s\"", p->id.name, msg);
        vf_rpc_call_finish(p->call, VF_GRPC_INVALID_ARGUMENT, msg, &err);
        return;
    }
    char d[32], t[32], eta[32], msg[160];
    vf_thousands((int64_t)ep->done, d, sizeof d);
    vf_thousands((int64_t)ep->total, t, sizeof t);
    if (ep->done >= ep->total) snprintf(p->state, sizeof p->state, "connected");
    else if (ep->eta_s >= 0) snprintf(p->state, sizeof p->state, "encoding %s/%s eta %s", d, t, vf_duration_text(ep->eta_s, eta, sizeof eta));
    else snprintf(p->state, sizeof p->state, "encoding %s/%s", d, t);
    vf_log(VF_INFO, "event=party_encoding peer=%s split=%s done=%" PRIu64 " total=%" PRIu64 " images_per_s=%.3g eta_s=%.0f", p->id.name,
           ep->split, ep->done, ep->total, ep->images_per_s, ep->eta_s);
    snprintf(msg, sizeof msg, "%s %s", p->id.name, ep->done >= ep->total ? "encoded its images" : p->state);
    agg_admin_event("party", msg);
}

static void join_message(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    agg_join *j = vf_rpc_call_user(call);
    if (!j) return;
    const vf_peer_identity *id = vf_rpc_call_peer(call);
    Vflclip__V1__PartyMessage *m = vflclip__v1__party_message__unpack(NULL, len, data);
    vf_error err;
    if (!m) {
        vf_log(VF_WARN, "event=bad_message peer=%s bytes=%zu", id->name, len);
        vf_rpc_call_finish(call, VF_GRPC_INVALID_ARGUMENT, "cannot decode PartyMessage", &err);
        return;
    }
    if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ERROR) vf_peer_sanitize_text(m->error->message);
    agg_party *p = j->party;
    agg_transcript_record(id, 0, &m->base, data, len);
    if (!p) {
        if (m->body_case != VFLCLIP__V1__PARTY_MESSAGE__BODY_HELLO) refuse(call, VF_GRPC_FAILED_PRECONDITION, "the first message must be a Hello");
        else on_hello(j, m->hello);
    } else if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_HELLO) {
        refuse(call, VF_GRPC_FAILED_PRECONDITION, "a second Hello on the same stream");
    } else if (m->body_case == VFLCLIP__V1__PARTY_MESSAGE__BODY_ENCODING_PROGRESS) {
        on_progress(p, m->encoding_progress);
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
    agg_join *j = vf_rpc_call_user(call);
    if (!j) return;
    vf_rpc_call_set_user(call, NULL);
    agg_party *p = j->party;
    if (p && p->hello_ok) {
        vf_log(VF_INFO, "event=party_left peer=%s role=%s status=%s", p->id.name, vf_role_name(p->id.role),
               vf_grpc_status_name(status));
        p->hello_ok = 0;
        agg_run_on_left(p, vf_grpc_status_name(status));
        agg_admin_event("party", p->id.name);
    }
    if (p) memset(p, 0, sizeof *p);
    uv_timer_stop(&j->hello_timer);
    uv_close((uv_handle_t *)&j->hello_timer, on_join_freed);
}

const vf_rpc_method agg_join_method = {
    "/vflclip.v1.Federation/Join", VF_ROLE_BIT(VF_ROLE_IMAGE_PARTY) | VF_ROLE_BIT(VF_ROLE_KNOWLEDGE_PARTY),
    join_start, join_message, join_half_close, join_done, NULL, NULL,
};
