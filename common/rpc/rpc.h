/* rpc: gRPC over HTTP/2 (nghttp2) over mutual TLS 1.2 (mbedTLS) on libuv.
 *
 * One event loop, no threads.  A server listens, verifies every client
 * certificate against the federation CA (and the revocation list), reads the
 * peer's role and name from it (pki.h) and lets a method run only for the roles
 * it was registered with.  A client dials out, verifies the server's
 * certificate against the CA and the host name dialled, and opens calls.
 *
 * Calls (one HTTP/2 stream each) are driven by callbacks.  Messages are raw
 * protobuf bytes; vf_rpc_call_send_pb packs a protobuf-c message.  A call
 * pointer stays valid until its on_done callback returns, which happens exactly
 * once: after the status was sent and flushed (server), after the status was
 * received (client), or when the call was cancelled (RST_STREAM, deadline,
 * connection lost).  Message data passed to on_message is only valid during
 * the callback.
 *
 * Memory is bounded by HTTP/2 flow control: received bytes are acknowledged
 * (WINDOW_UPDATE) only when the application has taken them, so a receiver that
 * pauses (vf_rpc_call_pause_recv) stops the sender after one window; a sender
 * watches vf_rpc_call_send_queued and on_drain.
 *
 * Nothing here exits or aborts on peer input: bad frames or messages end the
 * stream or the connection with an error status and a log line. */
#ifndef VF_RPC_H
#define VF_RPC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pki/pki.h"
#include "util/vf_error.h"

typedef enum {
    VF_GRPC_OK = 0,
    VF_GRPC_CANCELLED = 1,
    VF_GRPC_UNKNOWN = 2,
    VF_GRPC_INVALID_ARGUMENT = 3,
    VF_GRPC_DEADLINE_EXCEEDED = 4,
    VF_GRPC_NOT_FOUND = 5,
    VF_GRPC_ALREADY_EXISTS = 6,
    VF_GRPC_PERMISSION_DENIED = 7,
    VF_GRPC_RESOURCE_EXHAUSTED = 8,
    VF_GRPC_FAILED_PRECONDITION = 9,
    VF_GRPC_ABORTED = 10,
    VF_GRPC_OUT_OF_RANGE = 11,
    VF_GRPC_UNIMPLEMENTED = 12,
    VF_GRPC_INTERNAL = 13,
    VF_GRPC_UNAVAILABLE = 14,
    VF_GRPC_DATA_LOSS = 15,
    VF_GRPC_UNAUTHENTICATED = 16,
} vf_grpc_status;

/* "OK", "CANCELLED", ... ; "UNKNOWN_CODE" for anything else. */
const char *vf_grpc_status_name(int status);

/* Role sets for method registration. */
#define VF_ROLE_BIT(r) (1u << (unsigned)(r))
#define VF_ROLES_ALL                                                                                \
    (VF_ROLE_BIT(VF_ROLE_AGGREGATOR) | VF_ROLE_BIT(VF_ROLE_IMAGE_PARTY) |                          \
     VF_ROLE_BIT(VF_ROLE_KNOWLEDGE_PARTY) | VF_ROLE_BIT(VF_ROLE_ADMIN))

/* PEM/DER files of one participant's kit.  crl_file may be NULL (no revocation
 * list); a list that appears later is picked up on reload. */
typedef struct vf_rpc_tls_files {
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    const char *crl_file;
} vf_rpc_tls_files;

typedef struct vf_rpc_call vf_rpc_call;
typedef struct vf_rpc_server vf_rpc_server;
typedef struct vf_rpc_client vf_rpc_client;

/* ---- server -------------------------------------------------------------- */

/* A method's handlers.  on_start runs once the call is authorized (the peer's
 * role is in `roles`); it may finish the call at once.  on_message gets each
 * request message; on_half_close says the client will send no more;
 * on_done(status) ends the call: status is the one sent, or CANCELLED /
 * DEADLINE_EXCEEDED / UNAVAILABLE when it ended otherwise. */
typedef struct vf_rpc_method {
    const char *path;   /* "/vflclip.v1.Federation/Join" */
    unsigned roles;     /* VF_ROLE_BIT(...) | ... */
    void (*on_start)(vf_rpc_call *call, void *ud);
    void (*on_message)(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud);
    void (*on_half_close)(vf_rpc_call *call, void *ud);
    void (*on_done)(vf_rpc_call *call, int status, void *ud);
    void (*on_drain)(vf_rpc_call *call, void *ud); /* optional: queued output fell below the low-water mark */
    void *ud;
} vf_rpc_method;

/* What a server does while its revocation list file is missing or unusable
 * (deleted, unreadable, not a list, not signed by the CA, expired): */
typedef enum {
    VF_RPC_CRL_KEEP = 0,       /* keep the last good list, log an ERROR at every reload */
    VF_RPC_CRL_REFUSE_ALL = 1, /* refuse every connection (and close the open ones) until a good list is back */
} vf_rpc_crl_missing;

typedef struct vf_rpc_server_config {
    const char *host;            /* "0.0.0.0", "::", "127.0.0.1" */
    int port;                    /* 0: pick one (vf_rpc_server_port) */
    vf_rpc_tls_files tls;
    int max_connections;         /* default 256 (hard cap, any state); more are accepted and closed at once */
    int max_per_source;          /* default 16: connections (any state) from one IP address; more closed at once */
    int admin_reserve;           /* default max_connections / 16 (at least 1): authenticated non-admins may hold
                                    at most max_connections - admin_reserve; one beyond that is closed right
                                    after its handshake, so the rest stays free for admins */
    int handshake_timeout_ms;    /* default 5000: TCP+TLS+HTTP/2 preface must complete in this */
    size_t max_recv_message;     /* default 4 MiB; larger -> RESOURCE_EXHAUSTED */
    size_t max_recv_buffered;    /* default 256 MiB (at least max_recv_message): reassembly buffers of partly
                                    received messages across all calls; a call that would pass it is refused
                                    with RESOURCE_EXHAUSTED and logged */
    size_t max_send_queued;      /* default 128 MiB: bytes queued for sending on one connection; a send past it
                                    fails, its call ends RESOURCE_EXHAUSTED (RST_STREAM ENHANCE_YOUR_CALM to the
                                    peer) and is logged */
    int write_timeout_ms;        /* default 60000: a connection with output queued that sends nothing for this
                                    long (the peer stopped reading) is closed */
    int keepalive_ms;            /* default 60000: PING after this long without frames; 0 = off */
    int keepalive_timeout_ms;    /* default 20000: close when the PING ack is this late */
    uint32_t stream_window;      /* default 4 MiB: per-stream receive window */
    uint32_t max_concurrent_streams; /* default 100 */
    int watch_sighup;            /* reload the CRL on SIGHUP */
    int crl_missing;             /* vf_rpc_crl_missing; default VF_RPC_CRL_KEEP.  Never "no list": a
                                    configured file missing or bad at start is an ERROR and every peer is
                                    refused until a good list appears, under either setting */
    /* Told of every refusal an operator must be able to audit: a failed TLS
     * handshake (who = NULL: no certificate was accepted) and a call refused
     * for the caller's role (who = its certificate).  Optional. */
    void (*on_refused)(const char *peer_addr, const vf_peer_identity *who, int handshake, const char *why, void *ud);
    void *refused_ud;
} vf_rpc_server_config;

/* Fills defaults into zero fields. */
void vf_rpc_server_config_defaults(vf_rpc_server_config *cfg);

/* Loads the TLS kit and the methods (copied; path strings must outlive the
 * server) and starts listening on loop. */
int vf_rpc_server_start(uv_loop_t *loop, const vf_rpc_server_config *cfg, const vf_rpc_method *methods,
                        int n_methods, vf_rpc_server **out, vf_error *err);
int vf_rpc_server_port(const vf_rpc_server *s);
/* Re-reads the CRL file; established connections whose certificate is now
 * revoked are closed.  Also done on SIGHUP (watch_sighup) and when the file's
 * mtime changes (checked at each new connection).  A missing or bad file
 * fails (-1) and never replaces the list in force: see crl_missing. */
int vf_rpc_server_reload_crl(vf_rpc_server *s, vf_error *err);
/* Graceful shutdown: stop accepting, GOAWAY every connection, let in-flight
 * calls finish; calls on_closed once every connection is gone (or after
 * grace_ms, when the rest are cut).  Then free with vf_rpc_server_free. */
void vf_rpc_server_shutdown(vf_rpc_server *s, int grace_ms, void (*on_closed)(vf_rpc_server *s, void *ud), void *ud);
void vf_rpc_server_free(vf_rpc_server *s);
/* Counters for tests and status pages. */
typedef struct vf_rpc_server_stats {
    int connections, handshaking, calls_active;
    unsigned long long accepted, rejected_cap, rejected_source, rejected_reserve, handshake_failures,
        handshake_timeouts, calls_total, refused_send_queued, write_timeouts;
    size_t recv_buffered;        /* bytes of reassembly buffers now */
} vf_rpc_server_stats;
void vf_rpc_server_stats_get(const vf_rpc_server *s, vf_rpc_server_stats *st);

/* ---- client -------------------------------------------------------------- */

typedef struct vf_rpc_client_config {
    const char *host;            /* DNS name or IP literal; the server certificate must name it */
    int port;
    vf_rpc_tls_files tls;
    const char *server_name;     /* name to verify instead of host (NULL: host) */
    vf_role server_role;         /* role the server's certificate must carry; VF_ROLE_NONE means
                                    VF_ROLE_AGGREGATOR, the only listener of the federation */
    size_t max_recv_message;     /* default 4 MiB */
    int connect_timeout_ms;      /* default 10000 (TCP + TLS) */
    int keepalive_ms;            /* default 0 = off (servers often limit client pings) */
    int keepalive_timeout_ms;    /* default 20000 */
    uint32_t stream_window;      /* default 4 MiB */
} vf_rpc_client_config;

typedef struct vf_rpc_client_handlers {
    /* Connection is up (status 0) or failed (status -1, msg says why). */
    void (*on_ready)(vf_rpc_client *c, int status, const char *msg, void *ud);
    /* The connection closed after it was ready (GOAWAY, peer closed, keepalive
     * timeout, vf_rpc_client_close).  Open calls got on_done first.  The
     * client object is freed after this returns: reconnect with a new one. */
    void (*on_closed)(vf_rpc_client *c, const char *reason, void *ud);
    void *ud;
} vf_rpc_client_handlers;

int vf_rpc_client_connect(uv_loop_t *loop, const vf_rpc_client_config *cfg, const vf_rpc_client_handlers *h,
                          vf_rpc_client **out, vf_error *err);
/* The server's identity from its certificate (valid after on_ready). */
const vf_peer_identity *vf_rpc_client_peer(const vf_rpc_client *c);
/* Graceful close: GOAWAY, then the socket closes once open calls are done. */
void vf_rpc_client_close(vf_rpc_client *c);

typedef struct vf_rpc_call_handlers {
    void (*on_message)(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud);
    /* Final status and message (grpc-message, percent-decoded). */
    void (*on_done)(vf_rpc_call *call, int status, const char *message, void *ud);
    void (*on_drain)(vf_rpc_call *call, void *ud); /* optional */
    void *ud;
} vf_rpc_call_handlers;

/* Opens a call on path.  timeout_ms > 0 sends grpc-timeout and ends the call
 * locally with DEADLINE_EXCEEDED when it passes.  Send request messages with
 * vf_rpc_call_send, then vf_rpc_call_close_send. */
vf_rpc_call *vf_rpc_client_call(vf_rpc_client *c, const char *path, int timeout_ms, const vf_rpc_call_handlers *h,
                                vf_error *err);
/* Half-close: no more messages from this side. */
int vf_rpc_call_close_send(vf_rpc_call *call, vf_error *err);
/* Either side: reset the stream (RST_STREAM CANCEL); on_done(CANCELLED) is
 * called before this returns. */
void vf_rpc_call_cancel(vf_rpc_call *call);

/* ---- both sides ---------------------------------------------------------- */

/* Queues one message (copied).  Fails when the call is over or closed for
 * sending. */
int vf_rpc_call_send(vf_rpc_call *call, const void *data, size_t len, vf_error *err);
struct ProtobufCMessage;
int vf_rpc_call_send_pb(vf_rpc_call *call, const struct ProtobufCMessage *msg, vf_error *err);
/* Bytes queued for sending and not yet handed to TLS. */
size_t vf_rpc_call_send_queued(const vf_rpc_call *call);
/* Stop/resume delivering messages; while paused, received data is held
 * unacknowledged, so the peer stops after one flow-control window. */
void vf_rpc_call_pause_recv(vf_rpc_call *call, int paused);
/* Bytes received for this call and held (not yet delivered, not yet
 * acknowledged to the peer) while it is paused: never more than the stream's
 * flow-control window. */
size_t vf_rpc_call_recv_held(const vf_rpc_call *call);
/* Server: send the status (after any queued messages) and end the call.
 * message may be NULL. */
int vf_rpc_call_finish(vf_rpc_call *call, int status, const char *message, vf_error *err);

/* The peer: for a server call the client's certificate identity, for a client
 * call the server's. */
const vf_peer_identity *vf_rpc_call_peer(const vf_rpc_call *call);
const char *vf_rpc_call_path(const vf_rpc_call *call);
/* Milliseconds left before the call's deadline; -1 when it has none. */
long long vf_rpc_call_deadline_left_ms(const vf_rpc_call *call);
void vf_rpc_call_set_user(vf_rpc_call *call, void *user);
void *vf_rpc_call_user(const vf_rpc_call *call);

#endif
