/* call: one gRPC call (one HTTP/2 stream), the parts both sides share: the
 * send queue and its nghttp2 data provider, message decoding with flow
 * control (bytes are consumed, i.e. the window reopened, only once the
 * application took them), pausing, drain notifications, ending and freeing. */
#include "rpc/rpc_internal.h"

#include <protobuf-c/protobuf-c.h>
#include "util/log.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEND_LOW_WATER (256u * 1024)

vf_rpc_call *vf_rpc_call_new(vf_rpc_conn *c, int32_t stream_id, int is_server) {
    vf_rpc_call *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->conn = c;
    k->stream_id = stream_id;
    k->is_server = is_server;
    k->timeout_ms = -1;
    k->dec.max_len = c->max_recv_message;
    k->dec.pool = c->recv_pool;
    k->next = c->calls;
    if (c->calls) c->calls->prev = k;
    c->calls = k;
    c->n_calls++;
    return k;
}

static void call_free(vf_rpc_call *k) {
    k->conn->queued -= vf_rpc_buf_size(&k->sendq);
    vf_grpc_decoder_free(&k->dec);
    vf_rpc_buf_free(&k->sendq);
    vf_rpc_buf_free(&k->recv_held);
    free(k);
}

static void conn_kick(vf_rpc_conn *c) {
    if (!c->in_pump) vf_rpc_conn_pump(c);
}

void vf_rpc_call_end(vf_rpc_call *k, int status, const char *message) {
    if (k->done) return;
    k->done = 1;
    k->stop_feed = 1;
    vf_rpc_conn *c = k->conn;
    if (c->h2 && k->stream_id > 0) {
        nghttp2_session_set_stream_user_data(c->h2, k->stream_id, NULL);
        /* held data never reached the application: give its window back */
        size_t held = vf_rpc_buf_size(&k->recv_held);
        if (held && c->state != CONN_CLOSED) nghttp2_session_consume_connection(c->h2, held);
    }
    if (k->prev) k->prev->next = k->next;
    else c->calls = k->next;
    if (k->next) k->next->prev = k->prev;
    k->prev = k->next = NULL;
    c->n_calls--;
    if (k->is_server) {
        if (k->started && k->method->on_done) k->method->on_done(k, status, k->method->ud);
    } else if (k->ch.on_done) {
        k->ch.on_done(k, status, message ? message : "", k->ch.ud);
    }
    if (k->in_deliver)
        k->zombie = 1;
    else
        call_free(k);
}

/* ---- receiving ------------------------------------------------------------- */

static void deliver(void *ctx, const uint8_t *data, size_t len) {
    vf_rpc_call *k = ctx;
    if (k->done) return;
    if (k->is_server)
        vf_rpc_server_call_deliver(k, data, len);
    else if (k->ch.on_message)
        k->ch.on_message(k, data, len, k->ch.ud);
    k->stop_feed = k->recv_paused || k->done || k->recv_error;
}

static void decode_error(vf_rpc_call *k, int status, const char *msg) {
    vf_rpc_conn *c = k->conn;
    k->recv_error = 1;
    k->stop_feed = 1;
    if (status == VF_GRPC_RESOURCE_EXHAUSTED)
        vf_log(VF_WARN, "event=rpc_call_refused side=%s peer=%s role=%s name=%s method=%s status=RESOURCE_EXHAUSTED "
                        "reason=\"%s\"",
               k->is_server ? "server" : "client", c->peer_addr, vf_role_name(c->peer.role), c->peer.name, k->path, msg);
    if (k->is_server) {
        vf_rpc_server_call_fail(k, status, msg);
    } else {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, k->stream_id, NGHTTP2_CANCEL);
        vf_rpc_call_end(k, status, msg);
    }
}

/* Decodes len bytes; returns the number taken (the rest stays for later when
 * the application paused).  Frees a call that ended meanwhile: *gone set. */
static size_t decode(vf_rpc_call *k, const uint8_t *data, size_t len, int *gone) {
    vf_rpc_conn *c = k->conn;
    char emsg[256];
    size_t used = 0;
    *gone = 0;
    k->in_deliver = 1;
    int rc = vf_grpc_decoder_feed(&k->dec, data, len, deliver, k, &k->stop_feed, &used, emsg, sizeof emsg);
    if (rc != VF_GRPC_OK) used = len; /* the rest of the stream is dropped */
    if (c->h2 && c->state != CONN_CLOSED) {
        if (k->zombie)
            nghttp2_session_consume_connection(c->h2, used);
        else
            nghttp2_session_consume(c->h2, k->stream_id, used);
    }
    if (rc != VF_GRPC_OK && !k->done) decode_error(k, rc, emsg);
    k->in_deliver = 0;
    if (k->zombie) {
        call_free(k);
        *gone = 1;
        return len;
    }
    return used;
}

static void finish_remote_close(vf_rpc_call *k);

void vf_rpc_call_on_data(vf_rpc_call *k, const uint8_t *data, size_t len) {
    vf_rpc_conn *c = k->conn;
    if (k->done || k->recv_error) {
        nghttp2_session_consume(c->h2, k->stream_id, len);
        return;
    }
    if (k->recv_paused || vf_rpc_buf_size(&k->recv_held) > 0) {
        /* bounded by the stream window: the peer cannot send more */
        if (vf_rpc_buf_append(&k->recv_held, data, len) < 0) decode_error(k, VF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    int gone;
    size_t used = decode(k, data, len, &gone);
    if (gone || k->done || k->recv_error) return;
    if (used < len && vf_rpc_buf_append(&k->recv_held, data + used, len - used) < 0)
        decode_error(k, VF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
}

/* Feeds held data after a resume. */
static void drain_held(vf_rpc_call *k) {
    while (!k->recv_paused && !k->done && !k->recv_error && vf_rpc_buf_size(&k->recv_held) > 0) {
        int gone;
        size_t used = decode(k, k->recv_held.p + k->recv_held.off, vf_rpc_buf_size(&k->recv_held), &gone);
        if (gone) return;
        k->recv_held.off += used;
        if (used == 0) break;
    }
    if (!k->done && vf_rpc_buf_size(&k->recv_held) == 0 && k->half_close_due) {
        k->half_close_due = 0;
        finish_remote_close(k);
    }
}

void vf_rpc_call_pause_recv(vf_rpc_call *k, int paused) {
    if (k->done) return;
    k->recv_paused = paused != 0;
    k->stop_feed = k->recv_paused || k->recv_error;
    if (paused || k->in_deliver) return; /* an active decoder loop picks the data up */
    vf_rpc_conn *c = k->conn;
    drain_held(k);
    conn_kick(c);
}

static void finish_remote_close(vf_rpc_call *k) {
    if (vf_grpc_decoder_partial(&k->dec)) {
        decode_error(k, VF_GRPC_INTERNAL, "the stream ended in the middle of a message (truncated message)");
        return;
    }
    if (k->is_server && k->started && k->method->on_half_close) k->method->on_half_close(k, k->method->ud);
}

int vf_rpc_call_on_remote_close(vf_rpc_call *k) {
    k->remote_closed = 1;
    if (k->done || k->recv_error) return 0;
    if (vf_rpc_buf_size(&k->recv_held) > 0) {
        k->half_close_due = 1;
        return 0;
    }
    finish_remote_close(k);
    return 0;
}

/* ---- sending --------------------------------------------------------------- */

/* Says how much of the queue the next DATA frame carries and whether the
 * stream's data ends there; the bytes themselves go out without a copy in
 * vf_rpc_call_take_frame (NGHTTP2_DATA_FLAG_NO_COPY). */
static ssize_t read_cb(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud) {
    vf_rpc_call *k = nghttp2_session_get_stream_user_data(s, stream_id);
    if (!k) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the call is gone; its stream is being reset */
    size_t have = vf_rpc_buf_size(&k->sendq);
    size_t n = have < length ? have : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (have - n == 0) {
        if (k->is_server && k->status_set) {
            *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
            char st[16], msg[1024];
            snprintf(st, sizeof st, "%d", k->status);
            vf_grpc_message_encode(k->status_msg, msg, sizeof msg);
            nghttp2_nv tr[2] = {
                {(uint8_t *)"grpc-status", (uint8_t *)st, 11, strlen(st), NGHTTP2_NV_FLAG_NONE},
                {(uint8_t *)"grpc-message", (uint8_t *)msg, 12, strlen(msg), NGHTTP2_NV_FLAG_NONE},
            };
            nghttp2_submit_trailer(s, stream_id, tr, msg[0] ? 2 : 1);
        } else if (!k->is_server && k->send_closed) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (n == 0) {
            k->data_deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

const uint8_t *vf_rpc_call_take_frame(vf_rpc_call *k, size_t length) {
    vf_rpc_conn *c = k->conn;
    const uint8_t *p = k->sendq.p + k->sendq.off;
    k->sendq.off += length;
    c->queued -= length;
    uint64_t now;
    if (vf_rpc_conn_clock(c, &now)) c->tx_progress = now;
    if (k->drain_wanted && vf_rpc_buf_size(&k->sendq) < SEND_LOW_WATER) {
        k->drain_wanted = 0;
        k->drain_due = 1;
    }
    return p;
}

const nghttp2_data_source_read_callback vf_rpc_call_read_cb = read_cb;

void vf_rpc_call_run_drains(vf_rpc_conn *c) {
    for (;;) {
        vf_rpc_call *k = c->calls;
        while (k && !k->drain_due) k = k->next;
        if (!k) return;
        k->drain_due = 0;
        void (*cb)(vf_rpc_call *, void *) = k->is_server ? k->method->on_drain : k->ch.on_drain;
        void *ud = k->is_server ? k->method->ud : k->ch.ud;
        if (cb) cb(k, ud);
    }
}

void vf_rpc_call_wake_sender(vf_rpc_call *k) {
    vf_rpc_conn *c = k->conn;
    if (k->data_deferred && c->h2) {
        k->data_deferred = 0;
        nghttp2_session_resume_data(c->h2, k->stream_id);
    }
    conn_kick(c);
}

static int send_check(vf_rpc_call *k, vf_error *err) {
    if (k->done) return vf_fail(err, "%s: the call is over", k->path);
    if (k->send_closed || k->status_set) return vf_fail(err, "%s: the call is closed for sending", k->path);
    if (k->conn->state != CONN_OPEN) return vf_fail(err, "%s: the connection is closed", k->path);
    return 0;
}

/* The connection's send queues would pass their cap: the peer is not taking
 * what it is sent.  The call's queue is dropped and its stream reset with
 * ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED to a gRPC peer); on_done follows from
 * the stream's close, not from inside the caller's send, so the call pointer
 * stays valid until the caller returns to the loop. */
static void send_refuse(vf_rpc_call *k, size_t len, vf_error *err) {
    vf_rpc_conn *c = k->conn;
    vf_fail(err, "%s: send queue to %s full: %zu bytes queued on the connection, a %zu-byte message would pass the "
                 "limit of %zu (the peer is not reading)",
            k->path, c->peer_addr, c->queued, len, c->max_send_queued);
    vf_log(VF_WARN, "event=rpc_call_refused side=%s peer=%s role=%s name=%s method=%s status=RESOURCE_EXHAUSTED reason=\"%s\"",
           k->is_server ? "server" : "client", c->peer_addr, vf_role_name(c->peer.role), c->peer.name, k->path, err->msg);
    if (c->server) vf_rpc_server_note_send_refused(c);
    c->queued -= vf_rpc_buf_size(&k->sendq);
    k->sendq.off = k->sendq.len = 0;
    k->send_refused = 1;
    k->status_set = 1;
    k->status = VF_GRPC_RESOURCE_EXHAUSTED;
    snprintf(k->status_msg, sizeof k->status_msg, "%s", err->msg);
    if (c->h2 && k->stream_id > 0) nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, k->stream_id, NGHTTP2_ENHANCE_YOUR_CALM);
    c->pump_soon = 1;
    vf_rpc_conn_arm_timer(c);
}

static uint8_t *send_reserve(vf_rpc_call *k, size_t len, vf_error *err) {
    vf_rpc_conn *c = k->conn;
    if (len > 0xffffffffu) {
        vf_fail(err, "%s: message of %zu bytes is too large for gRPC", k->path, len);
        return NULL;
    }
    if (c->max_send_queued && c->queued + 5 + len > c->max_send_queued) {
        send_refuse(k, len, err);
        return NULL;
    }
    uint8_t *p = vf_rpc_buf_extend(&k->sendq, 5 + len);
    if (!p) {
        vf_fail(err, "%s: out of memory queueing a %zu-byte message", k->path, len);
        return NULL;
    }
    uint64_t now;
    if (c->queued == 0 && vf_rpc_conn_clock(c, &now)) c->tx_progress = now;
    c->queued += 5 + len;
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    return p + 5;
}

static int send_commit(vf_rpc_call *k, vf_error *err) {
    if (vf_rpc_buf_size(&k->sendq) >= SEND_LOW_WATER) k->drain_wanted = 1;
    if (k->is_server && !k->headers_sent && vf_rpc_server_call_send_headers(k) < 0)
        return vf_fail(err, "%s: cannot send the response headers", k->path);
    vf_rpc_call_wake_sender(k);
    return 0;
}

int vf_rpc_call_send(vf_rpc_call *k, const void *data, size_t len, vf_error *err) {
    if (send_check(k, err) < 0) return -1;
    uint8_t *p = send_reserve(k, len, err);
    if (!p) return -1;
    if (len) memcpy(p, data, len);
    return send_commit(k, err);
}

int vf_rpc_call_send_pb(vf_rpc_call *k, const ProtobufCMessage *msg, vf_error *err) {
    if (send_check(k, err) < 0) return -1;
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *p = send_reserve(k, len, err);
    if (!p) return -1;
    protobuf_c_message_pack(msg, p);
    return send_commit(k, err);
}

size_t vf_rpc_call_send_queued(const vf_rpc_call *k) { return vf_rpc_buf_size(&k->sendq); }
size_t vf_rpc_call_recv_held(const vf_rpc_call *k) { return vf_rpc_buf_size(&k->recv_held); }

/* ---- accessors ----------------------------------------------------------- */

const vf_peer_identity *vf_rpc_call_peer(const vf_rpc_call *k) { return &k->conn->peer; }
const char *vf_rpc_call_path(const vf_rpc_call *k) { return k->path; }
void vf_rpc_call_set_user(vf_rpc_call *k, void *user) { k->user = user; }
void *vf_rpc_call_user(const vf_rpc_call *k) { return k->user; }

long long vf_rpc_call_deadline_left_ms(const vf_rpc_call *k) {
    uint64_t now;
    if (!k->deadline || !vf_rpc_conn_clock(k->conn, &now)) return -1;
    return k->deadline > now ? (long long)(k->deadline - now) : 0;
}
