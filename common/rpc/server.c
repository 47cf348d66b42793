/* server: the listening side of the transport.  Accepts TCP connections up to
 * a cap, runs the TLS handshake under a deadline, then serves gRPC calls:
 * validates each request's headers, finds the method, checks the caller's
 * role (from its certificate) against the method's allowed roles, applies
 * grpc-timeout as a deadline, and sends status as trailers (or a
 * trailers-only response).  Also owns CRL reloads and graceful shutdown. */
#include "rpc/rpc_internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

struct vf_rpc_server {
    uv_loop_t *loop;
    vf_rpc_server_config cfg;
    char ca_file[1024], cert_file[1024], key_file[1024], crl_file[1024];
    vf_rpc_tls tls;
    int tls_ready;
    uv_tcp_t listener;
    uv_signal_t sighup;
    uv_timer_t grace;
    uv_timer_t crl_timer;        /* polls the revocation list file (CRL_POLL_MS) when one is configured */
    int crl_timer_on;
    int handles_open;
    vf_rpc_method *methods;
    int n_methods;
    vf_rpc_conn *conns;
    int n_conns;
    vf_rpc_server_stats st;
    int port;
    int shutting_down, notified;
    uint64_t crl_alarm_at;       /* uv_now of the last rpc_crl_unusable line */
    vf_grpc_pool recv_pool;      /* reassembly buffers of all calls (max_recv_buffered) */
    void (*on_closed)(vf_rpc_server *, void *);
    void *on_closed_ud;
    nghttp2_session_callbacks *cbs;
};

void vf_rpc_server_config_defaults(vf_rpc_server_config *cfg) {
    if (!cfg->host) cfg->host = "0.0.0.0";
    if (!cfg->max_connections) cfg->max_connections = 256;
    if (!cfg->max_per_source) cfg->max_per_source = 16;
    if (!cfg->admin_reserve) cfg->admin_reserve = cfg->max_connections >= 32 ? cfg->max_connections / 16 : 1;
    if (!cfg->handshake_timeout_ms) cfg->handshake_timeout_ms = 5000;
    if (!cfg->max_recv_message) cfg->max_recv_message = 4u << 20;
    if (!cfg->max_recv_buffered) cfg->max_recv_buffered = 256u << 20;
    if (!cfg->max_send_queued) cfg->max_send_queued = 128u << 20;
    if (!cfg->write_timeout_ms) cfg->write_timeout_ms = 60000;
    if (!cfg->keepalive_ms) cfg->keepalive_ms = 60000;
    if (!cfg->keepalive_timeout_ms) cfg->keepalive_timeout_ms = 20000;
    if (!cfg->stream_window) cfg->stream_window = 4u << 20;
    if (!cfg->max_concurrent_streams) cfg->max_concurrent_streams = 100;
}

uint32_t vf_rpc_server_max_streams(vf_rpc_conn *c) { return c->server->cfg.max_concurrent_streams; }
static void refused(vf_rpc_conn *c, const vf_peer_identity *who, int handshake, const char *why) {
    const vf_rpc_server_config *cfg = &c->server->cfg;
    if (cfg->on_refused) cfg->on_refused(c->peer_addr, who, handshake, why, cfg->refused_ud);
}

void vf_rpc_server_note_handshake_failure(vf_rpc_conn *c, const char *why) {
    c->server->st.handshake_failures++;
    refused(c, c->has_refused_peer ? &c->refused_peer : NULL, 1, why);
}
void vf_rpc_server_note_handshake_timeout(vf_rpc_conn *c) { c->server->st.handshake_timeouts++; }
void vf_rpc_server_note_send_refused(vf_rpc_conn *c) { c->server->st.refused_send_queued++; }
void vf_rpc_server_note_write_timeout(vf_rpc_conn *c) { c->server->st.write_timeouts++; }

/* ---- responses ------------------------------------------------------------- */

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

int vf_rpc_server_call_send_headers(vf_rpc_call *k) {
    if (k->headers_sent) return 0;
    vf_rpc_conn *c = k->conn;
    nghttp2_nv nv[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    nghttp2_data_provider prd;
    prd.source.ptr = k;
    prd.read_callback = vf_rpc_call_read_cb;
    int rv = nghttp2_submit_response(c->h2, k->stream_id, nv, 2, &prd);
    if (rv != 0) return -1;
    k->headers_sent = 1;
    return 0;
}

int vf_rpc_server_call_fail(vf_rpc_call *k, int status, const char *message) {
    if (k->status_set || k->done) return 0;
    vf_rpc_conn *c = k->conn;
    k->status_set = 1;
    k->status = status;
    snprintf(k->status_msg, sizeof k->status_msg, "%s", message ? message : "");
    if (!k->headers_sent) {
        char st[16], msg[1024];
        snprintf(st, sizeof st, "%d", status);
        vf_grpc_message_encode(k->status_msg, msg, sizeof msg);
        nghttp2_nv nv[] = {NV(":status", "200"), NV("content-type", "application/grpc"), NV("grpc-status", st),
                           NV("grpc-message", msg)};
        k->headers_sent = 1;
        if (nghttp2_submit_response(c->h2, k->stream_id, nv, msg[0] ? 4 : 3, NULL) != 0) return -1;
        if (!c->in_pump) vf_rpc_conn_pump(c);
        return 0;
    }
    vf_rpc_call_wake_sender(k);
    return 0;
}

int vf_rpc_call_finish(vf_rpc_call *k, int status, const char *message, vf_error *err) {
    if (!k->is_server) return vf_fail(err, "%s: only a server call can be finished", k->path);
    if (k->done) return vf_fail(err, "%s: the call is over", k->path);
    if (k->status_set) return vf_fail(err, "%s: the call was already finished", k->path);
    if (status < 0 || status > 16) return vf_fail(err, "%s: %d is not a gRPC status code", k->path, status);
    return vf_rpc_server_call_fail(k, status, message) < 0 ? vf_fail(err, "%s: cannot send the status", k->path) : 0;
}

void vf_rpc_server_call_deliver(vf_rpc_call *k, const uint8_t *data, size_t len) {
    if (k->started && !k->status_set && k->method->on_message) k->method->on_message(k, data, len, k->method->ud);
}

static void http_error(vf_rpc_call *k, const char *status) {
    nghttp2_nv nv[] = {NV(":status", status)};
    k->headers_sent = k->status_set = 1;
    k->status = VF_GRPC_INTERNAL;
    nghttp2_submit_response(k->conn->h2, k->stream_id, nv, 1, NULL);
}

/* ---- requests -------------------------------------------------------------- */

static const vf_rpc_method *find_method(vf_rpc_server *s, const char *path) {
    for (int i = 0; i < s->n_methods; i++)
        if (strcmp(s->methods[i].path, path) == 0) return &s->methods[i];
    return NULL;
}

static void handle_request(vf_rpc_conn *c, vf_rpc_call *k) {
    vf_rpc_server *s = c->server;
    char msg[512];
    if (strcmp(k->method_hdr, "POST") != 0) {
        http_error(k, "405");
        return;
    }
    if (strncmp(k->content_type, "application/grpc", 16) != 0 ||
        (k->content_type[16] != 0 && k->content_type[16] != '+' && k->content_type[16] != ';')) {
        http_error(k, "415");
        return;
    }
    const vf_rpc_method *m = find_method(s, k->path);
    if (!m) {
        snprintf(msg, sizeof msg, "unknown method %s", k->path);
        vf_rpc_server_call_fail(k, VF_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    k->method = m;
    if (!(m->roles & VF_ROLE_BIT(c->peer.role))) {
        snprintf(msg, sizeof msg, "role %s (%s) may not call %s", vf_role_name(c->peer.role), c->peer.name, k->path);
        vf_log(VF_WARN, "event=rpc_permission_denied peer=%s role=%s name=%s serial=%s method=%s", c->peer_addr,
               vf_role_name(c->peer.role), c->peer.name, c->peer.serial_hex, k->path);
        refused(c, &c->peer, 0, msg);
        vf_rpc_server_call_fail(k, VF_GRPC_PERMISSION_DENIED, msg);
        return;
    }
    if (k->grpc_encoding[0] && strcmp(k->grpc_encoding, "identity") != 0) {
        snprintf(msg, sizeof msg, "grpc-encoding %s is not supported (only identity)", k->grpc_encoding);
        vf_rpc_server_call_fail(k, VF_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    if (k->timeout_ms == -2) {
        vf_rpc_server_call_fail(k, VF_GRPC_INTERNAL, "malformed grpc-timeout header");
        return;
    }
    uint64_t now;
    if (k->timeout_ms >= 0 && vf_rpc_conn_clock(c, &now)) k->deadline = now + (uint64_t)k->timeout_ms + (k->timeout_ms == 0);
    if (c->goaway && s->shutting_down) {
        vf_rpc_server_call_fail(k, VF_GRPC_UNAVAILABLE, "the server is shutting down");
        return;
    }
    k->started = 1;
    s->st.calls_total++;
    if (m->on_start) m->on_start(k, m->ud);
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *ud) {
    vf_rpc_conn *c = ud;
    if (c->state == CONN_CLOSED) return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    vf_rpc_call *k = vf_rpc_call_new(c, frame->hd.stream_id, 1);
    if (!k) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, k);
    return 0;
}

static void copy_hdr(char *dst, size_t size, const uint8_t *v, size_t len) {
    if (len >= size) len = size - 1;
    memcpy(dst, v, len);
    dst[len] = 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    vf_rpc_call *k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!k) return 0;
#define IS(n) (namelen == sizeof(n) - 1 && memcmp(name, n, namelen) == 0)
    if (IS(":path")) {
        if (valuelen >= sizeof k->path) valuelen = 0; /* too long: no such method */
        copy_hdr(k->path, sizeof k->path, value, valuelen);
    } else if (IS(":method")) {
        copy_hdr(k->method_hdr, sizeof k->method_hdr, value, valuelen);
    } else if (IS("content-type")) {
        copy_hdr(k->content_type, sizeof k->content_type, value, valuelen);
    } else if (IS("te")) {
        k->have_te_trailers = valuelen == 8 && memcmp(value, "trailers", 8) == 0;
    } else if (IS("grpc-timeout")) {
        long long ms = vf_grpc_timeout_parse((const char *)value, valuelen);
        k->timeout_ms = ms < 0 ? -2 : ms;
    } else if (IS("grpc-encoding")) {
        copy_hdr(k->grpc_encoding, sizeof k->grpc_encoding, value, valuelen);
    }
#undef IS
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *ud) {
    vf_rpc_conn *c = ud;
    if (c->state == CONN_CLOSED) return NGHTTP2_ERR_CALLBACK_FAILURE;
    vf_rpc_conn_on_frame_common(c, frame);
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    vf_rpc_call *k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!k) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) handle_request(c, k);
    k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (k && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) vf_rpc_call_on_remote_close(k);
    return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *ud) {
    if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    vf_rpc_call *k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    /* status sent while the client still sends: tell it to stop (as gRPC servers do) */
    if (k && !k->remote_closed) nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *ud) {
    vf_rpc_call *k = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!k) return 0;
    if (k->status_set)
        vf_rpc_call_end(k, k->status, k->status_msg);
    else
        vf_rpc_call_end(k, VF_GRPC_CANCELLED, "the client cancelled the call");
    return 0;
}

static nghttp2_session_callbacks *server_callbacks(void) {
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) return NULL;
    vf_rpc_conn_set_common_callbacks(cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
}

/* ---- connections ------------------------------------------------------------- */

/* Authenticated connections of peers that are not admins, other than c. */
static int established_non_admins(const vf_rpc_server *s, const vf_rpc_conn *c) {
    int n = 0;
    for (const vf_rpc_conn *o = s->conns; o; o = o->next)
        n += o != c && o->state == CONN_OPEN && o->peer.role != VF_ROLE_ADMIN;
    return n;
}

void vf_rpc_server_on_conn_ready(vf_rpc_conn *c) {
    vf_rpc_server *s = c->server;
    vf_error err;
    int soft = s->cfg.max_connections - s->cfg.admin_reserve;
    if (c->peer.role != VF_ROLE_ADMIN && established_non_admins(s, c) >= soft) {
        s->st.rejected_reserve++;
        vf_log(VF_WARN, "event=rpc_conn_refused peer=%s role=%s name=%s serial=%s reason=\"admin reserve\"", c->peer_addr,
               vf_role_name(c->peer.role), c->peer.name, c->peer.serial_hex);
        vf_rpc_conn_close(c, "connection limit for non-admin peers (%d = max_connections %d - admin_reserve %d) reached; "
                             "the rest is kept for admins", soft, s->cfg.max_connections, s->cfg.admin_reserve);
        return;
    }
    if (vf_rpc_conn_start_h2(c, s->cbs, &err) < 0) {
        vf_rpc_conn_close(c, "%s", err.msg);
        return;
    }
    vf_log(VF_INFO, "event=rpc_conn_open peer=%s role=%s name=%s serial=%s", c->peer_addr, vf_role_name(c->peer.role),
           c->peer.name, c->peer.serial_hex);
}

static void on_server_handle_closed(uv_handle_t *h);

void vf_rpc_server_on_conn_freed(vf_rpc_conn *c) {
    vf_rpc_server *s = c->server;
    if (c->prev) c->prev->next = c->next;
    else if (s->conns == c) s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    free(c);
    if (s->shutting_down && s->n_conns == 0 && s->loop && !uv_is_closing((uv_handle_t *)&s->grace))
        uv_close((uv_handle_t *)&s->grace, on_server_handle_closed);
}

static void check_revoked(vf_rpc_server *s) {
    if (!s->tls.crl) return;
    for (vf_rpc_conn *c = s->conns, *nx; c; c = nx) {
        nx = c->next;
        if (c->state != CONN_OPEN) continue;
        const mbedtls_x509_crt *crt = c->type->peer_cert(c);
        if (crt && s->tls.crl->version != 0 && mbedtls_x509_crt_is_revoked(crt, s->tls.crl)) {
            char why[300];
            snprintf(why, sizeof why, "certificate revoked by the federation CA (serial %s): open connection closed",
                     c->peer.serial_hex);
            refused(c, &c->peer, 0, why);   /* the audit log names who was cut */
            vf_rpc_conn_close(c, "certificate serial %s is now revoked (CRL reloaded)", c->peer.serial_hex);
        }
    }
}

#define CRL_ALARM_MS 60000 /* while the list is unusable, new connections repeat the alarm this often */

/* Fail closed: a configured list that is unusable refuses everyone under
 * refuse-all, and under keep too while no good list was ever loaded (there
 * is nothing to keep, and "no list" would un-revoke every revoked peer). */
static int refuse_all(const vf_rpc_server *s) {
    return s->tls.crl_unusable && (s->cfg.crl_missing == VF_RPC_CRL_REFUSE_ALL || !s->tls.crl_loaded);
}

/* The ERROR line an operator must see while the revocation list is missing
 * or bad: what is wrong and what the server does about it. */
static void crl_alarm(vf_rpc_server *s, const char *why) {
    const char *action = s->cfg.crl_missing == VF_RPC_CRL_REFUSE_ALL
                             ? "refusing every connection until a good list is back (crl_missing = refuse-all)"
                         : s->tls.crl_loaded ? "keeping the last good list (crl_missing = keep)"
                                             : "no good list was ever loaded: refusing every connection until one is";
    vf_log(VF_ERROR, "event=rpc_crl_unusable file=%s when=%s error=\"%s\" action=\"%s\"", s->crl_file, why,
           s->tls.crl_problem, action);
    s->crl_alarm_at = s->loop ? uv_now(s->loop) : 0;
}

static void close_all_for_crl(vf_rpc_server *s) {
    for (vf_rpc_conn *c = s->conns, *nx; c; c = nx) {
        nx = c->next;
        if (c->state != CONN_CLOSED)
            vf_rpc_conn_close(c, "the revocation list %s is unusable (%s); %s closes every connection", s->crl_file,
                              s->tls.crl_problem, s->tls.crl_loaded ? "crl_missing = refuse-all" : "having no good list");
    }
}

/* Looks at the list (force: re-read it even if unchanged), swaps in a new
 * good one and cuts newly revoked peers, or alarms and keeps the list in
 * force.  Returns the reload's result. */
static int crl_refresh(vf_rpc_server *s, int force, const char *why, vf_error *err) {
    int changed = 0, was_unusable = s->tls.crl_unusable;
    if (vf_rpc_tls_reload_crl(&s->tls, force, &changed, err) < 0) {
        crl_alarm(s, why);
        if (refuse_all(s)) close_all_for_crl(s);
        return -1;
    }
    if (changed) {
        vf_log(VF_INFO, "event=rpc_crl_reloaded file=%s reason=%s%s", s->crl_file[0] ? s->crl_file : "-", why,
               was_unusable ? " note=\"the list is usable again\"" : "");
        check_revoked(s);
    } else if (s->tls.crl_unusable && s->loop && uv_now(s->loop) - s->crl_alarm_at >= CRL_ALARM_MS) {
        crl_alarm(s, "still");
    }
    return 0;
}

int vf_rpc_server_reload_crl(vf_rpc_server *s, vf_error *err) { return crl_refresh(s, 1, "reload", err); }

static void on_sighup(uv_signal_t *h, int sig) {
    vf_error err;
    crl_refresh(h->data, 1, "sighup", &err); /* a failure is logged by crl_alarm */
}

/* `vflclip cert revoke` rewrites the list file: looking at it (a stat; a
 * re-read only when it changed) every CRL_POLL_MS cuts a revoked peer's open
 * connections within seconds, without waiting for SIGHUP or a new connection. */
#define CRL_POLL_MS 2000
static void on_crl_timer(uv_timer_t *t) {
    vf_error err;
    crl_refresh(t->data, 0, "changed", &err);
}

static void peer_name(vf_rpc_conn *c) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    snprintf(c->peer_addr, sizeof c->peer_addr, "?");
    snprintf(c->peer_ip, sizeof c->peer_ip, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
    if (ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, c->peer_ip, sizeof c->peer_ip);
        snprintf(c->peer_addr, sizeof c->peer_addr, "%s:%d", c->peer_ip, ntohs(((struct sockaddr_in *)&ss)->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer_ip, sizeof c->peer_ip);
        snprintf(c->peer_addr, sizeof c->peer_addr, "[%s]:%d", c->peer_ip,
                 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    }
}

/* Connections from c's address other than c, in any state but closed. */
static int same_source(const vf_rpc_server *s, const vf_rpc_conn *c) {
    int n = 0;
    for (const vf_rpc_conn *o = s->conns; o; o = o->next)
        n += o != c && o->state != CONN_CLOSED && strcmp(o->peer_ip, c->peer_ip) == 0;
    return n;
}

static void on_connection(uv_stream_t *l, int status) {
    vf_rpc_server *s = l->data;
    if (status < 0) {
        vf_log(VF_WARN, "event=rpc_accept_failed error=\"%s\"", uv_strerror(status));
        return;
    }
    vf_rpc_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    vf_rpc_conn_init(c, s->loop, 1, &vf_rpc_conn_tls, &s->tls);
    c->server = s;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        vf_rpc_conn_close(c, "accept failed");
        return;
    }
    s->st.accepted++;
    peer_name(c);
    if (s->shutting_down) {
        vf_rpc_conn_close(c, "the server is shutting down");
        return;
    }
    if (s->n_conns > s->cfg.max_connections) {
        s->st.rejected_cap++;
        vf_rpc_conn_close(c, "connection limit (%d) reached", s->cfg.max_connections);
        return;
    }
    if (same_source(s, c) >= s->cfg.max_per_source) {
        s->st.rejected_source++;
        vf_rpc_conn_close(c, "per-source connection limit (%d from %s) reached", s->cfg.max_per_source, c->peer_ip);
        return;
    }
    vf_error err;
    crl_refresh(s, 0, "changed", &err);
    if (refuse_all(s)) {
        vf_rpc_conn_close(c, "refused: the revocation list %s is unusable (%s) and %s", s->crl_file, s->tls.crl_problem,
                          s->tls.crl_loaded ? "crl_missing = refuse-all" : "no good list was ever loaded");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->keepalive_ms = s->cfg.keepalive_ms;
    c->keepalive_timeout_ms = s->cfg.keepalive_timeout_ms;
    c->stream_window = s->cfg.stream_window;
    c->max_recv_message = s->cfg.max_recv_message;
    c->recv_pool = &s->recv_pool;
    c->max_send_queued = s->cfg.max_send_queued;
    c->write_timeout_ms = s->cfg.write_timeout_ms;
    if (vf_rpc_conn_start(c, NULL, &err) < 0) {
        vf_rpc_conn_close(c, "%s", err.msg);
        return;
    }
    c->handshake_deadline = uv_now(s->loop) + (uint64_t)s->cfg.handshake_timeout_ms;
    vf_rpc_conn_start_reading(c);
    vf_rpc_conn_arm_timer(c);
}

/* ---- server life cycle ------------------------------------------------------- */

static int copy_methods(vf_rpc_server *s, const vf_rpc_method *methods, int n, vf_error *err) {
    s->methods = calloc((size_t)(n > 0 ? n : 1), sizeof *methods);
    if (!s->methods) return vf_fail(err, "out of memory");
    for (int i = 0; i < n; i++) {
        if (!methods[i].path || methods[i].path[0] != '/')
            return vf_fail(err, "method %d: path must look like /package.Service/Method", i);
        s->methods[i] = methods[i];
    }
    s->n_methods = n;
    s->cbs = server_callbacks();
    if (!s->cbs) return vf_fail(err, "out of memory");
    return 0;
}

static void on_failed_listener_closed(uv_handle_t *h) { vf_rpc_server_free(h->data); }

int vf_rpc_server_start(uv_loop_t *loop, const vf_rpc_server_config *cfg_in, const vf_rpc_method *methods,
                        int n_methods, vf_rpc_server **out, vf_error *err) {
    *out = NULL;
    vf_rpc_server *s = calloc(1, sizeof *s);
    if (!s) return vf_fail(err, "out of memory");
    s->loop = loop;
    s->cfg = *cfg_in;
    vf_rpc_server_config_defaults(&s->cfg);
    snprintf(s->ca_file, sizeof s->ca_file, "%s", cfg_in->tls.ca_file ? cfg_in->tls.ca_file : "");
    snprintf(s->cert_file, sizeof s->cert_file, "%s", cfg_in->tls.cert_file ? cfg_in->tls.cert_file : "");
    snprintf(s->key_file, sizeof s->key_file, "%s", cfg_in->tls.key_file ? cfg_in->tls.key_file : "");
    snprintf(s->crl_file, sizeof s->crl_file, "%s", cfg_in->tls.crl_file ? cfg_in->tls.crl_file : "");
    vf_rpc_tls_files files = {s->ca_file, s->cert_file, s->key_file, s->crl_file[0] ? s->crl_file : NULL};
    if (s->cfg.max_connections < 1 || s->cfg.max_per_source < 1 || s->cfg.handshake_timeout_ms < 1 ||
        s->cfg.admin_reserve < 0 || s->cfg.admin_reserve >= s->cfg.max_connections || s->cfg.write_timeout_ms < 1 ||
        s->cfg.max_recv_buffered < s->cfg.max_recv_message) {
        vf_fail(err, "limits: max_connections %d, max_per_source %d, handshake_timeout_ms %d and write_timeout_ms %d "
                     "must be positive, admin_reserve %d below max_connections, max_recv_buffered %zu at least "
                     "max_recv_message %zu",
                s->cfg.max_connections, s->cfg.max_per_source, s->cfg.handshake_timeout_ms, s->cfg.write_timeout_ms,
                s->cfg.admin_reserve, s->cfg.max_recv_buffered, s->cfg.max_recv_message);
        goto fail;
    }
    if (s->cfg.crl_missing != VF_RPC_CRL_KEEP && s->cfg.crl_missing != VF_RPC_CRL_REFUSE_ALL) {
        vf_fail(err, "crl_missing must be keep or refuse-all (got %d)", s->cfg.crl_missing);
        goto fail;
    }
    s->recv_pool.max = s->cfg.max_recv_buffered;
    if (copy_methods(s, methods, n_methods, err) < 0) goto fail;
    if (vf_rpc_tls_init(&s->tls, &files, 1, err) < 0) goto fail_tls;
    s->tls_ready = 1;
    struct sockaddr_storage addr;
    int r;
    if (uv_ip4_addr(s->cfg.host, s->cfg.port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(s->cfg.host, s->cfg.port, (struct sockaddr_in6 *)&addr) != 0) {
        vf_fail(err, "listen address '%s' is not an IP address", s->cfg.host);
        goto fail_tls;
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->handles_open = 1;
    if ((r = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) != 0 ||
        (r = uv_listen((uv_stream_t *)&s->listener, 256, on_connection)) != 0) {
        vf_fail(err, "cannot listen on %s:%d: %s", s->cfg.host, s->cfg.port, uv_strerror(r));
        uv_close((uv_handle_t *)&s->listener, on_failed_listener_closed); /* frees s */
        return -1;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    s->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                               : ((struct sockaddr_in6 *)&bound)->sin6_port);
    uv_timer_init(loop, &s->grace);
    s->grace.data = s;
    s->handles_open++;
    if (s->cfg.watch_sighup) {
        uv_signal_init(loop, &s->sighup);
        s->sighup.data = s;
        uv_signal_start(&s->sighup, on_sighup, SIGHUP);
        s->handles_open++;
    }
    if (s->crl_file[0]) {
        uv_timer_init(loop, &s->crl_timer);
        s->crl_timer.data = s;
        uv_timer_start(&s->crl_timer, on_crl_timer, CRL_POLL_MS, CRL_POLL_MS);
        s->crl_timer_on = 1;
        s->handles_open++;
    }
    vf_log(VF_INFO,
           "event=rpc_listening addr=%s port=%d methods=%d max_connections=%d max_per_source=%d admin_reserve=%d "
           "handshake_timeout_ms=%d",
           s->cfg.host, s->port, s->n_methods, s->cfg.max_connections, s->cfg.max_per_source, s->cfg.admin_reserve,
           s->cfg.handshake_timeout_ms);
    if (s->tls.crl_unusable) crl_alarm(s, "start");
    *out = s;
    return 0;
fail_tls:
    vf_rpc_tls_free(&s->tls);
fail:
    if (s->cbs) nghttp2_session_callbacks_del(s->cbs);
    free(s->methods);
    free(s);
    return -1;
}

int vf_rpc_server_port(const vf_rpc_server *s) { return s->port; }

void vf_rpc_server_stats_get(const vf_rpc_server *s, vf_rpc_server_stats *st) {
    *st = s->st;
    st->connections = s->n_conns;
    st->recv_buffered = s->recv_pool.used;
    st->handshaking = 0;
    st->calls_active = 0;
    for (vf_rpc_conn *c = s->conns; c; c = c->next) {
        st->handshaking += c->state == CONN_HANDSHAKE || c->state == CONN_TCP_CONNECTING;
        st->calls_active += c->n_calls;
    }
}

static void maybe_notify_closed(vf_rpc_server *s) {
    if (!s->shutting_down || s->notified || s->n_conns > 0 || s->handles_open > 0) return;
    s->notified = 1;
    if (s->on_closed) s->on_closed(s, s->on_closed_ud);
}

static void on_server_handle_closed(uv_handle_t *h) {
    vf_rpc_server *s = h->data;
    s->handles_open--;
    maybe_notify_closed(s);
}

static void on_grace(uv_timer_t *t) {
    vf_rpc_server *s = t->data;
    for (vf_rpc_conn *c = s->conns, *nx; c; c = nx) {
        nx = c->next;
        vf_rpc_conn_close(c, "shutdown grace period over");
    }
}

void vf_rpc_server_shutdown(vf_rpc_server *s, int grace_ms, void (*on_closed)(vf_rpc_server *, void *), void *ud) {
    if (s->shutting_down) return;
    s->shutting_down = 1;
    s->on_closed = on_closed;
    s->on_closed_ud = ud;
    vf_log(VF_INFO, "event=rpc_shutdown connections=%d grace_ms=%d", s->n_conns, grace_ms);
    uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
    if (s->cfg.watch_sighup) uv_close((uv_handle_t *)&s->sighup, on_server_handle_closed);
    if (s->crl_timer_on) uv_close((uv_handle_t *)&s->crl_timer, on_server_handle_closed);
    for (vf_rpc_conn *c = s->conns, *nx; c; c = nx) {
        nx = c->next;
        if (c->state == CONN_OPEN && c->h2) {
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            c->goaway = 1;
            vf_rpc_conn_pump(c);
        } else {
            vf_rpc_conn_close(c, "the server is shutting down");
        }
    }
    if (s->n_conns == 0)
        uv_close((uv_handle_t *)&s->grace, on_server_handle_closed);
    else
        uv_timer_start(&s->grace, on_grace, (uint64_t)(grace_ms > 0 ? grace_ms : 0), 0);
}

void vf_rpc_server_free(vf_rpc_server *s) {
    if (!s) return;
    if (s->tls_ready) vf_rpc_tls_free(&s->tls);
    if (s->cbs) nghttp2_session_callbacks_del(s->cbs);
    free(s->methods);
    free(s);
}

/* ---- fuzzing ------------------------------------------------------------------- */

vf_rpc_server *vf_rpc_fuzz_server_new(const vf_rpc_method *methods, int n_methods, size_t max_recv_message) {
    vf_rpc_server *s = calloc(1, sizeof *s);
    vf_error err;
    if (!s) return NULL;
    s->cfg.max_recv_message = max_recv_message;
    vf_rpc_server_config_defaults(&s->cfg);
    s->recv_pool.max = s->cfg.max_recv_buffered;
    if (copy_methods(s, methods, n_methods, &err) < 0) {
        vf_rpc_server_free(s);
        return NULL;
    }
    return s;
}

void vf_rpc_fuzz_server_free(vf_rpc_server *s) { vf_rpc_server_free(s); }

vf_rpc_conn *vf_rpc_fuzz_conn_new(vf_rpc_server *s, vf_role role) {
    vf_rpc_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    vf_rpc_conn_init(c, NULL, 1, &vf_rpc_conn_memory, NULL);
    c->server = s;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    c->stream_window = s->cfg.stream_window;
    c->max_recv_message = s->cfg.max_recv_message;
    c->recv_pool = &s->recv_pool;
    c->peer.role = role;
    snprintf(c->peer.name, sizeof c->peer.name, "fuzz");
    snprintf(c->peer_addr, sizeof c->peer_addr, "fuzz");
    c->state = CONN_OPEN;
    vf_error err;
    if (!c->plain || vf_rpc_conn_start_h2(c, s->cbs, &err) < 0) {
        vf_rpc_conn_free_now(c);
        return NULL;
    }
    return c;
}

void vf_rpc_fuzz_feed(vf_rpc_conn *c, const uint8_t *data, size_t len) { vf_rpc_conn_input(c, data, len); }

void vf_rpc_fuzz_conn_free(vf_rpc_conn *c) {
    vf_rpc_conn_close(c, "fuzz input done");
    vf_rpc_conn_free_now(c);
}
