/* daemon_setup: shared config sections and command line of the daemons. */
#include "daemon/daemon_setup.h"
#include "util/fileio.h"
#include "util/log.h"

#include <string.h>

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
            printf("usage: %s --config FILE.ini [--check-config]\n       %s --help-config\n\n%s\n\n"
                   "  --config FILE     the daemon's INI configuration (see --help-config)\n"
                   "  --check-config    load and check the configuration and its files, then exit\n"
                   "  --help-config     print every configuration key with its documentation\n",
                   program, program, summary);
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
