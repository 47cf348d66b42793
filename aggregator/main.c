/* vflclip-aggregator: the federation's only listening server.  Parties dial
 * in over mutual TLS and hold a Federation.Join stream (parties.c); admins
 * call the Admin service (admin.c); the run (run.c) drives the parties and
 * computes the loss, dL/dT, evaluation, metrics and plots with the trainer
 * library.  A restarted aggregator resumes the run it was doing from its
 * last committed step (progress.c).  SIGTERM/SIGINT shut down gracefully,
 * SIGHUP reloads the revocation list. */
#include "agg.h"
#include "daemon/daemon_setup.h"
#include "daemon/notify.h"
#include "cpu/blas_setup.h"
#include "util/log.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define PROGRAM "vflclip-aggregator"

agg g_agg;

static const vf_ini_key schema[] = {
    VF_INI_TLS_KEYS,
    {"server", "host", VF_INI_STR, 0, "0.0.0.0", "address to listen on (0.0.0.0: every IPv4 interface, :: for IPv6)"},
    {"server", "port", VF_INI_INT, 0, "50051", "port to listen on (0: any free port, printed at start)"},
    {"server", "max_message_mb", VF_INI_INT, 0, "64", "largest message accepted, in MiB"},
    {"server", "keepalive_ms", VF_INI_INT, 0, "60000", "ping a connection idle this long (0: never)"},
    {"runs", "default_config", VF_INI_PATH, 0, NULL, "run configuration used when `vflclip run start` sends none"},
    {"runs", "audit_log", VF_INI_PATH, 0, NULL, "audit log of run starts/aborts/results (default <state dir>/audit.log)"},
    VF_INI_STATE_KEYS,
    {NULL, NULL, 0, 0, NULL, NULL},
};

static uv_signal_t g_sigterm, g_sigint;

static void on_closed(vf_rpc_server *s, void *ud) { vf_log(VF_INFO, "event=server_closed"); }

static void on_stop(uv_signal_t *h, int sig) {
    vf_log(VF_INFO, "event=stopping signal=%d run=%s step=%ld", sig, g_agg.run.id[0] ? g_agg.run.id : "-", g_agg.run.global_step);
    vf_notify_stopping();
    vf_watchdog_stop();
    g_agg.shutting_down = 1;
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
    uv_close((uv_handle_t *)&g_agg.run.pause_timer, NULL);
    agg_admin_run_over();
    vf_rpc_server_shutdown(g_agg.server, 2000, on_closed, NULL);
}

int main(int argc, char **argv) {
    vf_blas_ensure_native_kernels();   /* may re-exec with OPENBLAS_CORETYPE: before anything else */
    vf_log_set_program(PROGRAM);
    const char *config;
    int check_only;
    int a = vf_daemon_args(argc, argv, PROGRAM,
                           "The aggregator: the federation's gRPC server (mutual TLS).  Holds the image embeddings,\n"
                           "runs the CoOp training loop across the parties, evaluates, and serves the Admin API.",
                           schema, &config, &check_only);
    if (a) return a == 1 ? 0 : 2;
    vf_error err;
    vf_ini ini;
    vf_daemon_paths paths;
    long port, max_mb, keepalive;
    char audit[4096];
    if (vf_ini_load(&ini, config, schema, &err) || vf_daemon_paths_load(&ini, &paths, &err) ||
        vf_ini_int(&ini, "server", "port", 0, 65535, &port, &err) ||
        vf_ini_int(&ini, "server", "max_message_mb", 1, 1024, &max_mb, &err) ||
        vf_ini_int(&ini, "server", "keepalive_ms", 0, 86400000, &keepalive, &err) ||
        vf_ini_path(&ini, "runs", "default_config", vf_ini_given(&ini, "runs", "default_config"), g_agg.default_config,
                    sizeof g_agg.default_config, &err) ||
        vf_ini_path(&ini, "runs", "audit_log", 0, audit, sizeof audit, &err) ||
        vf_identity_from_file(paths.cert, &g_agg.me, &err)) {
        fprintf(stderr, "%s: %s\n", PROGRAM, err.msg);
        return 1;
    }
    if (g_agg.me.role != VF_ROLE_AGGREGATOR) {
        fprintf(stderr, "%s: %s is a %s certificate, not an aggregator's\n", PROGRAM, paths.cert, vf_role_name(g_agg.me.role));
        return 1;
    }
    snprintf(g_agg.name, sizeof g_agg.name, "%s", g_agg.me.name);
    snprintf(g_agg.state_dir, sizeof g_agg.state_dir, "%s", paths.state);
    snprintf(g_agg.key_path, sizeof g_agg.key_path, "%s", paths.key);
    snprintf(g_agg.cert_path, sizeof g_agg.cert_path, "%s", paths.cert);
    if (audit[0]) snprintf(g_agg.audit_path, sizeof g_agg.audit_path, "%s", audit);
    else snprintf(g_agg.audit_path, sizeof g_agg.audit_path, "%s/audit.log", paths.state);
    if (check_only) {
        printf("%s: configuration %s is valid (aggregator %s)\n", PROGRAM, config, g_agg.name);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    g_agg.loop = uv_default_loop();
    uv_timer_init(g_agg.loop, &g_agg.run.pause_timer);

    vf_rpc_server_config sc = {0};
    sc.host = vf_ini_get(&ini, "server", "host");
    sc.port = (int)port;
    sc.tls = (vf_rpc_tls_files){paths.ca, paths.cert, paths.key, paths.crl[0] ? paths.crl : NULL};
    sc.max_recv_message = (size_t)max_mb << 20;
    sc.keepalive_ms = (int)keepalive;
    sc.watch_sighup = 1;
    vf_rpc_method methods[1 + 8];
    methods[0] = agg_join_method;
    for (int i = 0; i < agg_admin_n_methods; i++) methods[1 + i] = agg_admin_methods[i];
    if (vf_rpc_server_start(g_agg.loop, &sc, methods, 1 + agg_admin_n_methods, &g_agg.server, &err)) {
        fprintf(stderr, "%s: %s\n", PROGRAM, err.msg);
        return 1;
    }
    vf_log(VF_INFO, "event=listening name=%s host=%s port=%d state=%s", g_agg.name, sc.host, vf_rpc_server_port(g_agg.server),
           paths.state);
    printf("port=%d\n", vf_rpc_server_port(g_agg.server));
    fflush(stdout);
    agg_run_resume_at_start();
    uv_signal_init(g_agg.loop, &g_sigterm);
    uv_signal_init(g_agg.loop, &g_sigint);
    uv_signal_start(&g_sigterm, on_stop, SIGTERM);
    uv_signal_start(&g_sigint, on_stop, SIGINT);
    vf_notify_ready("listening");
    vf_watchdog_start(g_agg.loop);
    uv_run(g_agg.loop, UV_RUN_DEFAULT);
    vf_rpc_server_free(g_agg.server);
    vf_ini_free(&ini);
    return 0;
}
