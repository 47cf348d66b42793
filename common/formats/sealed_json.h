/* sealed_json: JSON state files that say when they are damaged.  The object
 * is written (atomically) with one more member, "sha256": the SHA-256 of the
 * object's compact text without that member.  Reading parses the file,
 * removes the member and checks it, so a torn, truncated or hand-edited file
 * is refused with its name instead of being trained on.  Writers that keep
 * the previous good copy (keep_previous) leave it as <path>.prev, which a
 * reader can fall back to. */
#ifndef VF_FORMATS_SEALED_JSON_H
#define VF_FORMATS_SEALED_JSON_H

#include "util/vf_error.h"

typedef struct cJSON cJSON;

/* Adds "sha256" to o (replacing one already there) and writes it to path
 * atomically; with keep_previous, the file it replaces becomes path.prev
 * (vf_atomic_commit_keeping: path is never missing meanwhile). */
int vf_sealed_json_write(const char *path, cJSON *o, int keep_previous, vf_error *err);
/* The object of a sealed file, its "sha256" checked and removed; NULL and err
 * (naming the file: missing, not JSON, no checksum, checksum mismatch). */
cJSON *vf_sealed_json_read(const char *path, vf_error *err);

#endif
