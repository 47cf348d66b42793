/* vflclip-aggregator: the federation's only listening server.  Parties dial
 * in over mutual TLS and hold a Federation.Join stream (parties.c); admins
 * call the Admin service (admin.c); the run (run.c) drives the parties and
 * computes the loss, dL/dT, evaluation, metrics and plots with the trainer
 * library.  A restarted aggregator resumes the run it was doing from its
 * last committed step (progress.c).  SIGTERM/SIGINT shut down gracefully,
 * SIGHUP reloads the revocation list. */
#include "agg.h"
#include "daemon/audit.h"
#include "daemon/daemon_setup.h"
#include "util/log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROGRAM "vflclip-aggregator"

agg g_agg;

static const vf_ini_key schema[] = {
    VF_INI_TLS_KEYS,
    {"server", "host", VF_INI_STR, 0, "0.0.0.0", "address to listen on (0.0.0.0: every IPv4 interface, :: for IPv6)"},
    {"server", "port", VF_INI_INT, 0, "50051", "port to listen on (0: any free port, printed at start)"},
    {"server", "max_message_mb", VF_INI_INT, 0, "64", "largest message accepted, in MiB"},
    {"server", "keepalive_ms", VF_INI_INT, 0, "60000", "ping a connection idle this long (0: never)"},
    {"server", "max_parties", VF_INI_INT, 0, "64", "parties (image and knowledge) connected at once, 2..256; more are refused and logged"},
    {"server", "hello_timeout_s", VF_INI_INT, 0, "10", "a party's Join stream must send its Hello within this many seconds"},
    {"server", "max_connections", VF_INI_INT, 0, "256", "connections at once in any state (hard cap); more are closed at once"},
    {"server", "max_per_source", VF_INI_INT, 0, "16", "connections at once from one IP address; more are closed at once"},
    {"server", "admin_reserve", VF_INI_INT, 0, "16", "of max_connections, kept for admins: other peers past max_connections - admin_reserve are closed after their handshake"},
    {"server", "handshake_timeout_ms", VF_INI_INT, 0, "5000", "a new connection must finish TLS and the HTTP/2 preface within this"},
    {"server", "recv_buffer_mb", VF_INI_INT, 0, "512", "MiB of partly received messages held across all calls (at least max_message_mb); a call past it is refused with RESOURCE_EXHAUSTED"},
    {"server", "send_queue_mb", VF_INI_INT, 0, "128", "MiB queued for sending on one connection; a call past it is ended with RESOURCE_EXHAUSTED"},
    {"server", "write_timeout_ms", VF_INI_INT, 0, "60000", "a connection with output queued that takes none of it for this long is closed"},
    {"server", "crl_missing", VF_INI_STR, 0, "keep", "while [tls] crl is missing or bad: keep (the last good list, ERROR logged) | refuse-all (every connection)"},
    {"runs", "default_config", VF_INI_PATH, 0, NULL, "run configuration used when `vflclip run start` sends none"},
    {"runs", "audit_log", VF_INI_PATH, 0, NULL, "audit log of run starts/aborts/results (default <state dir>/audit.log)"},
    VF_INI_STATE_KEYS,
    {NULL, NULL, 0, 0, NULL, NULL},
};

static void on_closed(vf_rpc_server *s, void *ud) { vf_log(VF_INFO, "event=server_closed"); }

/* Refused handshakes and calls go to the audit log.  A refused call has an
 * authenticated caller and is always written; failed handshakes come from
 * anyone who can reach the port, so at most one a second is written (with
 * how many were not), lest a scan fill the disk with fsync'd lines. */
void agg_admin_note_refusal(const char *role, const char *name, const char *serial, const char *reason); /* admin.c */

/* A refusal of an authenticated certificate (a call refused, an open
 * connection cut at revocation) goes to `vflclip status` too, by name. */
static void note_refusal(const vf_peer_identity *who, int handshake, const char *why) {
    if (!who) return;   /* a handshake with a certificate the CA did not sign: no name to trust */
    char reason[256];
    if (strstr(why, "certificate revoked") == why)
        snprintf(reason, sizeof reason, "certificate revoked by the federation CA (open connection closed)");
    else if (handshake && strstr(why, "revoked"))
        snprintf(reason, sizeof reason, "certificate revoked by the federation CA (handshake refused)");
    else if (handshake && strstr(why, "expired"))
        snprintf(reason, sizeof reason, "certificate expired (handshake refused)");
    else
        snprintf(reason, sizeof reason, "%s", why);
    agg_admin_note_refusal(vf_role_name(who->role), who->name, who->serial_hex, reason);
}

static void on_refused(const char *peer_addr, const vf_peer_identity *who, int handshake, const char *why, void *ud) {
    static time_t last;
    static unsigned long skipped;
    time_t now = time(NULL);
    note_refusal(who, handshake, why);
    if (handshake && now == last) {   /* refused handshakes cost the peer nothing: one audit line a second */
        skipped++;
        return;
    }
    char details[1400], quoted[1100];
    snprintf(details, sizeof details, "peer=%s reason=\"%s\" unaudited_before=%lu", peer_addr,
             vf_log_quote(quoted, sizeof quoted, why), handshake ? skipped : 0);
    if (handshake) {
        last = now;
        skipped = 0;
    }
    vf_error err;
    const char *event = handshake ? "handshake_refused" : strstr(why, "certificate revoked") == why ? "revoked_disconnected"
                                                                                                : "call_refused";
    if (vf_audit(g_agg.audit_path, event, who, details, &err))
        vf_log(VF_ERROR, "event=audit_failed error=\"%s\"", err.msg);
}

static void on_stop(int sig) {
    vf_log(VF_INFO, "event=stopping signal=%d run=%s step=%ld", sig, g_agg.run.id[0] ? g_agg.run.id : "-", g_agg.run.sess.global_step);
    g_agg.shutting_down = 1;
    uv_close((uv_handle_t *)&g_agg.run.pause_timer, NULL);
    agg_admin_run_over();
    vf_rpc_server_shutdown(g_agg.server, 2000, on_closed, NULL);
}

static const vf_daemon_spec spec = {
    PROGRAM,
    "The aggregator: the federation's gRPC server (mutual TLS).  Holds the image embeddings,\n"
    "runs the CoOp training loop across the parties, evaluates, and serves the Admin API.",
    schema, 0};

/* [server] and [runs] into sc and g_agg; the certificate must be an aggregator's. */
static int read_config(const vf_daemon *d, vf_rpc_server_config *sc, vf_error *err) {
    long port, max_mb, keepalive, max_parties, hello_s, max_conns, per_source, reserve, handshake_ms, recv_mb, sendq_mb,
        write_ms;
    char audit[4096];
    if (vf_ini_int(&d->ini, "server", "port", 0, 65535, &port, err) ||
        vf_ini_int(&d->ini, "server", "max_message_mb", 1, 1024, &max_mb, err) ||
        vf_ini_int(&d->ini, "server", "keepalive_ms", 0, 86400000, &keepalive, err) ||
        vf_ini_int(&d->ini, "server", "max_parties", 2, AGG_MAX_PARTIES, &max_parties, err) ||
        vf_ini_int(&d->ini, "server", "hello_timeout_s", 1, 3600, &hello_s, err) ||
        vf_ini_int(&d->ini, "server", "max_connections", 2, 65536, &max_conns, err) ||
        vf_ini_int(&d->ini, "server", "max_per_source", 1, 65536, &per_source, err) ||
        vf_ini_int(&d->ini, "server", "admin_reserve", 1, 65535, &reserve, err) ||
        vf_ini_int(&d->ini, "server", "handshake_timeout_ms", 100, 600000, &handshake_ms, err) ||
        vf_ini_int(&d->ini, "server", "recv_buffer_mb", 1, 65536, &recv_mb, err) ||
        vf_ini_int(&d->ini, "server", "send_queue_mb", 1, 65536, &sendq_mb, err) ||
        vf_ini_int(&d->ini, "server", "write_timeout_ms", 100, 86400000, &write_ms, err) ||
        vf_ini_path(&d->ini, "runs", "default_config", vf_ini_given(&d->ini, "runs", "default_config"),
                    g_agg.default_config, sizeof g_agg.default_config, err) ||
        vf_ini_path(&d->ini, "runs", "audit_log", 0, audit, sizeof audit, err) ||
        vf_identity_from_file(d->paths.cert, &g_agg.me, err))
        return -1;
    const char *crl_missing = vf_ini_get(&d->ini, "server", "crl_missing");
    int crl_mode = strcmp(crl_missing, "keep") == 0 ? VF_RPC_CRL_KEEP
                   : strcmp(crl_missing, "refuse-all") == 0 ? VF_RPC_CRL_REFUSE_ALL : -1;
    if (recv_mb < max_mb)
        return vf_fail(err, "%s: [server] recv_buffer_mb = %ld must be at least max_message_mb = %ld", d->config, recv_mb,
                       max_mb);
    if (reserve >= max_conns)
        return vf_fail(err, "%s: [server] admin_reserve = %ld must be below max_connections = %ld", d->config, reserve,
                       max_conns);
    if (crl_mode < 0)
        return vf_fail(err, "%s: [server] crl_missing = '%s' is not keep or refuse-all", d->config, crl_missing);
    if (g_agg.me.role != VF_ROLE_AGGREGATOR)
        return vf_fail(err, "%s is a %s certificate, not an aggregator's", d->paths.cert, vf_role_name(g_agg.me.role));
    snprintf(g_agg.name, sizeof g_agg.name, "%s", g_agg.me.name);
    g_agg.max_parties = (int)max_parties;
    g_agg.hello_timeout_ms = (int)hello_s * 1000;
    snprintf(g_agg.state_dir, sizeof g_agg.state_dir, "%s", d->paths.state);
    snprintf(g_agg.key_path, sizeof g_agg.key_path, "%s", d->paths.key);
    snprintf(g_agg.cert_path, sizeof g_agg.cert_path, "%s", d->paths.cert);
    if (audit[0]) snprintf(g_agg.audit_path, sizeof g_agg.audit_path, "%s", audit);
    else snprintf(g_agg.audit_path, sizeof g_agg.audit_path, "%s/audit.log", d->paths.state);
    *sc = (vf_rpc_server_config){0};
    sc->host = vf_ini_get(&d->ini, "server", "host");
    sc->port = (int)port;
    sc->tls = (vf_rpc_tls_files){d->paths.ca, d->paths.cert, d->paths.key, d->paths.crl[0] ? d->paths.crl : NULL};
    sc->max_recv_message = (size_t)max_mb << 20;
    sc->keepalive_ms = (int)keepalive;
    sc->watch_sighup = 1;
    sc->on_refused = on_refused;
    sc->crl_missing = crl_mode;
    sc->max_connections = (int)max_conns;
    sc->max_per_source = (int)per_source;
    sc->admin_reserve = (int)reserve;
    sc->handshake_timeout_ms = (int)handshake_ms;
    sc->max_recv_buffered = (size_t)recv_mb << 20;
    sc->max_send_queued = (size_t)sendq_mb << 20;
    sc->write_timeout_ms = (int)write_ms;
    return 0;
}

/* Federation.Join and the Admin service on one server; prints the port it got. */
static int start_server(const vf_rpc_server_config *sc, vf_error *err) {
    /* sized by the admin table itself (a fixed size once overflowed when an RPC was added) */
    const int n = 1 + agg_admin_n_methods;
    vf_rpc_method *methods = calloc((size_t)n, sizeof *methods);
    if (!methods) return vf_fail(err, "out of memory");
    methods[0] = agg_join_method;
    for (int i = 0; i < agg_admin_n_methods; i++) methods[1 + i] = agg_admin_methods[i];
    int rc = vf_rpc_server_start(g_agg.loop, sc, methods, n, &g_agg.server, err);   /* copies the table */
    free(methods);
    if (rc) return -1;
    vf_log(VF_INFO, "event=listening name=%s host=%s port=%d state=%s", g_agg.name, sc->host,
           vf_rpc_server_port(g_agg.server), g_agg.state_dir);
    printf("port=%d\n", vf_rpc_server_port(g_agg.server));
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    vf_daemon d;
    int rc = vf_daemon_start(&d, &spec, argc, argv);
    if (rc >= 0) return rc;
    vf_error err;
    vf_rpc_server_config sc;
    if (read_config(&d, &sc, &err)) return vf_daemon_fail(&d, &err);
    if (d.check_only) {
        printf("%s: configuration %s is valid (aggregator %s)\n", PROGRAM, d.config, g_agg.name);
        vf_daemon_end(&d);
        return 0;
    }
    g_agg.loop = uv_default_loop();
    uv_timer_init(g_agg.loop, &g_agg.run.pause_timer);
    if (start_server(&sc, &err)) return vf_daemon_fail(&d, &err);
    agg_run_resume_at_start();
    vf_daemon_run(&d, g_agg.loop, "listening", on_stop);
    vf_rpc_server_free(g_agg.server);
    vf_daemon_end(&d);
    return 0;
}
