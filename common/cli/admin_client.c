/* admin_client: one-shot Admin calls for the CLI (see admin_client.h). */
#include "cli/admin_client.h"
#include "daemon/daemon_setup.h"

#include <protobuf-c/protobuf-c.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const vf_ini_key admin_schema[] = {
    VF_INI_TLS_KEYS,
    VF_INI_DIAL_KEYS,
    {NULL, NULL, 0, 0, NULL, NULL},
};

int vf_admin_load(vf_admin *a, const char *path, vf_error *err) {
    memset(a, 0, sizeof *a);
    if (!path) path = getenv("VFLCLIP_ADMIN_CONFIG");
    if (!path) path = "admin.ini";
    snprintf(a->config, sizeof a->config, "%s", path);
    vf_ini ini;
    if (vf_ini_load(&ini, path, admin_schema, err)) return -1;
    long port;
    int rc = vf_ini_path(&ini, "tls", "cert", 1, a->cert, sizeof a->cert, err) ||
             vf_ini_path(&ini, "tls", "key", 1, a->key, sizeof a->key, err) ||
             vf_ini_path(&ini, "tls", "ca", 1, a->ca, sizeof a->ca, err) ||
             vf_ini_path(&ini, "tls", "crl", 0, a->crl, sizeof a->crl, err) ||
             vf_ini_int(&ini, "aggregator", "port", 1, 65535, &port, err);
    if (!rc) {
        a->port = (int)port;
        snprintf(a->host, sizeof a->host, "%s", vf_ini_get(&ini, "aggregator", "host"));
        const char *sn = vf_ini_get(&ini, "aggregator", "server_name");
        snprintf(a->server_name, sizeof a->server_name, "%s", sn ? sn : a->host);
    }
    vf_ini_free(&ini);
    return rc ? -1 : 0;
}

typedef struct one_call {
    const vf_admin *a;
    const char *method;
    const ProtobufCMessage *req;
    vf_admin_on_message on_message;
    void *ud;
    int status, connected;
    char message[1024];
    vf_rpc_client *client;
} one_call;

static void on_msg(vf_rpc_call *call, const uint8_t *data, size_t len, void *ud) {
    one_call *oc = ud;
    if (oc->on_message) oc->on_message(data, len, oc->ud);
}

static void on_done(vf_rpc_call *call, int status, const char *message, void *ud) {
    one_call *oc = ud;
    oc->status = status;
    snprintf(oc->message, sizeof oc->message, "%s", message ? message : "");
    vf_rpc_client_close(oc->client);
}

static void on_ready(vf_rpc_client *c, int status, const char *msg, void *ud) {
    one_call *oc = ud;
    if (status != 0) {
        oc->status = -1;
        snprintf(oc->message, sizeof oc->message, "cannot reach the aggregator at %s:%d: %s", oc->a->host, oc->a->port, msg);
        return;
    }
    oc->connected = 1;
    vf_error err;
    vf_rpc_call_handlers h = {on_msg, on_done, NULL, oc};
    vf_rpc_call *call = vf_rpc_client_call(c, oc->method, oc->a->timeout_ms, &h, &err);
    if (!call || vf_rpc_call_send_pb(call, oc->req, &err) || vf_rpc_call_close_send(call, &err)) {
        oc->status = -1;
        snprintf(oc->message, sizeof oc->message, "%s", err.msg);
        if (call) vf_rpc_call_cancel(call);
        else vf_rpc_client_close(c);
    }
}

static void on_closed(vf_rpc_client *c, const char *reason, void *ud) {}

int vf_admin_call(const vf_admin *a, const char *method, const ProtobufCMessage *request, vf_admin_on_message on_message,
                  void *ud, vf_error *err) {
    signal(SIGPIPE, SIG_IGN);
    one_call oc = {.a = a, .method = method, .req = request, .on_message = on_message, .ud = ud, .status = -1};
    snprintf(oc.message, sizeof oc.message, "the call did not complete");
    vf_rpc_client_config cfg = {0};
    cfg.host = a->host;
    cfg.port = a->port;
    cfg.server_name = a->server_name;
    cfg.tls = (vf_rpc_tls_files){a->ca, a->cert, a->key, a->crl[0] ? a->crl : NULL};
    cfg.max_recv_message = 64u << 20;
    vf_rpc_client_handlers h = {on_ready, on_closed, &oc};
    uv_loop_t loop;
    uv_loop_init(&loop);
    if (vf_rpc_client_connect(&loop, &cfg, &h, &oc.client, err)) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return -1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (oc.status != 0) vf_fail(err, "%s", oc.message);
    return oc.status;
}

int vf_admin_take_options(int argc, char **argv, const char **admin_path, int *timeout_ms) {
    int out = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--admin") && i + 1 < argc) { *admin_path = argv[++i]; continue; }
        if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) { *timeout_ms = atoi(argv[++i]); continue; }
        argv[out++] = argv[i];
    }
    return out;
}
