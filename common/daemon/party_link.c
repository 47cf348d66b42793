/* party_link: dial, Join, Hello, dispatch, reconnect (see party_link.h). */
#include "daemon/party_link.h"
#include "daemon/notify.h"
#include "transcript/transcript.h"
#include "util/log.h"

#include <mbedtls/x509_crt.h>
#include <stdlib.h>
#include <string.h>

struct vf_party_link {
    uv_timer_t timer;          /* first: uv_close(&timer, free) frees the link */
    uv_loop_t *loop;
    vf_party_link_config cfg;
    vf_party_link_handlers h;
    vf_peer_identity me;
    char host[256], server_name[256], ca[4096], cert[4096], key[4096], crl[4096];
    vf_rpc_client *client;
    vf_rpc_call *call;
    int backoff_ms, stopping;
    int cert_refusals;         /* dials in a row the aggregator refused our certificate */
    char refused[600];         /* why dialling stopped for good; "" while dialling */
    uint64_t up_since;
    vf_party_log log;          /* what this party sent and received, for `vflclip transcript verify --party-log` */
};

int vf_identity_from_file(const char *cert_file, vf_peer_identity *id, vf_error *err) {
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    int rc = mbedtls_x509_crt_parse_file(&crt, cert_file);
    if (rc != 0) {
        mbedtls_x509_crt_free(&crt);
        return vf_fail(err, "%s: cannot read the certificate (mbedTLS -0x%04x)", cert_file, (unsigned)-rc);
    }
    rc = vf_pki_identity_from_crt(&crt, id, err);
    mbedtls_x509_crt_free(&crt);
    return rc ? vf_error_prefix(err, "%s", cert_file) : 0;
}

static void dial(vf_party_link *l);

const char *vf_party_role_mismatch(vf_role have, vf_role want, char *buf, size_t size) {
    if (want == 0 || have == want) return NULL;
    char h[32], w[32];
    snprintf(h, sizeof h, "%s", vf_role_name(have));
    snprintf(w, sizeof w, "%s", vf_role_name(want));
    for (char *p = w; *p; p++)
        if (*p == '-') *p = ' ';   /* "image party", as people say it */
    snprintf(buf, size, "certificate role %s cannot join as %s", h, w);
    return buf;
}

/* The TLS alerts by which the aggregator refuses our certificate (tls.c names
 * them in the handshake error), and what to tell the operator. */
static const char *cert_refusal(const char *msg) {
    static const struct { const char *alert, *what; } r[] = {
        {"alert 44: certificate_revoked", "certificate revoked by the federation CA"},
        {"alert 45: certificate_expired", "certificate expired (the aggregator refuses it)"},
        {"alert 48: unknown_ca", "certificate not issued by the aggregator's federation CA"},
        {"alert 42: bad_certificate", "certificate refused by the aggregator (bad certificate)"},
        {"alert 43: unsupported_certificate", "certificate refused by the aggregator (unsupported certificate)"},
        {"alert 46: certificate_unknown", "certificate refused by the aggregator (certificate unknown)"},
        {"alert 49: access_denied", "certificate refused by the aggregator (access denied)"}};
    for (size_t i = 0; msg && i < sizeof r / sizeof r[0]; i++)
        if (strstr(msg, r[i].alert)) return r[i].what;
    return NULL;
}

/* Stops dialling for good: one ERROR line, the systemd status, idle after. */
static void give_up(vf_party_link *l, const char *why, const char *detail) {
    snprintf(l->refused, sizeof l->refused, "%s", why);
    vf_log(VF_ERROR, "event=refused_by_aggregator aggregator=%s:%d role=%s name=%s serial=%s reason=\"%s\" detail=\"%s\" "
                     "action=\"not redialling; fix the certificate and restart this daemon\"",
           l->host, l->cfg.client.port, vf_role_name(l->me.role), l->me.name, l->me.serial_hex, why, detail);
    vf_notify_status("refused by the aggregator: %s; not redialling", why);
}

static void on_timer(uv_timer_t *t) { dial(t->data); }

static void schedule_dial(vf_party_link *l) {
    if (l->stopping) return;
    /* A stream that stayed up for a minute resets the backoff. */
    if (l->up_since && uv_now(l->loop) - l->up_since > 60000) l->backoff_ms = l->cfg.backoff_min_ms;
    l->up_since = 0;
    int wait = l->backoff_ms;
    l->backoff_ms = l->backoff_ms * 2 > l->cfg.backoff_max_ms ? l->cfg.backoff_max_ms : l->backoff_ms * 2;
    vf_log(VF_INFO, "event=redial_in ms=%d aggregator=%s:%d", wait, l->host, l->cfg.client.port);
    uv_timer_start(&l->timer, on_timer, (uint64_t)wait, 0);
}

static void on_call_message(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    vf_party_link *l = ud;
    Vflclip__V1__AggregatorMessage *m = vflclip__v1__aggregator_message__unpack(NULL, len, data);
    if (!m) {
        vf_log(VF_WARN, "event=bad_message peer=%s bytes=%zu detail=\"cannot decode AggregatorMessage\"", l->server_name,
               len);
        vf_rpc_call_cancel(call);
        return;
    }
    vf_party_log_record(&l->log, 0, &m->base, data, len);
    if (m->body_case == VFLCLIP__V1__AGGREGATOR_MESSAGE__BODY_WELCOME) {
        l->up_since = uv_now(l->loop);
        vf_log(VF_INFO, "event=welcome peer=%s run=%s", m->welcome->aggregator_name,
               m->welcome->run_id[0] ? m->welcome->run_id : "-");
    }
    l->h.on_message(l, m, l->h.ud);
    vflclip__v1__aggregator_message__free_unpacked(m, NULL);
}

static void on_call_done(vf_rpc_call *call, int status, const char *message, void *ud) {
    vf_party_link *l = ud;
    l->call = NULL;
    char why[512];
    snprintf(why, sizeof why, "%s: %s", vf_grpc_status_name(status), message && *message ? message : "stream ended");
    vf_log(status == VF_GRPC_OK ? VF_INFO : VF_WARN, "event=join_ended peer=%s status=%s message=\"%s\"",
           l->server_name, vf_grpc_status_name(status), message ? message : "");
    if (status == VF_GRPC_PERMISSION_DENIED && !l->stopping) {
        /* said by the aggregator itself, inside the authenticated connection */
        char w[560];
        snprintf(w, sizeof w, "Join refused by the aggregator: %s", message && *message ? message : "permission denied");
        give_up(l, w, why);
    }
    if (l->h.on_down) l->h.on_down(l, why, l->h.ud);
    if (l->client) vf_rpc_client_close(l->client); /* on_closed redials unless refused */
}

static void on_call_drain(vf_rpc_call *call, void *ud) {
    vf_party_link *l = ud;
    if (l->h.on_drain) l->h.on_drain(l, l->h.ud);
}

static void on_ready(vf_rpc_client *c, int status, const char *msg, void *ud) {
    vf_party_link *l = ud;
    if (status != 0) {
        l->client = NULL;
        vf_log(VF_WARN, "event=connect_failed aggregator=%s:%d reason=\"%s\"", l->host, l->cfg.client.port, msg);
        const char *why = cert_refusal(msg);
        if (why && !l->stopping && ++l->cert_refusals >= 2) {
            /* Two dials in a row: a single alert before the handshake ends is
             * unauthenticated, so one is not taken at its word. */
            give_up(l, why, msg);
            return;
        }
        if (!why) l->cert_refusals = 0;
        if (l->stopping) uv_close((uv_handle_t *)&l->timer, (uv_close_cb)free);
        else schedule_dial(l);
        return;
    }
    l->cert_refusals = 0;
    vf_error err;
    vf_rpc_call_handlers h = {on_call_message, on_call_done, on_call_drain, l};
    l->call = vf_rpc_client_call(c, "/vflclip.v1.Federation/Join", 0, &h, &err);
    if (!l->call) {
        vf_log(VF_WARN, "event=join_failed reason=\"%s\"", err.msg);
        vf_rpc_client_close(c);
        return;
    }
    Vflclip__V1__Hello hello = VFLCLIP__V1__HELLO__INIT;
    l->h.fill_hello(&hello, l->h.ud);
    hello.role = (Vflclip__V1__Role)l->me.role;
    hello.name = l->me.name;
    hello.protocol_version = 1;
    Vflclip__V1__PartyMessage pm = VFLCLIP__V1__PARTY_MESSAGE__INIT;
    pm.body_case = VFLCLIP__V1__PARTY_MESSAGE__BODY_HELLO;
    pm.hello = &hello;
    vf_party_log_record(&l->log, 1, &pm.base, NULL, 0);
    if (vf_rpc_call_send_pb(l->call, &pm.base, &err)) {
        vf_log(VF_WARN, "event=hello_failed reason=\"%s\"", err.msg);
        vf_rpc_call_cancel(l->call);
        return;
    }
    vf_log(VF_INFO, "event=joined aggregator=%s:%d peer=%s role=%s name=%s", l->host, l->cfg.client.port,
           vf_rpc_client_peer(c)->name, vf_role_name(l->me.role), l->me.name);
}

static void on_closed(vf_rpc_client *c, const char *reason, void *ud) {
    vf_party_link *l = ud;
    l->client = NULL;
    l->call = NULL;
    vf_log(VF_WARN, "event=disconnected aggregator=%s:%d reason=\"%s\"", l->host, l->cfg.client.port, reason);
    if (l->stopping) {
        uv_close((uv_handle_t *)&l->timer, (uv_close_cb)free);
        return;
    }
    if (l->refused[0]) return;   /* given up: idle until the daemon stops */
    schedule_dial(l);
}

static void dial(vf_party_link *l) {
    vf_error err;
    vf_rpc_client_handlers h = {on_ready, on_closed, l};
    if (vf_rpc_client_connect(l->loop, &l->cfg.client, &h, &l->client, &err)) {
        l->client = NULL;
        vf_log(VF_WARN, "event=connect_failed aggregator=%s:%d reason=\"%s\"", l->host, l->cfg.client.port, err.msg);
        schedule_dial(l);
    }
}

static void keep(char *dst, size_t size, const char **field) {
    if (!*field) return;
    snprintf(dst, size, "%s", *field);
    *field = dst;
}

int vf_party_link_start(uv_loop_t *loop, const vf_party_link_config *cfg, const vf_party_link_handlers *h,
                        vf_party_link **out, vf_error *err) {
    vf_party_link *l = calloc(1, sizeof *l);
    if (!l) return vf_fail(err, "out of memory");
    l->loop = loop;
    l->cfg = *cfg;
    l->h = *h;
    if (l->cfg.backoff_min_ms <= 0) l->cfg.backoff_min_ms = 500;
    if (l->cfg.backoff_max_ms < l->cfg.backoff_min_ms) l->cfg.backoff_max_ms = l->cfg.backoff_min_ms < 30000 ? 30000 : l->cfg.backoff_min_ms;
    l->backoff_ms = l->cfg.backoff_min_ms;
    keep(l->host, sizeof l->host, &l->cfg.client.host);
    keep(l->server_name, sizeof l->server_name, &l->cfg.client.server_name);
    if (!l->cfg.client.server_name) snprintf(l->server_name, sizeof l->server_name, "%s", l->host);
    keep(l->ca, sizeof l->ca, &l->cfg.client.tls.ca_file);
    keep(l->cert, sizeof l->cert, &l->cfg.client.tls.cert_file);
    keep(l->key, sizeof l->key, &l->cfg.client.tls.key_file);
    keep(l->crl, sizeof l->crl, &l->cfg.client.tls.crl_file);
    char mismatch[128];
    if (vf_identity_from_file(l->cert, &l->me, err) ||
        (vf_party_role_mismatch(l->me.role, l->cfg.expected_role, mismatch, sizeof mismatch) &&
         vf_fail(err, "%s: %s", l->cert, mismatch)) ||
        (l->cfg.party_log[0] && vf_party_log_open(&l->log, l->cfg.party_log, l->me.name, l->me.serial_hex, err))) {
        free(l);
        return -1;
    }
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    *out = l;
    dial(l);
    return 0;
}

int vf_party_link_send(vf_party_link *l, const Vflclip__V1__PartyMessage *m, vf_error *err) {
    if (!l->call) return vf_fail(err, "no stream to the aggregator");
    vf_party_log_record(&l->log, 1, &m->base, NULL, 0);
    return vf_rpc_call_send_pb(l->call, &m->base, err);
}

int vf_party_link_up(const vf_party_link *l) { return l->call != NULL; }
size_t vf_party_link_queued(const vf_party_link *l) { return l->call ? vf_rpc_call_send_queued(l->call) : 0; }
const char *vf_party_link_name(const vf_party_link *l) { return l->me.name; }
const char *vf_party_link_refused(const vf_party_link *l) { return l->refused[0] ? l->refused : NULL; }

void vf_party_link_stop(vf_party_link *l) {
    l->stopping = 1;
    uv_timer_stop(&l->timer);
    if (l->call) vf_rpc_call_close_send(l->call, &(vf_error){{0}});
    if (l->client) vf_rpc_client_close(l->client); /* on_closed frees */
    else uv_close((uv_handle_t *)&l->timer, (uv_close_cb)free);
}
