/* fuzz_util: what the libFuzzer targets share.  An API that takes a path gets
 * the input written to a file of the right name in a private temporary
 * directory (under /dev/shm when there is one: no disk I/O per input); logs
 * are silenced so the fuzzer's output stays readable. */
#ifndef VF_FUZZ_UTIL_H
#define VF_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ftw.h>

#include "util/log.h"

static char fuzz_dir_path[256];

static inline int fuzz_rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) { return remove(p); }
/* At exit (libFuzzer ends with exit()), the private directory goes. */
static inline void fuzz_dir_remove(void) { nftw(fuzz_dir_path, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* The private directory, made on first use, removed at exit. */
static inline const char *fuzz_dir(void) {
    char *dir = fuzz_dir_path;
    if (!dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        snprintf(dir, sizeof fuzz_dir_path, "%s/vf-fuzz-XXXXXX", base);
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
        vf_log_set_level(VF_ERROR + 1);
    }
    return dir;
}

/* Writes data to <fuzz_dir>/<name> and returns that path (static storage). */
static inline const char *fuzz_write(const char *name, const uint8_t *data, size_t size) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror(path);
        abort();
    }
    return path;
}

/* The input as a NUL-terminated string (malloc'd; embedded NULs stay: the
 * parser sees the text up to the first one, as it would from a file). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

#endif
