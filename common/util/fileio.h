/* fileio: whole-file reads and crash-safe writes.
 * vf_write_atomic writes to "<path>.tmp.<pid>", fsyncs it, renames it over
 * path and fsyncs the directory, so a kill -9 leaves either the old or the
 * new file, never a torn one. */
#ifndef VF_FILEIO_H
#define VF_FILEIO_H

#include <stddef.h>
#include "util/vf_error.h"

/* Reads the whole file; *data is NUL-terminated (not counted in *len). */
int vf_read_file(const char *path, char **data, size_t *len, vf_error *err);
int vf_write_atomic(const char *path, const void *data, size_t len, vf_error *err);

/* Streaming form: open a temp file, write pieces, then commit (fsync+rename)
 * or abort (unlink). */
typedef struct vf_atomic_file {
    int fd;
    char path[4096], tmp[4200];
} vf_atomic_file;
int vf_atomic_open(vf_atomic_file *f, const char *path, vf_error *err);
int vf_atomic_write(vf_atomic_file *f, const void *data, size_t len, vf_error *err);
int vf_atomic_commit(vf_atomic_file *f, vf_error *err);
/* Commit, keeping the file it replaces as `prev` (when there was one), with
 * no moment at which path is missing: the new file and the old one swap
 * names in one step (renameat2 RENAME_EXCHANGE), then the old one becomes
 * prev.  On a file system without the exchange, path is renamed to prev
 * and the new file renamed over it right after. */
int vf_atomic_commit_keeping(vf_atomic_file *f, const char *prev, vf_error *err);
void vf_atomic_abort(vf_atomic_file *f);
/* mkdir -p */
int vf_mkdirs(const char *path, int mode, vf_error *err);

#endif
