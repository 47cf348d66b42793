/* zip: a read-only reader for the zip archives numpy writes (.npz):
 * members STORED or DEFLATED, with zip64 records where numpy's zipfile
 * writes them (savez forces zip64 on every member's local header; archives
 * or members past 4 GiB use zip64 sizes and offsets in the central
 * directory).  The central directory is the authority for sizes and offsets;
 * each member's CRC-32 is checked.  Errors name the archive and the member. */
#ifndef VF_ZIP_H
#define VF_ZIP_H

#include <stddef.h>
#include <stdint.h>
#include "util/vf_error.h"

typedef struct vf_zip_member {
    char *name;
    int method;                  /* 0 = stored, 8 = deflated */
    uint32_t crc32;
    uint64_t comp_size, size;
    uint64_t local_offset;       /* of the local file header */
} vf_zip_member;

typedef struct vf_zip {
    char path[4096];
    unsigned char *map;
    size_t map_len;
    int n_members;
    vf_zip_member *members;
} vf_zip;

int vf_zip_open(vf_zip *z, const char *path, vf_error *err);
void vf_zip_close(vf_zip *z);
/* NULL when absent. */
const vf_zip_member *vf_zip_find(const vf_zip *z, const char *name);
/* The member's bytes.  A stored member points into the mapping (*owned = 0);
 * a deflated one is inflated into a malloc'd buffer (*owned = 1, caller
 * frees).  The CRC is verified either way. */
int vf_zip_read(const vf_zip *z, const vf_zip_member *m, const unsigned char **data, size_t *len,
                int *owned, vf_error *err);

#endif
