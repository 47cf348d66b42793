/* vf_error: the project's one error convention.
 *
 * A function that can fail takes `vf_error *err` last and returns 0 on success
 * or -1 on failure, having written a one-line message into err that names the
 * file or peer and the problem ("model.safetensors: header length 9e9 is past
 * the end of the 1024-byte file").  Callers add context with vf_error_prefix.
 * Nothing reachable from the network calls exit() or abort(). */
#ifndef VF_ERROR_H
#define VF_ERROR_H

#include <stddef.h>

typedef struct vf_error {
    char msg[1024];
} vf_error;

/* Formats the message into err (if non-NULL) and returns -1. */
int vf_fail(vf_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "prefix: " to the message already in err; returns -1. */
int vf_error_prefix(vf_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* errno-style failure: "<what>: <strerror(errno)>". */
int vf_fail_errno(vf_error *err, const char *what);

#endif
