/* client: the dialling side of the transport.  Resolves and connects, runs
 * the TLS handshake (server certificate verified against the CA and the host
 * name dialled, DNS or IP SAN), then opens calls as HTTP/2 streams and turns
 * response headers, trailers and resets into a gRPC status.  Reconnecting is
 * the caller's business: on_closed says when to. */
#include "rpc/rpc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

struct vf_rpc_client {
    vf_rpc_conn conn; /* first: the conn pointer is the client pointer */
    vf_rpc_client_config cfg;
    char host[256], server_name[256], authority[300];
    char ca_file[1024], cert_file[1024], key_file[1024], crl_file[1024];
    vf_rpc_tls tls;
    vf_rpc_client_handlers h;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    int resolving, free_after_resolve;
    int ready_reported;
};

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

/* ---- streams ------------------------------------------------------------- */

static int http_to_grpc(int http) {
    switch (http) {
    case 400: return VF_GRPC_INTERNAL;
    case 401: return VF_GRPC_UNAUTHENTICATED;
    case 403: return VF_GRPC_PERMISSION_DENIED;
    case 404: return VF_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504: return VF_GRPC_UNAVAILABLE;
    default: return VF_GRPC_UNKNOWN;
    }
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    vf_rpc_call *k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!k) return 0;
#define IS(n) (namelen == sizeof(n) - 1 && memcmp(name, n, namelen) == 0)
    if (IS(":status")) {
        int v = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++) v = v * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
        k->http_status = v;
    } else if (IS("grpc-status")) {
        int v = 0, ok = valuelen > 0 && valuelen <= 3;
        for (size_t i = 0; ok && i < valuelen; i++) {
            if (value[i] < '0' || value[i] > '9') ok = 0;
            else v = v * 10 + value[i] - '0';
        }
        k->got_grpc_status = 1;
        k->status = ok ? v : VF_GRPC_UNKNOWN;
    } else if (IS("grpc-message")) {
        vf_grpc_message_decode((const char *)value, valuelen, k->status_msg, sizeof k->status_msg);
    } else if (IS("content-type")) {
        size_t n = valuelen < sizeof k->content_type - 1 ? valuelen : sizeof k->content_type - 1;
        memcpy(k->content_type, value, n);
        k->content_type[n] = 0;
    }
#undef IS
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *ud) {
    vf_rpc_conn *c = ud;
    if (c->state == CONN_CLOSED) return NGHTTP2_ERR_CALLBACK_FAILURE;
    vf_rpc_conn_on_frame_common(c, frame);
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        vf_rpc_call *k = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
        if (k) vf_rpc_call_on_remote_close(k);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *ud) {
    vf_rpc_call *k = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!k) return 0;
    char msg[300];
    if (k->got_grpc_status) {
        vf_rpc_call_end(k, k->status, k->status_msg);
    } else if (error_code == NGHTTP2_REFUSED_STREAM) {
        vf_rpc_call_end(k, VF_GRPC_UNAVAILABLE, "the server refused the stream (REFUSED_STREAM)");
    } else if (error_code == NGHTTP2_CANCEL) {
        vf_rpc_call_end(k, VF_GRPC_CANCELLED, "the server cancelled the stream");
    } else if (error_code != NGHTTP2_NO_ERROR) {
        snprintf(msg, sizeof msg, "the stream was reset (HTTP/2 error %s)", nghttp2_http2_strerror(error_code));
        vf_rpc_call_end(k, VF_GRPC_INTERNAL, msg);
    } else if (k->http_status != 200) {
        snprintf(msg, sizeof msg, "HTTP status %d from the server", k->http_status);
        vf_rpc_call_end(k, http_to_grpc(k->http_status), msg);
    } else {
        vf_rpc_call_end(k, VF_GRPC_INTERNAL, "the server ended the stream without a grpc-status");
    }
    return 0;
}

static nghttp2_session_callbacks *client_callbacks(void) {
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) return NULL;
    vf_rpc_conn_set_common_callbacks(cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
}

vf_rpc_call *vf_rpc_client_call(vf_rpc_client *cl, const char *path, int timeout_ms, const vf_rpc_call_handlers *h,
                                vf_error *err) {
    vf_rpc_conn *c = &cl->conn;
    if (c->state != CONN_OPEN || !c->h2) {
        vf_fail(err, "%s: not connected", c->peer_addr);
        return NULL;
    }
    if (c->goaway) {
        vf_fail(err, "%s: the connection is going away (GOAWAY); reconnect", c->peer_addr);
        return NULL;
    }
    if (!path || path[0] != '/' || strlen(path) >= sizeof(((vf_rpc_call *)0)->path)) {
        vf_fail(err, "%s: bad method path '%s'", c->peer_addr, path ? path : "(null)");
        return NULL;
    }
    vf_rpc_call *k = vf_rpc_call_new(c, -1, 0);
    if (!k) {
        vf_fail(err, "%s: out of memory", c->peer_addr);
        return NULL;
    }
    snprintf(k->path, sizeof k->path, "%s", path);
    k->ch = *h;
    char tmo[32] = "";
    if (timeout_ms > 0) vf_grpc_timeout_format(timeout_ms, tmo, sizeof tmo);
    nghttp2_nv nv[] = {NV(":method", "POST"),        NV(":scheme", "https"),
                       NV(":path", k->path),         NV(":authority", cl->authority),
                       NV("content-type", "application/grpc"), NV("te", "trailers"),
                       NV("user-agent", "vflclip-rpc/1"),      NV("grpc-timeout", tmo)};
    nghttp2_data_provider prd;
    prd.source.ptr = k;
    prd.read_callback = vf_rpc_call_read_cb;
    int32_t id = nghttp2_submit_request(c->h2, NULL, nv, timeout_ms > 0 ? 8 : 7, &prd, k);
    if (id < 0) {
        vf_fail(err, "%s: cannot open a stream: %s", c->peer_addr, nghttp2_strerror(id));
        k->ch.on_done = NULL;
        vf_rpc_call_end(k, VF_GRPC_INTERNAL, NULL);
        return NULL;
    }
    k->stream_id = id;
    if (timeout_ms > 0) k->deadline = uv_now(c->loop) + (uint64_t)timeout_ms;
    if (!c->in_pump) vf_rpc_conn_pump(c);
    return k;
}

int vf_rpc_call_close_send(vf_rpc_call *k, vf_error *err) {
    if (k->is_server) return vf_fail(err, "%s: a server call ends with vf_rpc_call_finish", k->path);
    if (k->done) return vf_fail(err, "%s: the call is over", k->path);
    if (k->send_closed) return 0;
    k->send_closed = 1;
    vf_rpc_call_wake_sender(k);
    return 0;
}

void vf_rpc_call_cancel(vf_rpc_call *k) {
    if (k->done) return;
    vf_rpc_conn *c = k->conn;
    if (c->h2 && k->stream_id > 0 && c->state == CONN_OPEN)
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, k->stream_id, NGHTTP2_CANCEL);
    vf_rpc_call_end(k, VF_GRPC_CANCELLED, "cancelled by the caller");
    if (c->state == CONN_OPEN && !c->in_pump) vf_rpc_conn_pump(c);
}

/* ---- connection ------------------------------------------------------------ */

void vf_rpc_client_on_conn_ready(vf_rpc_conn *c) {
    vf_rpc_client *cl = (vf_rpc_client *)c;
    const mbedtls_x509_crt *crt = c->type->peer_cert(c);
    if (!vf_rpc_tls_crt_names_host(crt, cl->server_name)) {
        vf_rpc_conn_close(c, "TLS handshake failed: the server certificate has no SAN for %s", cl->server_name);
        return;
    }
    vf_role want = cl->cfg.server_role != VF_ROLE_NONE ? cl->cfg.server_role : VF_ROLE_AGGREGATOR;
    if (c->peer.role != want) {
        vf_rpc_conn_close(c, "the server's certificate is for %s '%s', not for the %s", vf_role_name(c->peer.role),
                          c->peer.name, vf_role_name(want));
        return;
    }
    nghttp2_session_callbacks *cbs = client_callbacks();
    vf_error err;
    int rc = cbs ? vf_rpc_conn_start_h2(c, cbs, &err) : vf_fail(&err, "out of memory");
    if (cbs) nghttp2_session_callbacks_del(cbs);
    if (rc < 0) {
        vf_rpc_conn_close(c, "%s", err.msg);
        return;
    }
    c->handshake_deadline = 0;
    cl->ready_reported = 1;
    vf_log(VF_DEBUG, "event=rpc_client_ready peer=%s role=%s name=%s", c->peer_addr, vf_role_name(c->peer.role),
           c->peer.name);
    if (cl->h.on_ready) cl->h.on_ready(cl, 0, "", cl->h.ud);
}

void vf_rpc_client_on_conn_closed(vf_rpc_conn *c) {
    vf_rpc_client *cl = (vf_rpc_client *)c;
    if (!cl->ready_reported) {
        cl->ready_reported = 1;
        if (cl->h.on_ready) cl->h.on_ready(cl, -1, c->close_reason, cl->h.ud);
    } else if (cl->h.on_closed) {
        cl->h.on_closed(cl, c->close_reason, cl->h.ud);
    }
}

void vf_rpc_client_on_conn_freed(vf_rpc_conn *c) {
    vf_rpc_client *cl = (vf_rpc_client *)c;
    if (cl->resolving) {
        cl->free_after_resolve = 1;
        return;
    }
    vf_rpc_tls_free(&cl->tls);
    free(cl);
}

static void on_connected(uv_connect_t *req, int status) {
    vf_rpc_client *cl = req->data;
    vf_rpc_conn *c = &cl->conn;
    if (c->state == CONN_CLOSED) return;
    if (status < 0) {
        vf_rpc_conn_close(c, "cannot connect: %s", uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    vf_error err;
    if (vf_rpc_conn_start(c, cl->server_name, &err) < 0) {
        vf_rpc_conn_close(c, "%s", err.msg);
        return;
    }
    vf_rpc_conn_start_reading(c);
    vf_rpc_conn_handshake(c); /* sends the ClientHello */
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    vf_rpc_client *cl = req->data;
    vf_rpc_conn *c = &cl->conn;
    cl->resolving = 0;
    if (cl->free_after_resolve) {
        if (res) uv_freeaddrinfo(res);
        vf_rpc_client_on_conn_freed(c);
        return;
    }
    if (c->state == CONN_CLOSED) {
        if (res) uv_freeaddrinfo(res);
        return;
    }
    if (status < 0 || !res) {
        vf_rpc_conn_close(c, "cannot resolve %s: %s", cl->host, uv_strerror(status));
        return;
    }
    cl->creq.data = cl;
    int r = uv_tcp_connect(&cl->creq, &c->tcp, res->ai_addr, on_connected);
    uv_freeaddrinfo(res);
    if (r != 0) vf_rpc_conn_close(c, "cannot connect: %s", uv_strerror(r));
}

int vf_rpc_client_connect(uv_loop_t *loop, const vf_rpc_client_config *cfg, const vf_rpc_client_handlers *h,
                          vf_rpc_client **out, vf_error *err) {
    *out = NULL;
    if (!cfg->host || !cfg->host[0] || cfg->port <= 0 || cfg->port > 65535)
        return vf_fail(err, "client: a host and a port (1..65535) are required");
    vf_rpc_client *cl = calloc(1, sizeof *cl);
    if (!cl) return vf_fail(err, "out of memory");
    cl->cfg = *cfg;
    cl->h = *h;
    snprintf(cl->host, sizeof cl->host, "%s", cfg->host);
    snprintf(cl->server_name, sizeof cl->server_name, "%s", cfg->server_name ? cfg->server_name : cfg->host);
    snprintf(cl->authority, sizeof cl->authority, strchr(cl->host, ':') ? "[%s]:%d" : "%s:%d", cl->host, cfg->port);
    vf_rpc_tls_files files = cfg->tls;
    if (vf_rpc_tls_init(&cl->tls, &files, 0, err) < 0) {
        vf_rpc_tls_free(&cl->tls);
        free(cl);
        return -1;
    }
    vf_rpc_conn *c = &cl->conn;
    vf_rpc_conn_init(c, loop, 0, &vf_rpc_conn_tls, &cl->tls);
    snprintf(c->peer_addr, sizeof c->peer_addr, "%s", cl->authority);
    c->max_recv_message = cfg->max_recv_message ? cfg->max_recv_message : 4u << 20;
    c->stream_window = cfg->stream_window ? cfg->stream_window : 4u << 20;
    c->keepalive_ms = cfg->keepalive_ms;
    c->keepalive_timeout_ms = cfg->keepalive_timeout_ms ? cfg->keepalive_timeout_ms : 20000;
    c->handshake_deadline = uv_now(loop) + (uint64_t)(cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 10000);
    vf_rpc_conn_arm_timer(c);
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    cl->gai.data = cl;
    cl->resolving = 1;
    int r = uv_getaddrinfo(loop, &cl->gai, on_resolved, cl->host, port, &hints);
    if (r != 0) {
        cl->resolving = 0;
        *out = NULL;
        vf_fail(err, "cannot resolve %s: %s", cl->host, uv_strerror(r));
        cl->h.on_ready = NULL;
        cl->h.on_closed = NULL;
        vf_rpc_conn_close(c, "%s", err->msg); /* frees cl once its handles are closed */
        return -1;
    }
    *out = cl;
    return 0;
}

const vf_peer_identity *vf_rpc_client_peer(const vf_rpc_client *cl) { return &cl->conn.peer; }

void vf_rpc_client_close(vf_rpc_client *cl) {
    vf_rpc_conn *c = &cl->conn;
    if (c->state == CONN_CLOSED) return;
    if (c->state == CONN_OPEN && c->h2 && !c->goaway) {
        nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
        c->goaway = 1;
        if (!c->in_pump) vf_rpc_conn_pump(c);
        return;
    }
    vf_rpc_conn_close(c, "closed by the caller");
}
