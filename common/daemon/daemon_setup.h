/* daemon_setup: what every vflclip daemon does the same way — the [tls],
 * [aggregator] (dial), [state] and [log] keys its INI shares with the
 * starter configs `vflclip provision` writes, turning them into TLS files
 * and a party-link configuration, and the common command line
 * (--config FILE, --help-config, --check-config, --version). */
#ifndef VF_DAEMON_SETUP_H
#define VF_DAEMON_SETUP_H

#include "daemon/ini_config.h"
#include "daemon/party_link.h"
#include "rpc/rpc.h"
#include "daemon/version.h"

/* Schema rows shared by the daemons (paste into a schema array). */
#define VF_INI_TLS_KEYS                                                                                           \
    {"tls", "cert", VF_INI_PATH, 1, "cert.pem", "this participant's certificate (PEM)"},                         \
    {"tls", "key", VF_INI_PATH, 1, "key.pem", "its private key (PEM, mode 0600)"},                                \
    {"tls", "ca", VF_INI_PATH, 1, "ca.crt", "the federation CA certificate"},                                     \
    {"tls", "crl", VF_INI_PATH, 0, "crl.pem", "the federation's revocation list (reloaded when it changes)"}
#define VF_INI_DIAL_KEYS                                                                                          \
    {"aggregator", "host", VF_INI_STR, 1, NULL, "host name or address of the aggregator"},                       \
    {"aggregator", "port", VF_INI_INT, 0, "50051", "its port"},                                                   \
    {"aggregator", "server_name", VF_INI_STR, 0, NULL, "name its certificate must carry (default: host)"},        \
    {"aggregator", "backoff_min_ms", VF_INI_INT, 0, "500", "first redial delay after the link drops"},            \
    {"aggregator", "backoff_max_ms", VF_INI_INT, 0, "30000", "longest redial delay (the delay doubles up to it)"}
#define VF_INI_STATE_KEYS                                                                                         \
    {"state", "dir", VF_INI_PATH, 0, "state", "checkpoints, caches and run state (created if missing)"},          \
    {"log", "level", VF_INI_STR, 0, "info", "debug | info | warn | error"}

typedef struct vf_daemon_paths {
    char cert[4096], key[4096], ca[4096], crl[4096], state[4096];
} vf_daemon_paths;

/* Resolves [tls] and [state] (creating the state directory), sets the log level. */
int vf_daemon_paths_load(const vf_ini *ini, vf_daemon_paths *p, vf_error *err);
/* [aggregator] into a link configuration pointing at p's TLS files. */
int vf_daemon_link_config(const vf_ini *ini, const vf_daemon_paths *p, vf_party_link_config *cfg, char *host,
                          size_t host_size, char *server_name, size_t sn_size, vf_error *err);

/* Parses `PROGRAM --config FILE [--check-config] | --help-config | --help | --version`.
 * Returns 0 to go on (*config set), 1 to exit 0 (help printed), 2 on a usage error. */
int vf_daemon_args(int argc, char **argv, const char *program, const char *summary, const vf_ini_key *schema,
                   const char **config, int *check_only);

/* ---- a daemon's main(), the steps every role takes ----------------------- */

typedef struct vf_daemon_spec {
    const char *program;          /* "vflclip-aggregator": log lines and messages */
    const char *summary;          /* --help text */
    const vf_ini_key *schema;
    int dials;                    /* a party: read [aggregator] into link */
} vf_daemon_spec;

typedef struct vf_daemon {
    const vf_daemon_spec *spec;
    const char *config;           /* the INI file */
    int check_only;               /* --check-config */
    vf_ini ini;
    vf_daemon_paths paths;
    vf_party_link_config link;    /* when spec->dials */
    char host[256], server_name[256];
    void (*on_stop)(int sig);
    uv_signal_t sigterm, sigint;
} vf_daemon;

/* First thing in main(): the OpenBLAS kernel check (it may re-exec), the log
 * program name, the command line (--help, --help-config and --version
 * answered here), the INI against the schema, [tls]/[state]/[log] and, for a
 * party, the [aggregator] link; SIGPIPE ignored.  The [tls] cert must be of
 * the daemon's role (from the program name: vflclip-<role>), else a
 * configuration error ("certificate role knowledge-party cannot join as image
 * party"); a [tls] key readable by group or others is an error under
 * --check-config and a WARN line otherwise.  Returns -1 to go on, else the status
 * main() returns: 0 after help, 2 for a usage error, 1 for a configuration
 * error (printed as "PROGRAM: message"). */
int vf_daemon_start(vf_daemon *d, const vf_daemon_spec *spec, int argc, char **argv);
/* Prints "PROGRAM: <err>" on stderr, lets the configuration go; returns 1
 * (main()'s exit status). */
int vf_daemon_fail(vf_daemon *d, const vf_error *err);
/* Catches SIGTERM/SIGINT (on_stop(sig) runs once, then systemd is told the
 * daemon is stopping, the watchdog stops and the signals are let go), tells
 * systemd READY with `ready`, starts the watchdog and runs the loop until
 * nothing is left on it. */
void vf_daemon_run(vf_daemon *d, uv_loop_t *loop, const char *ready, void (*on_stop)(int sig));
/* Lets the configuration go (before main() returns). */
void vf_daemon_end(vf_daemon *d);

#endif
