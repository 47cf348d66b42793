/* party_link: a party's one connection to the aggregator.  Parties only dial
 * out (hospital networks allow outbound connections): the link connects
 * over mutual TLS, opens Federation.Join, sends the Hello the party fills in,
 * hands every AggregatorMessage to the party, and when the stream or the
 * connection goes away (aggregator restarted, network cut, refusal) it says
 * so and dials again with exponential backoff (min..max, doubling, reset once
 * a stream was up for a while).  Role-free: both party daemons use it.
 *
 * A refusal that only an operator can mend stops the dialling instead: the
 * aggregator's TLS alert says our certificate is revoked, expired, unknown or
 * not accepted (seen on two dials in a row), or it finishes Join with
 * PERMISSION_DENIED.  The link logs one ERROR line naming the reason
 * ("certificate revoked by the federation CA"), sets the systemd status and
 * stays idle; the daemon keeps running (a forged alert on the network must
 * not be able to stop the process) until the operator restarts it with a
 * good certificate. */
#ifndef VF_DAEMON_PARTY_LINK_H
#define VF_DAEMON_PARTY_LINK_H

#include <uv.h>

#include "proto/federation.pb-c.h"
#include "rpc/rpc.h"
#include "util/vf_error.h"

typedef struct vf_party_link vf_party_link;

typedef struct vf_party_link_config {
    vf_rpc_client_config client;   /* host, port, server_name, tls */
    int backoff_min_ms;            /* default 500 */
    int backoff_max_ms;            /* default 30000 */
    char party_log[4200];          /* digests of every message sent and received (transcript.h); "" = none */
    vf_role expected_role;         /* the daemon's role: a certificate of another role is refused at start; 0 = any */
} vf_party_link_config;

typedef struct vf_party_link_handlers {
    /* Fill the Hello of a new stream; role and name are set by the link from
     * the party's certificate.  Pointers must stay valid until it returns. */
    void (*fill_hello)(Vflclip__V1__Hello *hello, void *ud);
    void (*on_message)(vf_party_link *l, const Vflclip__V1__AggregatorMessage *m, void *ud);
    /* The stream is gone (why: the aggregator's status message or the
     * connection's close reason); work in progress for it is void. */
    void (*on_down)(vf_party_link *l, const char *why, void *ud);
    void (*on_drain)(vf_party_link *l, void *ud);   /* optional: queued output fell */
    void *ud;
} vf_party_link_handlers;

/* Reads the party's identity from its certificate and starts dialling. */
int vf_party_link_start(uv_loop_t *loop, const vf_party_link_config *cfg, const vf_party_link_handlers *h,
                        vf_party_link **out, vf_error *err);
/* Sends one message on the stream; -1 when there is no stream. */
int vf_party_link_send(vf_party_link *l, const Vflclip__V1__PartyMessage *m, vf_error *err);
int vf_party_link_up(const vf_party_link *l);
size_t vf_party_link_queued(const vf_party_link *l);
const char *vf_party_link_name(const vf_party_link *l);
/* Why the link stopped dialling for good (see above), or NULL while it dials. */
const char *vf_party_link_refused(const vf_party_link *l);
/* The message refusing a certificate of role `have` to a daemon of role
 * `want`: "certificate role knowledge-party cannot join as image party";
 * NULL when they agree. */
const char *vf_party_role_mismatch(vf_role have, vf_role want, char *buf, size_t size);
/* Closes the stream and the connection, stops dialling; frees the link once
 * its handles are closed. */
void vf_party_link_stop(vf_party_link *l);

/* A participant's own identity, from its certificate file. */
int vf_identity_from_file(const char *cert_file, vf_peer_identity *id, vf_error *err);

#endif
