/* rpc_internal: the structures shared by the files of common/rpc/ (not a
 * public API).  Layers, bottom up:
 *   grpc_wire.c  gRPC framing, grpc-timeout, grpc-message encoding (pure)
 *   tls.c        mbedTLS configuration, certificates, CRL
 *   conn.c       one connection, whatever it runs over: nghttp2 session
 *                pumping, output staging, input, timers; its types: TLS (a
 *                libuv TCP socket, mbedTLS records through a memory BIO) and
 *                memory (fuzz targets, unit tests)
 *   call.c       one stream: send queue, message decoding, flow control
 *   server.c     listener, accept, authorization, server-side streams
 *   client.c     dialling, client-side streams */
#ifndef VF_RPC_INTERNAL_H
#define VF_RPC_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <sys/stat.h>

#include "pki/mbedtls_compat.h"
#include "rpc/rpc.h"

/* ---- grpc_wire.c --------------------------------------------------------- */

/* Bytes of reassembly buffers allowed across many decoders (a server's calls):
 * what peers can make it hold in partly received messages. */
typedef struct vf_grpc_pool {
    size_t used, max;
} vf_grpc_pool;

/* Incremental decoder of length-prefixed gRPC messages (1 flag byte, 4 length
 * bytes big-endian, then the message). */
typedef struct vf_grpc_decoder {
    uint8_t hdr[5];
    int hdr_have;
    uint32_t msg_len;
    uint8_t *buf;        /* reassembly buffer: kept for reuse up to VF_GRPC_KEEP_BUF, larger ones freed after
                            their message */
    size_t buf_cap, buf_have;
    size_t max_len;
    vf_grpc_pool *pool;  /* may be NULL: buf_cap is charged to it; a buffer that would pass pool->max is refused */
} vf_grpc_decoder;
#define VF_GRPC_KEEP_BUF (64u * 1024)

typedef void (*vf_grpc_on_msg)(void *ctx, const uint8_t *data, size_t len);
/* Feeds bytes; calls on_msg for each complete message (data valid only during
 * the call).  Returns VF_GRPC_OK, or RESOURCE_EXHAUSTED (message over max_len,
 * or its buffer would take the pool past its max; nothing of it is buffered) /
 * INTERNAL (compressed flag, out of memory) with
 * a message in errbuf; after an error the decoder must not be fed again.
 * *stop_flag (may be NULL) is checked after each message so a callback can
 * pause the feeding; *used says how many bytes were taken. */
int vf_grpc_decoder_feed(vf_grpc_decoder *d, const uint8_t *data, size_t len, vf_grpc_on_msg on_msg, void *ctx,
                         const int *stop_flag, size_t *used, char *errbuf, size_t errsize);
/* True when a message is partly received (a stream ending now is truncated). */
int vf_grpc_decoder_partial(const vf_grpc_decoder *d);
void vf_grpc_decoder_free(vf_grpc_decoder *d);

/* grpc-timeout value ("100m", "5S") -> milliseconds (rounded up, >= 0);
 * -1 when malformed. */
long long vf_grpc_timeout_parse(const char *v, size_t len);
/* milliseconds -> grpc-timeout value; out holds >= 16 bytes. */
void vf_grpc_timeout_format(long long ms, char *out, size_t size);
/* grpc-message percent-encoding (RFC 3986 style for bytes outside 0x20..0x7e
 * and '%'). */
void vf_grpc_message_encode(const char *in, char *out, size_t size);
void vf_grpc_message_decode(const char *in, size_t len, char *out, size_t size);

/* ---- tls.c --------------------------------------------------------------- */

typedef struct vf_rpc_tls {
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca, own;
    mbedtls_pk_context key;
    mbedtls_x509_crl *crl;         /* current list (heap; swapped on reload) */
    char crl_path[1024];
    struct stat crl_stat;          /* of the file last looked at; zero when it was missing */
    int crl_loaded;                /* a good list was read from crl_path (then it is never dropped) */
    int crl_unusable;              /* the file is missing or bad now: the last good list (if any) stays */
    char crl_problem[400];         /* why, while crl_unusable */
    int is_server;
    vf_mbedtls_groups groups;      /* the ECDHE groups conf points at */
} vf_rpc_tls;

/* Loads the kit.  A configured CRL file that is missing does not fail (the
 * list may appear later; crl_unusable is set and crl_problem says so); one
 * that exists but is bad does. */
int vf_rpc_tls_init(vf_rpc_tls *t, const vf_rpc_tls_files *files, int is_server, vf_error *err);
/* Reloads the CRL when force or when the file changed; *changed set when a
 * new list is in place.  A missing, unreadable or bad file returns -1 and
 * sets crl_unusable; the list in force (the last good one) stays. */
int vf_rpc_tls_reload_crl(vf_rpc_tls *t, int force, int *changed, vf_error *err);
void vf_rpc_tls_free(vf_rpc_tls *t);
/* "X509 - Certificate verification failed (revoked)" style text. */
void vf_rpc_tls_describe(int ret, const mbedtls_ssl_context *ssl, char *out, size_t size);
/* Client: does the certificate name this host (DNS SAN/CN or IP SAN)? */
int vf_rpc_tls_crt_names_host(const mbedtls_x509_crt *crt, const char *host);
int vf_rpc_host_is_ip(const char *host);

/* ---- conn.c -------------------------------------------------------------- */

typedef struct vf_rpc_buf {
    uint8_t *p;
    size_t len, cap, off;   /* valid bytes are p[off..len) */
} vf_rpc_buf;
int vf_rpc_buf_append(vf_rpc_buf *b, const void *data, size_t n);
/* Appends n uninitialised bytes; NULL when out of memory. */
uint8_t *vf_rpc_buf_extend(vf_rpc_buf *b, size_t n);
void vf_rpc_buf_free(vf_rpc_buf *b);
static inline size_t vf_rpc_buf_size(const vf_rpc_buf *b) { return b->len - b->off; }

enum { CONN_TCP_CONNECTING, CONN_HANDSHAKE, CONN_OPEN, CONN_CLOSED };

struct vf_rpc_conn;

/* What a connection runs over, as redis's ConnectionType: conn.c calls only
 * these for its I/O, so nothing else branches on the kind of connection.
 * Bytes come in through vf_rpc_conn_input (c->in, c->in_len), plaintext goes
 * out through write (into c->out_fill, the wire bytes), flush hands
 * out_fill to the wire. */
enum { VF_RPC_HS_AGAIN = 0, VF_RPC_HS_DONE = 1, VF_RPC_HS_FAILED = -1, VF_RPC_HS_REJECTED = -2 };
typedef struct vf_rpc_conn_type {
    const char *name;
    const char *security;  /* names the handshake in messages: "TLS" */
    void (*init)(struct vf_rpc_conn *c);
    /* the socket is there (accepted / connected): set up the session; a client names the host it dialled */
    int (*start)(struct vf_rpc_conn *c, const char *hostname, vf_error *err);
    /* one handshake step with the input at hand: VF_RPC_HS_AGAIN (in progress), DONE (c->peer is set),
     * FAILED (the handshake itself, why: the library's reason; counted by the server) or REJECTED (done,
     * but the peer is not acceptable; why: the whole close reason) */
    int (*handshake)(struct vf_rpc_conn *c, char *why, size_t why_size);
    /* plaintext from the input at hand: bytes (> 0), 0 when more input is needed, -1 when the connection
     * is over (why) */
    int (*read)(struct vf_rpc_conn *c, uint8_t *buf, size_t size, char *why, size_t why_size);
    /* all of p[0..n) out; 0, or -1 (why) */
    int (*write)(struct vf_rpc_conn *c, const uint8_t *p, size_t n, char *why, size_t why_size);
    void (*shutdown)(struct vf_rpc_conn *c);  /* an open connection closes: the goodbye (TLS close_notify) */
    const mbedtls_x509_crt *(*peer_cert)(const struct vf_rpc_conn *c); /* NULL: none */
    void (*free)(struct vf_rpc_conn *c);
    /* the wire */
    void (*flush)(struct vf_rpc_conn *c);         /* start writing out_fill (if not already writing) */
    void (*start_reading)(struct vf_rpc_conn *c);
    void (*stop_reading)(struct vf_rpc_conn *c);
    void (*close)(struct vf_rpc_conn *c);         /* state is CLOSED: flush what is pending (bounded), then free */
    int (*clock)(const struct vf_rpc_conn *c, uint64_t *now_ms); /* 0: no clock (no timers, no deadlines) */
    void (*set_timer)(struct vf_rpc_conn *c, uint64_t delay_ms); /* UINT64_MAX: stop it */
} vf_rpc_conn_type;

/* mbedTLS over a libuv TCP socket: every real connection. */
extern const vf_rpc_conn_type vf_rpc_conn_tls;
/* Plaintext HTTP/2 from memory, output dropped, no clock: the
 * server without a socket that the fuzz targets and unit tests drive
 * (vf_rpc_fuzz_*). */
extern const vf_rpc_conn_type vf_rpc_conn_memory;

typedef struct vf_rpc_conn {
    const vf_rpc_conn_type *type;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_loop_t *loop;
    int is_server;
    int state;
    int handles_open;            /* uv handles still to close before freeing */
    vf_rpc_server *server;       /* server side */
    struct vf_rpc_conn *prev, *next; /* in server->conns */
    vf_rpc_tls *tls;             /* the TLS type's configuration and session */
    mbedtls_ssl_context ssl;
    int ssl_ready;
    nghttp2_session *h2;
    /* input: the bytes of the current read (the TCP type's per-thread buffer), drained by the type's read */
    const uint8_t *in;
    size_t in_len;
    /* output: wire bytes (TLS records) being filled and the ones being written */
    vf_rpc_buf out_fill, out_flight;
    uv_write_t wreq;
    int writing, reading;
    uint8_t *plain;              /* plaintext staging, one TLS record */
    size_t plain_len;
    /* timers (uv_now ms; 0 = unset) */
    uint64_t handshake_deadline, ping_deadline, last_rx;
    int keepalive_ms, keepalive_timeout_ms;
    int got_settings;
    int goaway;                  /* sent or received: no new streams, close when idle */
    int close_when_flushed;
    uint32_t stream_window;
    size_t max_recv_message;
    vf_grpc_pool *recv_pool;     /* server: the server's; NULL on clients */
    /* output accounting: bytes in the calls' send queues, cap, stall detection (0 = off) */
    size_t queued, max_send_queued;
    int write_timeout_ms;
    uint64_t tx_progress;        /* uv_now when a DATA frame last left the queues (or they became non-empty) */
    uint64_t write_started;      /* uv_now of the socket write in flight */
    int pump_soon;               /* run the pump from the timer (work queued where pumping is not safe) */
    vf_peer_identity peer;
    vf_peer_identity refused_peer;   /* TLS: who a certificate the handshake then refused is (set only when the */
    int has_refused_peer;            /* federation CA signed it: a revoked or expired one), for status and audit */
    char peer_addr[64];          /* "ip:port" */
    char peer_ip[48];            /* "ip": per-source accounting (server) */
    char close_reason[512];
    struct vf_rpc_call *calls;   /* open calls */
    int n_calls;
    int in_pump;                 /* re-entrancy guard for conn_pump */
} vf_rpc_conn;

/* Shared h2 callbacks fill these; server.c / client.c add their own.  loop
 * and tls are NULL for the memory type. */
void vf_rpc_conn_init(vf_rpc_conn *c, uv_loop_t *loop, int is_server, const vf_rpc_conn_type *type, vf_rpc_tls *tls);
/* The socket is connected: starts the transport's session (state HANDSHAKE). */
int vf_rpc_conn_start(vf_rpc_conn *c, const char *hostname, vf_error *err);
/* After the TLS handshake: creates the nghttp2 session with the role's
 * callbacks and sends SETTINGS. */
int vf_rpc_conn_start_h2(vf_rpc_conn *c, nghttp2_session_callbacks *cbs, vf_error *err);
void vf_rpc_conn_start_reading(vf_rpc_conn *c);
/* Advances the handshake (TLS client: sends the ClientHello) and flushes. */
void vf_rpc_conn_handshake(vf_rpc_conn *c);
/* Bytes that arrived (valid during the call): handshake, then plaintext into
 * nghttp2, then a pump. */
void vf_rpc_conn_input(vf_rpc_conn *c, const uint8_t *data, size_t len);
/* The connection's timer fired (state not CLOSED): deadlines, keepalive. */
void vf_rpc_conn_on_timer(vf_rpc_conn *c);
/* uv_now-style milliseconds into *now; 0 when the transport has no clock. */
static inline int vf_rpc_conn_clock(const vf_rpc_conn *c, uint64_t *now) { return c->type->clock(c, now); }
/* Sends what nghttp2 wants to send, arms the timer, closes an idle GOAWAY'd
 * connection.  Safe to call from anywhere except inside nghttp2 callbacks
 * (there it is deferred until the callback's caller returns). */
void vf_rpc_conn_pump(vf_rpc_conn *c);
/* Closes (fails open calls with UNAVAILABLE); memory goes when the handles
 * are closed.  Reason is logged and handed to the client's on_closed. */
void vf_rpc_conn_close(vf_rpc_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vf_rpc_conn_arm_timer(vf_rpc_conn *c);
/* Common frame handling (PING acks, SETTINGS, GOAWAY); returns 0. */
void vf_rpc_conn_on_frame_common(vf_rpc_conn *c, const nghttp2_frame *frame);
void vf_rpc_conn_set_common_callbacks(nghttp2_session_callbacks *cbs);
/* Frees the connection now (the memory type; the TCP type calls it once its
 * handles are closed). */
void vf_rpc_conn_free_now(vf_rpc_conn *c);

/* Role hooks, implemented in server.c / client.c. */
void vf_rpc_server_on_conn_ready(vf_rpc_conn *c);     /* TLS done */
void vf_rpc_server_on_conn_freed(vf_rpc_conn *c);
void vf_rpc_server_note_handshake_failure(vf_rpc_conn *c, const char *why);
void vf_rpc_server_note_handshake_timeout(vf_rpc_conn *c);
void vf_rpc_server_note_send_refused(vf_rpc_conn *c);
void vf_rpc_server_note_write_timeout(vf_rpc_conn *c);
uint32_t vf_rpc_server_max_streams(vf_rpc_conn *c);
void vf_rpc_client_on_conn_ready(vf_rpc_conn *c);
void vf_rpc_client_on_conn_closed(vf_rpc_conn *c);    /* before free */
void vf_rpc_client_on_conn_freed(vf_rpc_conn *c);

/* ---- call.c -------------------------------------------------------------- */

typedef struct vf_rpc_call {
    vf_rpc_conn *conn;
    int32_t stream_id;
    int is_server;
    const vf_rpc_method *method;         /* server */
    vf_rpc_call_handlers ch;             /* client */
    char path[256];
    struct vf_rpc_call *prev, *next;
    void *user;
    /* receiving */
    vf_grpc_decoder dec;
    int recv_paused;
    vf_rpc_buf recv_held;                /* data held while paused, not yet consumed */
    int remote_closed;                   /* peer sent END_STREAM */
    int recv_error;                      /* stop decoding */
    int stop_feed;                       /* paused, ended or failed: the decoder stops after a message */
    int in_deliver;                      /* inside the decoder: ending defers the free */
    int zombie;                          /* ended while in_deliver */
    int half_close_due;                  /* END_STREAM seen while data is held */
    int started;                         /* server: on_start ran */
    /* sending */
    vf_rpc_buf sendq;
    int send_closed;                     /* client half-closed / server finished */
    int data_deferred;
    int drain_wanted, drain_due;
    int headers_sent;                    /* server: response headers submitted */
    int status_set, status;
    int send_refused;                    /* the send queue cap ended this call */
    char status_msg[512];
    /* request headers (server) / response headers (client) */
    char content_type[64];
    int have_te_trailers, http_status, got_grpc_status;
    long long timeout_ms;                /* from grpc-timeout; -1 none; -2 malformed */
    char grpc_encoding[32];
    char method_hdr[16];
    uint64_t deadline;                   /* uv_now ms, 0 = none */
    int done;                            /* on_done delivered */
} vf_rpc_call;

vf_rpc_call *vf_rpc_call_new(vf_rpc_conn *c, int32_t stream_id, int is_server);
/* Ends the call for the application (on_done) once, unlinks it from its
 * stream and frees it. */
void vf_rpc_call_end(vf_rpc_call *call, int status, const char *message);
/* DATA chunk for this call from nghttp2. */
void vf_rpc_call_on_data(vf_rpc_call *call, const uint8_t *data, size_t len);
/* The peer ended its side; returns 0, or -1 when a message was truncated. */
int vf_rpc_call_on_remote_close(vf_rpc_call *call);
/* nghttp2 data provider for both sides. */
extern const nghttp2_data_source_read_callback vf_rpc_call_read_cb;
/* The next `length` queued bytes, for the DATA frame being sent (valid until
 * the next send on the call). */
const uint8_t *vf_rpc_call_take_frame(vf_rpc_call *call, size_t length);
void vf_rpc_call_run_drains(vf_rpc_conn *c);
/* Resumes a deferred data provider and pumps. */
void vf_rpc_call_wake_sender(vf_rpc_call *call);
/* Server: response headers before the first message; the status (trailers,
 * or a trailers-only response when nothing was sent). */
int vf_rpc_server_call_send_headers(vf_rpc_call *call);
int vf_rpc_server_call_fail(vf_rpc_call *call, int status, const char *message);
void vf_rpc_server_call_deliver(vf_rpc_call *call, const uint8_t *data, size_t len);

/* Fuzzing and unit tests: a server connection of the memory type (no socket,
 * no TLS), fed plaintext HTTP/2. */
vf_rpc_server *vf_rpc_fuzz_server_new(const vf_rpc_method *methods, int n_methods, size_t max_recv_message);
void vf_rpc_fuzz_server_free(vf_rpc_server *s);
vf_rpc_conn *vf_rpc_fuzz_conn_new(vf_rpc_server *s, vf_role role);
void vf_rpc_fuzz_feed(vf_rpc_conn *c, const uint8_t *data, size_t len);
void vf_rpc_fuzz_conn_free(vf_rpc_conn *c);

#endif
