/* fileio: whole-file reads, atomic writes, mkdir -p (see fileio.h). */
#include "util/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int vf_read_file(const char *path, char **data, size_t *len, vf_error *err) {
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vf_fail_errno(err, path);
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return vf_fail_errno(err, path); }
    if (!S_ISREG(st.st_mode)) { close(fd); return vf_fail(err, "%s: not a regular file", path); }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) { close(fd); return vf_fail(err, "%s: out of memory for %lld bytes", path, (long long)st.st_size); }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { free(buf); close(fd); return r < 0 ? vf_fail_errno(err, path) : vf_fail(err, "%s: file shrank while reading", path); }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    *data = buf;
    *len = got;
    return 0;
}

static int write_all(int fd, const void *data, size_t len) {
    const unsigned char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int vf_atomic_open(vf_atomic_file *f, const char *path, vf_error *err) {
    if (strlen(path) >= sizeof f->path) return vf_fail(err, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%d", path, (int)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) return vf_fail_errno(err, f->tmp);
    return 0;
}

int vf_atomic_write(vf_atomic_file *f, const void *data, size_t len, vf_error *err) {
    if (write_all(f->fd, data, len) != 0) return vf_fail_errno(err, f->tmp);
    return 0;
}

static void fsync_dir_of(const char *path) {
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
}

int vf_atomic_commit(vf_atomic_file *f, vf_error *err) {
    if (fsync(f->fd) != 0) { vf_fail_errno(err, f->tmp); vf_atomic_abort(f); return -1; }
    if (close(f->fd) != 0) { f->fd = -1; vf_fail_errno(err, f->tmp); unlink(f->tmp); return -1; }
    f->fd = -1;
    if (rename(f->tmp, f->path) != 0) { vf_fail_errno(err, f->path); unlink(f->tmp); return -1; }
    fsync_dir_of(f->path);
    return 0;
}

int vf_atomic_commit_keeping(vf_atomic_file *f, const char *prev, vf_error *err) {
    if (fsync(f->fd) != 0) { vf_fail_errno(err, f->tmp); vf_atomic_abort(f); return -1; }
    if (close(f->fd) != 0) { f->fd = -1; vf_fail_errno(err, f->tmp); unlink(f->tmp); return -1; }
    f->fd = -1;
    if (renameat2(AT_FDCWD, f->tmp, AT_FDCWD, f->path, RENAME_EXCHANGE) == 0) {
        /* f->tmp now names the replaced file */
        if (rename(f->tmp, prev) != 0) { vf_fail_errno(err, prev); unlink(f->tmp); return -1; }
    } else if (errno == ENOENT) {   /* nothing to keep yet */
        if (rename(f->tmp, f->path) != 0) { vf_fail_errno(err, f->path); unlink(f->tmp); return -1; }
    } else {                        /* no exchange here: the short window of two renames */
        if (rename(f->path, prev) != 0 && errno != ENOENT) { vf_fail_errno(err, prev); unlink(f->tmp); return -1; }
        if (rename(f->tmp, f->path) != 0) { vf_fail_errno(err, f->path); unlink(f->tmp); return -1; }
    }
    fsync_dir_of(f->path);
    return 0;
}

void vf_atomic_abort(vf_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    unlink(f->tmp);
}

int vf_write_atomic(const char *path, const void *data, size_t len, vf_error *err) {
    vf_atomic_file f;
    if (vf_atomic_open(&f, path, err) != 0) return -1;
    if (vf_atomic_write(&f, data, len, err) != 0) { vf_atomic_abort(&f); return -1; }
    return vf_atomic_commit(&f, err);
}

int vf_mkdirs(const char *path, int mode, vf_error *err) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) return vf_fail(err, "%s: path too long", path);
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, (mode_t)mode) != 0 && errno != EEXIST) return vf_fail_errno(err, buf);
        *p = '/';
    }
    if (mkdir(buf, (mode_t)mode) != 0 && errno != EEXIST) return vf_fail_errno(err, buf);
    return 0;
}
