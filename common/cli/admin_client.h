/* admin_client: the admin CLI's one-shot gRPC calls to the aggregator's Admin
 * service, over mutual TLS with the admin kit `vflclip provision --admin`
 * wrote (admin.ini: [tls] and [aggregator]).  Used by `vflclip run ...` and
 * `vflclip status`. */
#ifndef VF_CLI_ADMIN_CLIENT_H
#define VF_CLI_ADMIN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

typedef struct vf_admin {
    char config[4096];
    char host[256], server_name[256], ca[4096], cert[4096], key[4096], crl[4096];
    int port;
    int timeout_ms;
} vf_admin;

/* Loads admin.ini: `path`, else $VFLCLIP_ADMIN_CONFIG, else ./admin.ini. */
int vf_admin_load(vf_admin *a, const char *path, vf_error *err);

/* One call: sends `request` (packed bytes), hands each reply message to
 * on_message, returns the final gRPC status (0 = OK) with its message in
 * err (or -1 when the connection failed). */
typedef void (*vf_admin_on_message)(const uint8_t *data, size_t len, void *ud);
int vf_admin_call(const vf_admin *a, const char *method, const struct ProtobufCMessage *request,
                  vf_admin_on_message on_message, void *ud, vf_error *err);

/* Parses the common admin options out of argv (--admin FILE, --timeout-ms N);
 * returns the index of the first unconsumed argument layout: it compacts
 * argv in place and returns the new argc. */
int vf_admin_take_options(int argc, char **argv, const char **admin_path, int *timeout_ms);

#endif
