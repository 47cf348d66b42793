/* daemon_setup: shared config sections and command line of the daemons. */
#include "daemon/daemon_setup.h"
#include "cpu/blas_setup.h"
#include "daemon/notify.h"
#include "util/fileio.h"
#include "util/log.h"
#include "daemon/version.h"

#include <signal.h>
#include <string.h>
#include <sys/stat.h>

int vf_daemon_paths_load(const vf_ini *ini, vf_daemon_paths *p, vf_error *err) {
    memset(p, 0, sizeof *p);
    if (vf_ini_path(ini, "tls", "cert", 1, p->cert, sizeof p->cert, err) ||
        vf_ini_path(ini, "tls", "key", 1, p->key, sizeof p->key, err) ||
        vf_ini_path(ini, "tls", "ca", 1, p->ca, sizeof p->ca, err) ||
        vf_ini_path(ini, "tls", "crl", 0, p->crl, sizeof p->crl, err) ||
        vf_ini_path(ini, "state", "dir", 0, p->state, sizeof p->state, err))
        return -1;
    if (vf_mkdirs(p->state, 0700, err)) return vf_error_prefix(err, "%s: [state] dir", ini->name);
    const char *lv = vf_ini_get(ini, "log", "level");
    int level = !strcmp(lv, "debug") ? VF_DEBUG : !strcmp(lv, "info") ? VF_INFO : !strcmp(lv, "warn") ? VF_WARN
              : !strcmp(lv, "error") ? VF_ERROR : -1;
    if (level < 0) return vf_fail(err, "%s: [log] level = '%s' is not debug, info, warn or error", ini->name, lv);
    vf_log_set_level(level);
    return 0;
}

int vf_daemon_link_config(const vf_ini *ini, const vf_daemon_paths *p, vf_party_link_config *cfg, char *host,
                          size_t host_size, char *server_name, size_t sn_size, vf_error *err) {
    memset(cfg, 0, sizeof *cfg);
    long port, bmin, bmax;
    if (vf_ini_int(ini, "aggregator", "port", 1, 65535, &port, err) ||
        vf_ini_int(ini, "aggregator", "backoff_min_ms", 1, 3600000, &bmin, err) ||
        vf_ini_int(ini, "aggregator", "backoff_max_ms", 1, 3600000, &bmax, err))
        return -1;
    snprintf(host, host_size, "%s", vf_ini_get(ini, "aggregator", "host"));
    const char *sn = vf_ini_get(ini, "aggregator", "server_name");
    snprintf(server_name, sn_size, "%s", sn ? sn : host);
    cfg->client.host = host;
    cfg->client.port = (int)port;
    cfg->client.server_name = server_name;
    cfg->client.tls = (vf_rpc_tls_files){p->ca, p->cert, p->key, p->crl[0] ? p->crl : NULL};
    cfg->client.max_recv_message = 64u << 20;
    cfg->backoff_min_ms = (int)bmin;
    cfg->backoff_max_ms = (int)bmax;
    snprintf(cfg->party_log, sizeof cfg->party_log, "%s/party-log.jsonl", p->state);
    return 0;
}

int vf_daemon_args(int argc, char **argv, const char *program, const char *summary, const vf_ini_key *schema,
                   const char **config, int *check_only) {
    *config = NULL;
    *check_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: %s --config FILE.ini [--check-config]\n       %s --help-config | --version\n\n%s\n\n"
                   "  --config FILE     the daemon's INI configuration (see --help-config)\n"
                   "  --check-config    load and check the configuration and its files, then exit\n"
                   "  --help-config     print every configuration key with its documentation\n"
                   "  --version         version, git revision, build options, BLAS core, CUDA\n",
                   program, program, summary);
            return 1;
        }
        if (!strcmp(argv[i], "--version")) {
            vf_version_print(stdout, program);
            return 1;
        }
        if (!strcmp(argv[i], "--help-config")) {
            vf_ini_print_schema(stdout, schema);
            return 1;
        }
        if (!strcmp(argv[i], "--check-config")) { *check_only = 1; continue; }
        if (!strcmp(argv[i], "--config") && i + 1 < argc) { *config = argv[++i]; continue; }
        fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", program, argv[i]);
        return 2;
    }
    if (!*config) {
        fprintf(stderr, "%s: --config FILE.ini is required (try --help)\n", program);
        return 2;
    }
    return 0;
}

int vf_daemon_fail(vf_daemon *d, const vf_error *err) {
    fprintf(stderr, "%s: %s\n", d->spec->program, err->msg);
    vf_ini_free(&d->ini);
    return 1;
}

/* The daemon's role from its program name ("vflclip-image-party" -> image-party). */
static vf_role program_role(const char *program) {
    vf_role r;
    const char *dash = strchr(program, '-');
    return dash && vf_role_parse(dash + 1, &r) == 0 ? r : VF_ROLE_NONE;
}

/* The certificate must be of the daemon's role (a knowledge-party certificate
 * in an image party would join as the knowledge party). */
static int check_cert_role(const vf_daemon *d, vf_error *err) {
    vf_role want = program_role(d->spec->program);
    if (want == VF_ROLE_NONE) return 0;
    vf_peer_identity me;
    if (vf_identity_from_file(d->paths.cert, &me, err)) return vf_error_prefix(err, "%s: [tls] cert", d->config);
    char why[128];
    if (vf_party_role_mismatch(me.role, want, why, sizeof why))
        return vf_fail(err, "%s: [tls] cert %s: %s (name %s, serial %s)", d->config, d->paths.cert, why, me.name,
                       me.serial_hex);
    return 0;
}

/* The private key readable by group or others (mode & 077): returns 1 and
 * describes it in err. */
static int key_exposed(const vf_daemon *d, vf_error *err) {
    struct stat st;
    if (stat(d->paths.key, &st) != 0 || (st.st_mode & 077) == 0) return 0;
    vf_fail(err, "%s: [tls] key %s has mode %03o: group or others can read the private key; chmod 600 it", d->config,
            d->paths.key, (unsigned)(st.st_mode & 0777));
    return 1;
}

int vf_daemon_start(vf_daemon *d, const vf_daemon_spec *spec, int argc, char **argv) {
    vf_blas_ensure_native_kernels();   /* may re-exec with OPENBLAS_CORETYPE: before anything else */
    memset(d, 0, sizeof *d);
    d->spec = spec;
    vf_log_set_program(spec->program);
    int a = vf_daemon_args(argc, argv, spec->program, spec->summary, spec->schema, &d->config, &d->check_only);
    if (a) return a == 1 ? 0 : 2;
    vf_error err;
    if (vf_ini_load(&d->ini, d->config, spec->schema, &err) || vf_daemon_paths_load(&d->ini, &d->paths, &err) ||
        (spec->dials && vf_daemon_link_config(&d->ini, &d->paths, &d->link, d->host, sizeof d->host, d->server_name,
                                              sizeof d->server_name, &err)) ||
        check_cert_role(d, &err))
        return vf_daemon_fail(d, &err);
    if (key_exposed(d, &err)) {
        /* --check-config refuses it; a running daemon says so and goes on (systemd's
         * credential files can show group bits that are an ACL mask, not a leak) */
        if (d->check_only) return vf_daemon_fail(d, &err);
        vf_log(VF_WARN, "event=key_exposed detail=\"%s\"", err.msg);
    }
    if (spec->dials) d->link.expected_role = program_role(spec->program);
    signal(SIGPIPE, SIG_IGN);
    return -1;
}

static void on_signal(uv_signal_t *h, int sig) {
    vf_daemon *d = h->data;
    d->on_stop(sig);
    vf_notify_stopping();
    vf_watchdog_stop();
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
}

void vf_daemon_run(vf_daemon *d, uv_loop_t *loop, const char *ready, void (*on_stop)(int sig)) {
    d->on_stop = on_stop;
    uv_signal_init(loop, &d->sigterm);
    uv_signal_init(loop, &d->sigint);
    d->sigterm.data = d->sigint.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    vf_notify_ready(ready);
    vf_watchdog_start(loop);
    uv_run(loop, UV_RUN_DEFAULT);
}

void vf_daemon_end(vf_daemon *d) { vf_ini_free(&d->ini); }
