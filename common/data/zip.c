/* zip: central-directory parsing (with zip64), stored and deflated members
 * (zlib raw inflate), CRC-32 check.  Reads from a read-only mapping. */
#include "data/zip.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_EOCD64_LOC 0x07064b50u
#define EOCD_MIN 22
#define ZIP_MAX_COMMENT 65535

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

void vf_zip_close(vf_zip *z) {
    if (z->members) {
        for (int i = 0; i < z->n_members; i++) free(z->members[i].name);
        free(z->members);
    }
    if (z->map && z->map != MAP_FAILED) munmap(z->map, z->map_len);
    z->members = NULL;
    z->map = NULL;
    z->n_members = 0;
}

/* Finds the end-of-central-directory record: the last signature whose comment
 * length reaches exactly the end of the file. */
static int find_eocd(const vf_zip *z, size_t *pos, vf_error *err) {
    if (z->map_len < EOCD_MIN) return vf_fail(err, "%s: %zu bytes is too short for a zip archive", z->path, z->map_len);
    size_t lowest = z->map_len > EOCD_MIN + ZIP_MAX_COMMENT ? z->map_len - EOCD_MIN - ZIP_MAX_COMMENT : 0;
    for (size_t p = z->map_len - EOCD_MIN + 1; p-- > lowest;) {
        if (rd32(z->map + p) == SIG_EOCD && p + EOCD_MIN + rd16(z->map + p + 20) == z->map_len) {
            *pos = p;
            return 0;
        }
    }
    return vf_fail(err, "%s: no zip end-of-central-directory record: the file is truncated or not a zip archive (an .npz is written by numpy.savez)", z->path);
}

/* Reads zip64 extra-field values for the fields that are saturated, in the
 * order the specification lists them: size, compressed size, offset. */
static int zip64_extra(const vf_zip *z, const char *name, const unsigned char *extra, size_t extra_len,
                       uint64_t *size, uint64_t *comp, uint64_t *offset, vf_error *err) {
    size_t p = 0;
    while (p + 4 <= extra_len) {
        uint16_t id = rd16(extra + p), len = rd16(extra + p + 2);
        if (p + 4 + len > extra_len) break;
        if (id == 0x0001) {
            const unsigned char *f = extra + p + 4;
            size_t need = 0;
            if (*size == 0xFFFFFFFFu) { if (need + 8 > len) goto short_field; *size = rd64(f + need); need += 8; }
            if (*comp == 0xFFFFFFFFu) { if (need + 8 > len) goto short_field; *comp = rd64(f + need); need += 8; }
            if (offset && *offset == 0xFFFFFFFFu) { if (need + 8 > len) goto short_field; *offset = rd64(f + need); need += 8; }
            return 0;
        }
        p += 4 + (size_t)len;
    }
    if (*size == 0xFFFFFFFFu || *comp == 0xFFFFFFFFu || (offset && *offset == 0xFFFFFFFFu))
        return vf_fail(err, "%s: member '%s' has 32-bit fields saturated but no zip64 extra field", z->path, name);
    return 0;
short_field:
    return vf_fail(err, "%s: member '%s' has a truncated zip64 extra field", z->path, name);
}

static int parse_central(vf_zip *z, uint64_t cd_off, uint64_t cd_size, uint64_t n_entries, vf_error *err) {
    if (cd_off > z->map_len || cd_size > z->map_len - cd_off)
        return vf_fail(err, "%s: central directory (offset %llu, %llu bytes) lies past the end of the %zu-byte file",
                       z->path, (unsigned long long)cd_off, (unsigned long long)cd_size, z->map_len);
    if (n_entries > cd_size / 46)
        return vf_fail(err, "%s: %llu entries cannot fit in a %llu-byte central directory", z->path,
                       (unsigned long long)n_entries, (unsigned long long)cd_size);
    z->members = calloc(n_entries ? n_entries : 1, sizeof *z->members);
    if (!z->members) return vf_fail(err, "%s: out of memory for %llu members", z->path, (unsigned long long)n_entries);
    const unsigned char *p = z->map + cd_off, *end = p + cd_size;
    for (uint64_t i = 0; i < n_entries; i++) {
        if (end - p < 46 || rd32(p) != SIG_CENTRAL)
            return vf_fail(err, "%s: central directory entry %llu is malformed", z->path, (unsigned long long)i);
        uint16_t flags = rd16(p + 8), method = rd16(p + 10);
        uint16_t name_len = rd16(p + 28), extra_len = rd16(p + 30), comment_len = rd16(p + 32);
        if ((size_t)(end - p) < 46u + name_len + extra_len + comment_len)
            return vf_fail(err, "%s: central directory entry %llu runs past the directory", z->path, (unsigned long long)i);
        vf_zip_member *m = &z->members[z->n_members];
        m->name = strndup((const char *)p + 46, name_len);
        if (!m->name) return vf_fail(err, "%s: out of memory", z->path);
        z->n_members++;
        m->method = method;
        m->crc32 = rd32(p + 16);
        m->comp_size = rd32(p + 20);
        m->size = rd32(p + 24);
        m->local_offset = rd32(p + 42);
        if (flags & 1) return vf_fail(err, "%s: member '%s' is encrypted", z->path, m->name);
        if (method != 0 && method != 8)
            return vf_fail(err, "%s: member '%s' uses compression method %u (only stored and deflated are supported)",
                           z->path, m->name, method);
        if (zip64_extra(z, m->name, p + 46 + name_len, extra_len, &m->size, &m->comp_size, &m->local_offset, err)) return -1;
        p += 46 + name_len + extra_len + comment_len;
    }
    return 0;
}

int vf_zip_open(vf_zip *z, const char *path, vf_error *err) {
    memset(z, 0, sizeof *z);
    snprintf(z->path, sizeof z->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vf_fail_errno(err, path);
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return vf_fail_errno(err, path); }
    if (!S_ISREG(st.st_mode)) { close(fd); return vf_fail(err, "%s: not a regular file", path); }
    z->map_len = (size_t)st.st_size;
    if (z->map_len < EOCD_MIN) { close(fd); return vf_fail(err, "%s: %zu bytes is too short for a zip archive", path, z->map_len); }
    z->map = mmap(NULL, z->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (z->map == MAP_FAILED) { z->map = NULL; return vf_fail_errno(err, path); }

    size_t eocd = 0;
    if (find_eocd(z, &eocd, err)) goto fail;
    const unsigned char *e = z->map + eocd;
    uint64_t n_entries = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        if (eocd < 20 || rd32(z->map + eocd - 20) != SIG_EOCD64_LOC) {
            vf_fail(err, "%s: saturated end-of-central-directory record without a zip64 locator", path);
            goto fail;
        }
        uint64_t e64 = rd64(z->map + eocd - 20 + 8);
        if (e64 > z->map_len || z->map_len - e64 < 56 || rd32(z->map + e64) != SIG_EOCD64) {
            vf_fail(err, "%s: zip64 end-of-central-directory record is missing or out of range", path);
            goto fail;
        }
        n_entries = rd64(z->map + e64 + 32);
        cd_size = rd64(z->map + e64 + 40);
        cd_off = rd64(z->map + e64 + 48);
    }
    if (parse_central(z, cd_off, cd_size, n_entries, err)) goto fail;
    return 0;
fail:
    vf_zip_close(z);
    return -1;
}

const vf_zip_member *vf_zip_find(const vf_zip *z, const char *name) {
    for (int i = 0; i < z->n_members; i++)
        if (strcmp(z->members[i].name, name) == 0) return &z->members[i];
    return NULL;
}

static int inflate_member(const vf_zip *z, const vf_zip_member *m, const unsigned char *src, unsigned char *dst,
                          vf_error *err) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -MAX_WBITS) != Z_OK) return vf_fail(err, "%s: member '%s': zlib init failed", z->path, m->name);
    uint64_t in_left = m->comp_size, out_left = m->size;
    s.next_in = (unsigned char *)src;
    s.next_out = dst;
    int rc = Z_OK;
    /* zlib counts in 32-bit uInt: feed and drain in 1 GiB slices. */
    const uint64_t slice = 1u << 30;
    while (rc != Z_STREAM_END) {
        if (s.avail_in == 0 && in_left) { s.avail_in = (uInt)(in_left < slice ? in_left : slice); in_left -= s.avail_in; }
        if (s.avail_out == 0 && out_left) { s.avail_out = (uInt)(out_left < slice ? out_left : slice); out_left -= s.avail_out; }
        /* A 1-byte scratch when all expected output is written lets zlib report data past the declared size. */
        unsigned char overflow;
        int at_end = s.avail_out == 0 && out_left == 0;
        if (at_end) { s.next_out = &overflow; s.avail_out = 1; }
        rc = inflate(&s, Z_NO_FLUSH);
        if (at_end && s.avail_out == 0) {
            inflateEnd(&s);
            return vf_fail(err, "%s: member '%s' inflates to more than the %llu bytes the directory says", z->path, m->name,
                           (unsigned long long)m->size);
        }
        if (rc == Z_BUF_ERROR && s.avail_in == 0 && in_left == 0) {
            inflateEnd(&s);
            return vf_fail(err, "%s: member '%s' is truncated (deflate stream ends early)", z->path, m->name);
        }
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            inflateEnd(&s);
            return vf_fail(err, "%s: member '%s' has corrupt deflate data (%s)", z->path, m->name, s.msg ? s.msg : "zlib error");
        }
        if (at_end) { s.next_out = dst + m->size; s.avail_out = 0; }
    }
    uint64_t produced = s.total_out;
    inflateEnd(&s);
    if (produced != m->size)
        return vf_fail(err, "%s: member '%s' inflates to %llu bytes, the directory says %llu", z->path, m->name,
                       (unsigned long long)produced, (unsigned long long)m->size);
    return 0;
}

int vf_zip_read(const vf_zip *z, const vf_zip_member *m, const unsigned char **data, size_t *len, int *owned,
                vf_error *err) {
    *data = NULL;
    *len = 0;
    *owned = 0;
    if (m->local_offset > z->map_len || z->map_len - m->local_offset < 30 || rd32(z->map + m->local_offset) != SIG_LOCAL)
        return vf_fail(err, "%s: member '%s': local header at offset %llu is missing or out of range", z->path, m->name,
                       (unsigned long long)m->local_offset);
    const unsigned char *lh = z->map + m->local_offset;
    uint64_t data_off = m->local_offset + 30 + rd16(lh + 26) + rd16(lh + 28);
    if (data_off > z->map_len || m->comp_size > z->map_len - data_off)
        return vf_fail(err, "%s: member '%s' is truncated (%llu bytes of data past the end of the file)", z->path, m->name,
                       (unsigned long long)(data_off + m->comp_size - z->map_len));
    const unsigned char *src = z->map + data_off;
    unsigned char *buf;
    if (m->method == 0) {
        if (m->comp_size != m->size)
            return vf_fail(err, "%s: stored member '%s' has compressed size %llu != size %llu", z->path, m->name,
                           (unsigned long long)m->comp_size, (unsigned long long)m->size);
        buf = (unsigned char *)src;
    } else {
        if (m->size > SIZE_MAX - 1 || !(buf = malloc(m->size ? m->size : 1)))
            return vf_fail(err, "%s: member '%s': out of memory for %llu bytes", z->path, m->name, (unsigned long long)m->size);
        if (inflate_member(z, m, src, buf, err)) { free(buf); return -1; }
    }
    uLong crc = crc32_z(0L, buf, m->size);
    if ((uint32_t)crc != m->crc32) {
        if (m->method != 0) free(buf);
        return vf_fail(err, "%s: member '%s' fails its CRC-32 check (file corrupt)", z->path, m->name);
    }
    *data = buf;
    *len = m->size;
    *owned = m->method != 0;
    return 0;
}
