/* conn: one connection of the transport, server or client side, whatever it
 * runs over (its vf_rpc_conn_type, both defined below: TLS on a TCP socket,
 * or the memory type of the fuzz targets and unit tests).  The core above the
 * types calls only the type's functions for I/O.
 *
 * Bytes flow  wire -> vf_rpc_conn_input -> type->read (TLS: mbedtls_ssl_read)
 * -> nghttp2 -> streams, and  streams -> nghttp2_session_mem_send ->
 * one-record staging -> type->write (TLS: mbedtls_ssl_write into out_fill)
 * -> type->flush (TCP: uv_write).  Reads never block: no input is "more input
 * needed", and the output side always accepts into out_fill, which the TCP
 * type double-buffers with the write in flight so the steady state allocates
 * nothing.  nghttp2 is only asked for more output while out_fill is below a
 * high-water mark, and the TCP type stops reading while it is far above it,
 * so a peer that does not read cannot grow our memory.
 *
 * One timer per connection (where the type has a clock) serves the handshake
 * deadline, keepalive pings and the deadlines of its calls. */
#include "rpc/rpc_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define TLS_RECORD 16384           /* staging unit: one full TLS record of plaintext */
#define OUT_HIGH (1u << 20)        /* stop asking nghttp2 for output */
#define RBUF_SIZE (256 * 1024)     /* TLS type: large reads, fewer syscalls, fewer records split across reads */
#define OUT_STOP_READ (4u << 20)   /* TLS type: stop reading the socket */
#define CLOSE_FLUSH_MS 1000        /* TLS type: time to flush the last bytes of a closing connection */

static _Thread_local uint8_t g_dbuf[TLS_RECORD + 2048]; /* decrypted record; used only inside one callback */

uint8_t *vf_rpc_buf_extend(vf_rpc_buf *b, size_t n) {
    if (b->off == b->len) b->off = b->len = 0;
    if (b->len + n > b->cap) {
        if (b->off > 0 && b->len - b->off + n <= b->cap) {
            memmove(b->p, b->p + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        } else {
            size_t cap = b->cap ? b->cap : 16384;
            while (cap < b->len - b->off + n) cap *= 2;
            uint8_t *p = malloc(cap);
            if (!p) return NULL;
            if (b->len > b->off) memcpy(p, b->p + b->off, b->len - b->off);
            free(b->p);
            b->p = p;
            b->len -= b->off;
            b->off = 0;
            b->cap = cap;
        }
    }
    uint8_t *at = b->p + b->len;
    b->len += n;
    return at;
}

int vf_rpc_buf_append(vf_rpc_buf *b, const void *data, size_t n) {
    uint8_t *at = vf_rpc_buf_extend(b, n);
    if (!at) return -1;
    if (n) memcpy(at, data, n);
    return 0;
}

void vf_rpc_buf_free(vf_rpc_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- life cycle ---------------------------------------------------------- */

void vf_rpc_conn_init(vf_rpc_conn *c, uv_loop_t *loop, int is_server, const vf_rpc_conn_type *type, vf_rpc_tls *tls) {
    c->type = type;
    c->loop = loop;
    c->is_server = is_server;
    c->tls = tls;
    c->state = CONN_TCP_CONNECTING;
    c->plain = malloc(TLS_RECORD);
    type->init(c);
    uint64_t now;
    c->last_rx = type->clock(c, &now) ? now : 0;
}

int vf_rpc_conn_start(vf_rpc_conn *c, const char *hostname, vf_error *err) {
    if (c->type->start(c, hostname, err) < 0) return -1;
    if (!c->plain) return vf_fail(err, "%s: out of memory", c->peer_addr);
    c->state = CONN_HANDSHAKE;
    return 0;
}

void vf_rpc_conn_free_now(vf_rpc_conn *c) {
    if (c->h2) nghttp2_session_del(c->h2);
    c->h2 = NULL;
    c->type->free(c);
    free(c->plain);
    vf_rpc_buf_free(&c->out_fill);
    vf_rpc_buf_free(&c->out_flight);
    if (c->is_server)
        vf_rpc_server_on_conn_freed(c);
    else
        vf_rpc_client_on_conn_freed(c);
}

void vf_rpc_conn_close(vf_rpc_conn *c, const char *fmt, ...) {
    if (c->state == CONN_CLOSED) return;
    int was_open = c->state == CONN_OPEN;
    c->state = CONN_CLOSED;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->close_reason, sizeof c->close_reason, fmt, ap);
    va_end(ap);
    vf_log(was_open ? VF_INFO : VF_WARN, "event=rpc_conn_closed side=%s peer=%s role=%s name=%s reason=\"%s\"",
           c->is_server ? "server" : "client", c->peer_addr, was_open ? vf_role_name(c->peer.role) : "-",
           was_open ? c->peer.name : "-", c->close_reason);
    while (c->calls) vf_rpc_call_end(c->calls, VF_GRPC_UNAVAILABLE, c->close_reason);
    if (!c->is_server) vf_rpc_client_on_conn_closed(c);
    c->type->stop_reading(c);
    /* flush what is pending (GOAWAY, TLS alert), bounded by the type */
    if (was_open) c->type->shutdown(c);
    c->type->close(c);
}

/* ---- output -------------------------------------------------------------- */

static int conn_write(vf_rpc_conn *c, const uint8_t *p, size_t n) {
    char why[300];
    if (c->type->write(c, p, n, why, sizeof why) == 0) return 0;
    vf_rpc_conn_close(c, "%s", why);
    return -1;
}

/* Collects nghttp2 output into full TLS records (one frame header plus a
 * 16 KiB DATA payload would otherwise cost two records). */
static int stage(vf_rpc_conn *c, const uint8_t *data, size_t n) {
    while (n > 0) {
        if (c->plain_len == 0 && n >= TLS_RECORD) {
            if (conn_write(c, data, TLS_RECORD) < 0) return -1;
            data += TLS_RECORD;
            n -= TLS_RECORD;
            continue;
        }
        size_t take = TLS_RECORD - c->plain_len;
        if (take > n) take = n;
        memcpy(c->plain + c->plain_len, data, take);
        c->plain_len += take;
        data += take;
        n -= take;
        if (c->plain_len == TLS_RECORD) {
            c->plain_len = 0;
            if (conn_write(c, c->plain, TLS_RECORD) < 0) return -1;
        }
    }
    return 0;
}

static int stage_flush(vf_rpc_conn *c) {
    size_t n = c->plain_len;
    c->plain_len = 0;
    return n ? conn_write(c, c->plain, n) : 0;
}

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t length, int flags, void *ud) {
    vf_rpc_conn *c = ud;
    if (c->state == CONN_CLOSED) return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (vf_rpc_buf_size(&c->out_fill) >= OUT_HIGH) return NGHTTP2_ERR_WOULDBLOCK;
    return stage(c, data, length) < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : (ssize_t)length;
}

/* A DATA frame: header and payload go into one TLS record straight from the
 * call's send queue (the frame size is capped so they fit one record). */
static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *src, void *ud) {
    vf_rpc_conn *c = ud;
    if (c->state == CONN_CLOSED || frame->data.padlen > 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (vf_rpc_buf_size(&c->out_fill) >= OUT_HIGH) return NGHTTP2_ERR_WOULDBLOCK;
    vf_rpc_call *k = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!k) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const uint8_t *data = vf_rpc_call_take_frame(k, length);
    return stage(c, framehd, 9) < 0 || stage(c, data, length) < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static ssize_t data_length(nghttp2_session *s, uint8_t frame_type, int32_t stream_id, int32_t session_window,
                           int32_t stream_window, uint32_t remote_max_frame, void *ud) {
    ssize_t n = TLS_RECORD - 9; /* frame header + payload = one full record */
    if ((ssize_t)remote_max_frame < n) n = remote_max_frame;
    return n;
}

static int conn_is_idle_after_goaway(vf_rpc_conn *c) {
    return c->goaway && c->n_calls == 0 &&
           !nghttp2_session_want_write(c->h2);
}

void vf_rpc_conn_pump(vf_rpc_conn *c) {
    if (c->state == CONN_CLOSED) return;
    if (c->in_pump) return;
    c->in_pump = 1;
    if (c->state == CONN_OPEN && c->h2) {
        for (int round = 0; round < 8 && c->state == CONN_OPEN; round++) {
            int rv = nghttp2_session_send(c->h2); /* stops itself at OUT_HIGH (WOULDBLOCK) */
            if (rv != 0 && c->state == CONN_OPEN) vf_rpc_conn_close(c, "HTTP/2 send failed: %s", nghttp2_strerror(rv));
            if (c->state != CONN_OPEN || stage_flush(c) < 0) break;
            /* drains may queue more output */
            int had = 0;
            for (vf_rpc_call *k = c->calls; k; k = k->next) had |= k->drain_due;
            if (!had) break;
            vf_rpc_call_run_drains(c);
        }
        if (c->state == CONN_OPEN) {
            if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
                vf_rpc_conn_close(c, "HTTP/2 session ended%s", c->goaway ? " (GOAWAY)" : "");
            else if (conn_is_idle_after_goaway(c))
                vf_rpc_conn_close(c, "GOAWAY and no calls left");
        }
    }
    c->in_pump = 0;
    if (c->state != CONN_CLOSED) {
        c->type->flush(c);
        vf_rpc_conn_arm_timer(c);
    }
}

/* ---- input --------------------------------------------------------------- */

void vf_rpc_conn_start_reading(vf_rpc_conn *c) {
    if (c->state == CONN_CLOSED) return;
    c->type->start_reading(c);
}

static int handshake_step(vf_rpc_conn *c) {
    char why[512];
    int r = c->type->handshake(c, why, sizeof why);
    if (r == VF_RPC_HS_AGAIN) return 0;
    if (r == VF_RPC_HS_FAILED) {
        if (c->is_server) vf_rpc_server_note_handshake_failure(c, why);
        vf_rpc_conn_close(c, "%s handshake failed: %s", c->type->security, why);
        return -1;
    }
    if (r < 0) {
        vf_rpc_conn_close(c, "%s", why);
        return -1;
    }
    c->state = CONN_OPEN;
    if (c->is_server)
        vf_rpc_server_on_conn_ready(c);
    else
        vf_rpc_client_on_conn_ready(c);
    return c->state == CONN_OPEN ? 0 : -1;
}

void vf_rpc_conn_handshake(vf_rpc_conn *c) {
    if (handshake_step(c) < 0) return;
    if (c->state == CONN_OPEN)
        vf_rpc_conn_pump(c);
    else
        c->type->flush(c);
}

static void feed_h2(vf_rpc_conn *c, const uint8_t *p, size_t n) {
    ssize_t rv = nghttp2_session_mem_recv(c->h2, p, n);
    if (rv < 0 && c->state != CONN_CLOSED) {
        /* nghttp2 queued a GOAWAY where the protocol allows: stage it (the close
         * flushes it), then close with the error as the reason (a full pump
         * would close first, as "GOAWAY and no calls left") */
        c->goaway = 1;
        if (nghttp2_session_send(c->h2) == 0 && c->state != CONN_CLOSED) stage_flush(c);
        vf_rpc_conn_close(c, "HTTP/2 protocol error: %s", nghttp2_strerror((int)rv));
    }
}

static void read_input(vf_rpc_conn *c) {
    char why[300];
    while (c->state == CONN_OPEN) {
        int n = c->type->read(c, g_dbuf, TLS_RECORD, why, sizeof why);
        if (n == 0) break;
        if (n < 0) {
            vf_rpc_conn_close(c, "%s", why);
            break;
        }
        if (!c->h2) break;
        feed_h2(c, g_dbuf, (size_t)n);
    }
}

void vf_rpc_conn_input(vf_rpc_conn *c, const uint8_t *data, size_t len) {
    if (c->state == CONN_CLOSED) return;
    c->in = data;
    c->in_len = len;
    uint64_t now;
    if (vf_rpc_conn_clock(c, &now)) c->last_rx = now;
    if (c->state == CONN_HANDSHAKE && handshake_step(c) < 0) return;
    c->in_pump = 1; /* app calls made from callbacks defer their pump to the end */
    if (c->state == CONN_OPEN) read_input(c);
    c->in_pump = 0;
    c->in_len = 0;
    if (c->state == CONN_CLOSED) return;
    vf_rpc_conn_pump(c);
}

/* ---- timers ---------------------------------------------------------------- */

void vf_rpc_conn_arm_timer(vf_rpc_conn *c) {
    uint64_t now;
    if (c->state == CONN_CLOSED || !vf_rpc_conn_clock(c, &now)) return;
    uint64_t next = UINT64_MAX;
    if (c->pump_soon) next = 0;
    if (c->handshake_deadline && c->handshake_deadline < next) next = c->handshake_deadline;
    if (c->write_timeout_ms > 0) {
        /* a peer that stopped reading: output queued, nothing leaving */
        if (c->queued > 0 && c->tx_progress + (uint64_t)c->write_timeout_ms < next)
            next = c->tx_progress + (uint64_t)c->write_timeout_ms;
        if (c->writing && c->write_started + (uint64_t)c->write_timeout_ms < next)
            next = c->write_started + (uint64_t)c->write_timeout_ms;
    }
    if (c->ping_deadline) {
        if (c->ping_deadline < next) next = c->ping_deadline;
    } else if (c->keepalive_ms > 0 && c->state == CONN_OPEN) {
        uint64_t k = c->last_rx + (uint64_t)c->keepalive_ms;
        if (k < next) next = k;
    }
    for (vf_rpc_call *k = c->calls; k; k = k->next)
        if (k->deadline && k->deadline < next) next = k->deadline;
    if (next == UINT64_MAX) {
        c->type->set_timer(c, UINT64_MAX);
        return;
    }
    c->type->set_timer(c, next > now ? next - now : 0);
}

void vf_rpc_conn_on_timer(vf_rpc_conn *c) {
    uint64_t now;
    if (!vf_rpc_conn_clock(c, &now)) return;
    c->pump_soon = 0;
    if (c->write_timeout_ms > 0 && c->state == CONN_OPEN) {
        uint64_t limit = (uint64_t)c->write_timeout_ms;
        if (c->queued > 0 && now >= c->tx_progress + limit) {
            if (c->is_server) vf_rpc_server_note_write_timeout(c);
            vf_rpc_conn_close(c, "the peer stopped reading: %zu bytes queued for it and nothing sent for %d ms "
                                 "(write timeout)", c->queued, c->write_timeout_ms);
            return;
        }
        if (c->writing && now >= c->write_started + limit) {
            if (c->is_server) vf_rpc_server_note_write_timeout(c);
            vf_rpc_conn_close(c, "the peer stopped reading: a %zu-byte socket write not done in %d ms (write timeout)",
                              vf_rpc_buf_size(&c->out_flight), c->write_timeout_ms);
            return;
        }
    }
    if (c->handshake_deadline && now >= c->handshake_deadline) {
        if (c->is_server) vf_rpc_server_note_handshake_timeout(c);
        vf_rpc_conn_close(c, "%s%s not completed in time", c->state == CONN_OPEN ? "HTTP/2 connection preface" : c->type->security,
                          c->state == CONN_OPEN ? "" : " handshake");
        return;
    }
    if (c->ping_deadline && now >= c->ping_deadline) {
        vf_rpc_conn_close(c, "keepalive ping not acknowledged within %d ms", c->keepalive_timeout_ms);
        return;
    }
    if (!c->ping_deadline && c->keepalive_ms > 0 && c->state == CONN_OPEN && c->h2 &&
        now >= c->last_rx + (uint64_t)c->keepalive_ms) {
        if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL) == 0)
            c->ping_deadline = now + (uint64_t)c->keepalive_timeout_ms;
    }
    for (vf_rpc_call *k = c->calls, *nx; k; k = nx) {
        nx = k->next;
        if (k->deadline && now >= k->deadline) {
            k->deadline = 0;
            if (k->is_server && !k->headers_sent) {
                /* a status the client can read; the handler hears it at stream close */
                vf_rpc_server_call_fail(k, VF_GRPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
                continue;
            }
            if (c->h2 && k->stream_id > 0) nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, k->stream_id, NGHTTP2_CANCEL);
            vf_rpc_call_end(k, VF_GRPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
        }
    }
    vf_rpc_conn_pump(c);
}

/* ---- HTTP/2 ------------------------------------------------------------------ */

int vf_rpc_conn_start_h2(vf_rpc_conn *c, nghttp2_session_callbacks *cbs, vf_error *err) {
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) return vf_fail(err, "%s: out of memory", c->peer_addr);
    /* the window is reopened only when the application has taken the data */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    int rv = c->is_server ? nghttp2_session_server_new2(&c->h2, cbs, c, opt)
                          : nghttp2_session_client_new2(&c->h2, cbs, c, opt);
    nghttp2_option_del(opt);
    if (rv != 0) return vf_fail(err, "%s: HTTP/2 session: %s", c->peer_addr, nghttp2_strerror(rv));
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->is_server && c->server ? vf_rpc_server_max_streams(c) : 100},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->stream_window},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, TLS_RECORD},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    int niv = c->is_server ? 3 : 4;
    if ((rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, (size_t)niv)) != 0)
        return vf_fail(err, "%s: HTTP/2 settings: %s", c->peer_addr, nghttp2_strerror(rv));
    /* a connection-level window large enough for several streams at once */
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)(4 * c->stream_window));
    return 0;
}

void vf_rpc_conn_on_frame_common(vf_rpc_conn *c, const nghttp2_frame *frame) {
    switch (frame->hd.type) {
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) c->ping_deadline = 0;
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && !c->got_settings) {
            c->got_settings = 1;
            c->handshake_deadline = 0; /* preface complete */
        }
        break;
    case NGHTTP2_GOAWAY:
        c->goaway = 1;
        break;
    default: break;
    }
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                              void *ud) {
    vf_rpc_conn *c = ud;
    if (c->state == CONN_CLOSED) return NGHTTP2_ERR_CALLBACK_FAILURE;
    vf_rpc_call *call = nghttp2_session_get_stream_user_data(s, stream_id);
    if (!call) {
        nghttp2_session_consume(s, stream_id, len);
        return 0;
    }
    vf_rpc_call_on_data(call, data, len);
    return 0;
}

static int on_error(nghttp2_session *s, int code, const char *msg, size_t len, void *ud) {
    vf_rpc_conn *c = ud;
    vf_log(VF_WARN, "event=rpc_h2_error side=%s peer=%s error=\"%.*s\"", c->is_server ? "server" : "client",
           c->peer_addr, (int)len, msg);
    return 0;
}

void vf_rpc_conn_set_common_callbacks(nghttp2_session_callbacks *cbs) {
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, data_length);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
}


/* ==== the TLS type (vf_rpc_conn_tls) ============================================
 * mbedTLS records over a libuv TCP socket: every real connection, server and
 * client side.  The wire: socket reads land in one per-thread buffer and go to
 * vf_rpc_conn_input at once; the output (out_fill, whole TLS records) is
 * swapped with the buffer of the write in flight, so the steady state
 * allocates nothing; reading stops while more than OUT_STOP_READ waits to be
 * written.  A closing connection gets CLOSE_FLUSH_MS to flush its last bytes
 * (GOAWAY, close_notify) before its handles close.  The session: mbedTLS
 * reads and writes through a memory BIO that never blocks (an empty input is
 * MBEDTLS_ERR_SSL_WANT_READ, "in progress"). */

/* Socket reads of every connection of this thread: vf_rpc_conn_input
 * consumes all of a read before it returns (mbedTLS keeps a partial record in
 * its own input buffer), so one buffer serves them all and an idle connection
 * holds none. */
static _Thread_local uint8_t g_rbuf[RBUF_SIZE];

/* ---- the TLS type: its session ----------------------------------------------------- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len) {
    vf_rpc_conn *c = ctx;
    if (vf_rpc_buf_append(&c->out_fill, buf, len) < 0) return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    return (int)len;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len) {
    vf_rpc_conn *c = ctx;
    if (c->in_len == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = len < c->in_len ? len : c->in_len;
    memcpy(buf, c->in, n);
    c->in += n;
    c->in_len -= n;
    return (int)n;
}

/* Keeps who the peer's certificate says it is while mbedTLS verifies it:
 * when the handshake then fails (revoked, expired), 2.28 frees the refused
 * certificate, so this is the only moment its name can be read.  Only a
 * certificate the federation CA did sign is named (a self-signed one could
 * claim any name); *flags, mbedTLS's verdict, is left as it is. */
static int on_verify_cert(void *ud, mbedtls_x509_crt *crt, int depth, uint32_t *flags) {
    vf_rpc_conn *c = ud;
    vf_error err;
    if (depth == 0 && !(*flags & (MBEDTLS_X509_BADCERT_NOT_TRUSTED | MBEDTLS_X509_BADCERT_OTHER)))
        c->has_refused_peer = vf_pki_identity_from_crt(crt, &c->refused_peer, &err) == 0;
    return 0;
}

static int tls_start(vf_rpc_conn *c, const char *hostname, vf_error *err) {
    int ret = mbedtls_ssl_setup(&c->ssl, &c->tls->conf);
    if (ret != 0) return vf_fail(err, "%s: TLS setup failed (-0x%04x)", c->peer_addr, -ret);
    c->ssl_ready = 1;
    /* A client checks the DNS name in the handshake; an IP address is checked
     * against the IP SANs once it is done (vf_rpc_tls_crt_names_host), so it
     * sets no name, explicitly (mbedTLS 3.6 refuses to verify a server when no
     * name was ever set; on 2.28 this is the default). */
    if (hostname && (ret = mbedtls_ssl_set_hostname(&c->ssl, vf_rpc_host_is_ip(hostname) ? NULL : hostname)) != 0)
        return vf_fail(err, "%s: bad host name '%s' for TLS", c->peer_addr, hostname);
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    mbedtls_ssl_set_verify(&c->ssl, on_verify_cert, c);
    return 0;
}

static int tls_handshake(vf_rpc_conn *c, char *why, size_t why_size) {
    int ret = mbedtls_ssl_handshake(&c->ssl);
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) return VF_RPC_HS_AGAIN;
    if (ret != 0) {
        vf_rpc_tls_describe(ret, &c->ssl, why, why_size < 400 ? why_size : 400);
        return VF_RPC_HS_FAILED;
    }
    const char *alpn = mbedtls_ssl_get_alpn_protocol(&c->ssl);
    if (!alpn || strcmp(alpn, "h2") != 0) {
        snprintf(why, why_size, "TLS handshake failed: the peer did not negotiate ALPN \"h2\" (gRPC needs HTTP/2)");
        return VF_RPC_HS_REJECTED;
    }
    const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&c->ssl);
    vf_error err;
    if (!crt) {
        snprintf(why, why_size, "TLS handshake failed: the peer sent no certificate");
        return VF_RPC_HS_REJECTED;
    }
    if (vf_pki_identity_from_crt(crt, &c->peer, &err) < 0) {
        snprintf(why, why_size, "peer certificate rejected: %s", err.msg);
        return VF_RPC_HS_REJECTED;
    }
    return VF_RPC_HS_DONE;
}

static int tls_read(vf_rpc_conn *c, uint8_t *buf, size_t size, char *why, size_t why_size) {
    int ret = mbedtls_ssl_read(&c->ssl, buf, size);
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) return 0;
    if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == 0) {
        snprintf(why, why_size, "peer closed the connection");
        return -1;
    }
    if (ret < 0) {
        char e[256];
        vf_rpc_tls_describe(ret, &c->ssl, e, sizeof e);
        snprintf(why, why_size, "TLS read failed: %s", e);
        return -1;
    }
    return ret;
}

static int tls_write(vf_rpc_conn *c, const uint8_t *p, size_t n, char *why, size_t why_size) {
    while (n > 0) {
        int ret = mbedtls_ssl_write(&c->ssl, p, n);
        if (ret == MBEDTLS_ERR_SSL_WANT_WRITE || ret == MBEDTLS_ERR_SSL_WANT_READ) continue;
        if (ret < 0) {
            char e[256];
            vf_rpc_tls_describe(ret, &c->ssl, e, sizeof e);
            snprintf(why, why_size, "TLS write failed: %s", e);
            return -1;
        }
        p += ret;
        n -= (size_t)ret;
    }
    return 0;
}

static void tls_shutdown(vf_rpc_conn *c) {
    if (c->ssl_ready) mbedtls_ssl_close_notify(&c->ssl);
}

static const mbedtls_x509_crt *tls_peer_cert(const vf_rpc_conn *c) { return mbedtls_ssl_get_peer_cert(&c->ssl); }

static void tls_free(vf_rpc_conn *c) { mbedtls_ssl_free(&c->ssl); }

/* ---- the TLS type: its socket ------------------------------------------------------------ */

static void on_timer(uv_timer_t *t);

static void tcp_init(vf_rpc_conn *c) {
    mbedtls_ssl_init(&c->ssl);
    uv_tcp_init(c->loop, &c->tcp);
    uv_timer_init(c->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
}

static void on_handle_closed(uv_handle_t *h) {
    vf_rpc_conn *c = h->data;
    if (--c->handles_open == 0) vf_rpc_conn_free_now(c);
}

static void close_handles(vf_rpc_conn *c) {
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&c->timer)) uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_write(uv_write_t *req, int status);

static void tcp_flush(vf_rpc_conn *c) {
    if (c->writing || vf_rpc_buf_size(&c->out_fill) == 0 || uv_is_closing((uv_handle_t *)&c->tcp)) return;
    vf_rpc_buf t = c->out_flight;
    c->out_flight = c->out_fill;
    c->out_fill = t;
    c->out_fill.len = c->out_fill.off = 0;
    uv_buf_t b = uv_buf_init((char *)c->out_flight.p + c->out_flight.off, (unsigned)vf_rpc_buf_size(&c->out_flight));
    c->wreq.data = c;
    c->write_started = uv_now(c->loop);
    int r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r != 0) {
        c->out_flight.len = c->out_flight.off = 0;
        if (c->state == CONN_CLOSED)
            close_handles(c);
        else
            vf_rpc_conn_close(c, "write failed: %s", uv_strerror(r));
        return;
    }
    c->writing = 1;
}

static void on_write(uv_write_t *req, int status) {
    vf_rpc_conn *c = req->data;
    c->writing = 0;
    c->out_flight.len = c->out_flight.off = 0;
    if (c->state == CONN_CLOSED) {
        if (status == 0 && vf_rpc_buf_size(&c->out_fill) > 0)
            tcp_flush(c);
        else
            close_handles(c);
        return;
    }
    if (status < 0) {
        vf_rpc_conn_close(c, "write failed: %s", uv_strerror(status));
        return;
    }
    if (!c->reading && vf_rpc_buf_size(&c->out_fill) < OUT_HIGH) vf_rpc_conn_start_reading(c);
    vf_rpc_conn_pump(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    *buf = uv_buf_init((char *)g_rbuf, RBUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    vf_rpc_conn *c = s->data;
    if (nread == 0) return;
    if (nread < 0) {
        vf_rpc_conn_close(c, nread == UV_EOF ? "peer closed the connection" : "read failed: %s",
                          uv_strerror((int)nread));
        return;
    }
    if (c->state == CONN_CLOSED) return;
    vf_rpc_conn_input(c, (const uint8_t *)buf->base, (size_t)nread);
    if (c->state != CONN_CLOSED && vf_rpc_buf_size(&c->out_fill) > OUT_STOP_READ && c->reading) {
        uv_read_stop(s);
        c->reading = 0;
    }
}

static void tcp_start_reading(vf_rpc_conn *c) {
    if (c->reading) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) == 0) c->reading = 1;
}

static void tcp_stop_reading(vf_rpc_conn *c) {
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

static void tcp_close(vf_rpc_conn *c) {
    if (c->writing || vf_rpc_buf_size(&c->out_fill) > 0) {
        tcp_flush(c);
        uv_timer_start(&c->timer, on_timer, CLOSE_FLUSH_MS, 0);
    } else {
        close_handles(c);
    }
}

static int tcp_clock(const vf_rpc_conn *c, uint64_t *now_ms) {
    *now_ms = uv_now(c->loop);
    return 1;
}

static void tcp_set_timer(vf_rpc_conn *c, uint64_t delay_ms) {
    if (delay_ms == UINT64_MAX)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, delay_ms, 0);
}

static void on_timer(uv_timer_t *t) {
    vf_rpc_conn *c = t->data;
    if (c->state == CONN_CLOSED) { /* flush time is up */
        close_handles(c);
        return;
    }
    vf_rpc_conn_on_timer(c);
}

const vf_rpc_conn_type vf_rpc_conn_tls = {
    .name = "tls",
    .security = "TLS",
    .init = tcp_init,
    .start = tls_start,
    .handshake = tls_handshake,
    .read = tls_read,
    .write = tls_write,
    .shutdown = tls_shutdown,
    .peer_cert = tls_peer_cert,
    .free = tls_free,
    .flush = tcp_flush,
    .start_reading = tcp_start_reading,
    .stop_reading = tcp_stop_reading,
    .close = tcp_close,
    .clock = tcp_clock,
    .set_timer = tcp_set_timer,
};

/* ---- the memory type --------------------------------------------------------
 * Plaintext HTTP/2 handed in by vf_rpc_fuzz_feed, output dropped, no socket,
 * no clock (so no timers and no deadlines), no certificate (the identity is
 * set by vf_rpc_fuzz_conn_new, which also opens the connection: there is no
 * handshake). */

static void mem_init(vf_rpc_conn *c) {}
static int mem_start(vf_rpc_conn *c, const char *hostname, vf_error *err) { return 0; }
static int mem_handshake(vf_rpc_conn *c, char *why, size_t why_size) { return VF_RPC_HS_DONE; }

static int mem_read(vf_rpc_conn *c, uint8_t *buf, size_t size, char *why, size_t why_size) {
    size_t n = size < c->in_len ? size : c->in_len;
    if (n > 0x7fffffff) n = 0x7fffffff;
    memcpy(buf, c->in, n);
    c->in += n;
    c->in_len -= n;
    return (int)n;
}

static int mem_write(vf_rpc_conn *c, const uint8_t *p, size_t n, char *why, size_t why_size) { return 0; }
static void mem_nothing(vf_rpc_conn *c) {}
static const mbedtls_x509_crt *mem_peer_cert(const vf_rpc_conn *c) { return NULL; }
static void mem_flush(vf_rpc_conn *c) { c->out_fill.len = c->out_fill.off = 0; }
static int mem_clock(const vf_rpc_conn *c, uint64_t *now_ms) { return 0; }
static void mem_set_timer(vf_rpc_conn *c, uint64_t delay_ms) {}

const vf_rpc_conn_type vf_rpc_conn_memory = {
    .name = "memory",
    .security = "no",
    .init = mem_init,
    .start = mem_start,
    .handshake = mem_handshake,
    .read = mem_read,
    .write = mem_write,
    .shutdown = mem_nothing,
    .peer_cert = mem_peer_cert,
    .free = mem_nothing,
    .flush = mem_flush,
    .start_reading = mem_nothing,
    .stop_reading = mem_nothing,
    .close = mem_nothing,
    .clock = mem_clock,
    .set_timer = mem_set_timer,
};
