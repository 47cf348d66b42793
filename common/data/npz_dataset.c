/* npz_dataset: MedMNIST .npz members -> split arrays.  The zip container is
 * libzip's (stored and deflated members, zip64, CRC-32 checked); this file
 * owns which members an npz must have, their dtypes and shapes, and messages
 * naming the file and the member.  Each split's pixels are one buffer read
 * whole at open; the archive is closed before vf_dataset_open returns. */
#include "data/dataset_internal.h"
#include "formats/npy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

/* Reads integer element i of a parsed view (any integer dtype, either byte order). */
static int64_t read_int(const vf_npy_view *v, int itemsize, int big_endian, int is_signed, int64_t i) {
    const unsigned char *p = v->data + i * itemsize;
    uint64_t u = 0;
    for (int b = 0; b < itemsize; b++) u |= (uint64_t)p[big_endian ? itemsize - 1 - b : b] << (8 * b);
    if (is_signed && itemsize < 8 && (u >> (8 * itemsize - 1)) & 1) u |= ~0ull << (8 * itemsize);
    return (int64_t)u;
}

/* ---- members through libzip ------------------------------------------------ */

/* Deflate cannot expand more than 1032:1; a directory that declares more is
 * lying, and is refused before its size is allocated. */
#define DEFLATE_MAX_RATIO 1032u

/* "a, b, c" of the archive's member names, for the missing-member message. */
static void member_names(zip_t *z, char *names, size_t size) {
    names[0] = '\0';
    zip_int64_t n = zip_get_num_entries(z, 0);
    for (zip_int64_t i = 0; i < n && strlen(names) < size - 64; i++) {
        const char *name = zip_get_name(z, (zip_uint64_t)i, 0);
        snprintf(names + strlen(names), size - strlen(names), "%s%s", i ? ", " : "", name ? name : "?");
    }
}

/* Finds MEMBER and checks what its directory entry declares before any byte
 * is read: numpy writes stored or deflated members, never encrypted ones. */
static int member_stat(zip_t *z, const char *path, const char *member, zip_stat_t *st, vf_error *err) {
    zip_int64_t idx = zip_name_locate(z, member, 0);
    if (idx < 0) {
        char names[512];
        member_names(z, names, sizeof names);
        return vf_fail(err, "%s: missing member '%s' (the archive holds: %s); a MedMNIST npz has "
                       "{train,val,test}_{images,labels}", path, member, names[0] ? names : "nothing");
    }
    if (zip_stat_index(z, (zip_uint64_t)idx, 0, st) != 0)
        return vf_fail(err, "%s: member '%s': %s", path, member, zip_strerror(z));
    if (st->encryption_method != ZIP_EM_NONE) return vf_fail(err, "%s: member '%s' is encrypted", path, member);
    if (st->comp_method != ZIP_CM_STORE && st->comp_method != ZIP_CM_DEFLATE)
        return vf_fail(err, "%s: member '%s' uses compression method %u (only stored and deflated are supported)",
                       path, member, (unsigned)st->comp_method);
    if (st->comp_method == ZIP_CM_STORE && st->size != st->comp_size)
        return vf_fail(err, "%s: stored member '%s' has compressed size %llu != size %llu", path, member,
                       (unsigned long long)st->comp_size, (unsigned long long)st->size);
    if (st->size > SIZE_MAX - 1 || st->size / DEFLATE_MAX_RATIO > st->comp_size + 1)
        return vf_fail(err, "%s: member '%s' declares %llu bytes, more than its %llu compressed bytes can hold", path,
                       member, (unsigned long long)st->size, (unsigned long long)st->comp_size);
    return 0;
}

/* A libzip read error on a member after GOT of its SIZE bytes, in this
 * project's words.  libzip checks the CRC when the data ends, so a deflate
 * stream cut short shows as a CRC error before the declared size. */
static int member_read_error(zip_file_t *f, const char *path, const char *member, zip_uint64_t got, zip_uint64_t size,
                             vf_error *err) {
    zip_error_t *ze = zip_file_get_error(f);
    int code = zip_error_code_zip(ze);
    if ((code == ZIP_ER_CRC || code == ZIP_ER_EOF) && got < size)
        return vf_fail(err, "%s: member '%s' is truncated: its data ends after %llu of the %llu bytes the directory says",
                       path, member, (unsigned long long)got, (unsigned long long)size);
    switch (code) {
    case ZIP_ER_CRC: return vf_fail(err, "%s: member '%s' fails its CRC-32 check (file corrupt)", path, member);
    case ZIP_ER_COMPRESSED_DATA: return vf_fail(err, "%s: member '%s' has corrupt deflate data", path, member);
    case ZIP_ER_EOF: return vf_fail(err, "%s: member '%s' is truncated (its data ends early)", path, member);
    default: return vf_fail(err, "%s: member '%s': %s", path, member, zip_error_strerror(ze));
    }
}

/* Reads exactly st->size bytes, then reads on to the end of the member:
 * libzip checks the CRC-32 only when the end of the data is reached, and data
 * past the declared size must be refused, not ignored. */
static int member_read_all(zip_file_t *f, const zip_stat_t *st, unsigned char *buf, const char *path,
                           const char *member, vf_error *err) {
    zip_uint64_t got = 0;
    while (got < st->size) {
        zip_int64_t n = zip_fread(f, buf + got, st->size - got);
        if (n < 0) return member_read_error(f, path, member, got, st->size, err);
        if (n == 0)
            return vf_fail(err, "%s: member '%s' inflates to %llu bytes, the directory says %llu", path, member,
                           (unsigned long long)got, (unsigned long long)st->size);
        got += (zip_uint64_t)n;
    }
    unsigned char extra;
    zip_int64_t n = zip_fread(f, &extra, 1);
    if (n < 0) return member_read_error(f, path, member, got, st->size, err);
    if (n > 0)
        return vf_fail(err, "%s: member '%s' inflates to more than the %llu bytes the directory says", path, member,
                       (unsigned long long)st->size);
    return 0;
}

/* MEMBER's bytes, CRC-checked, into a malloc'd buffer (*buf, caller frees). */
static int read_member(zip_t *z, const char *path, const char *member, unsigned char **buf, size_t *len,
                       vf_error *err) {
    zip_stat_t st;
    *buf = NULL;
    if (member_stat(z, path, member, &st, err)) return -1;
    zip_file_t *f = zip_fopen_index(z, st.index, 0);
    if (!f) return vf_fail(err, "%s: member '%s': %s", path, member, zip_strerror(z));
    unsigned char *b = malloc(st.size ? st.size : 1);
    int rc = b ? member_read_all(f, &st, b, path, member, err)
               : vf_fail(err, "%s: member '%s': out of memory for %llu bytes", path, member, (unsigned long long)st.size);
    zip_fclose(f);
    if (rc) { free(b); return -1; }
    *buf = b;
    *len = st.size;
    return 0;
}

/* Reads and parses one .npy member; *buf owns the bytes the view points into. */
static int load_member(vf_dataset *ds, zip_t *z, const char *member, unsigned char **buf, vf_npy_view *v, char *label,
                       size_t label_size, vf_error *err) {
    size_t len = 0;
    snprintf(label, label_size, "%s: member '%s'", ds->source, member);
    if (read_member(z, ds->source, member, buf, &len, err)) return -1;
    if (vf_npy_parse(*buf, len, label, v, err)) goto fail;
    if (v->fortran_order) {
        vf_fail(err, "%s is in Fortran order; expected C order as numpy.savez writes by default", label);
        goto fail;
    }
    return 0;
fail:
    free(*buf);
    *buf = NULL;
    return -1;
}

static int load_split(vf_dataset *ds, zip_t *z, vf_split s, vf_error *err) {
    vf_dataset_priv *p = ds->priv;
    vf_split_data *d = &ds->split[s];
    char member[64], label[4400];
    unsigned char *buf;
    vf_npy_view v;

    snprintf(member, sizeof member, "%s_images.npy", vf_split_name(s));
    if (load_member(ds, z, member, &buf, &v, label, sizeof label, err)) return -1;
    p->images[s] = buf;
    if (vf_npy_itemsize(v.descr) != 1 || v.descr[1] != 'u')
        return vf_fail(err, "%s has dtype %s; images must be uint8", label, v.descr);
    if (v.ndim != 4 || v.shape[3] != 3)
        return vf_fail(err, "%s has %d dimensions (last %lld); images must be (N, H, W, 3) RGB", label, v.ndim,
                       v.ndim ? (long long)v.shape[v.ndim - 1] : 0LL);
    if (v.shape[0] > (1 << 30) || v.shape[1] < 1 || v.shape[2] < 1 || v.shape[1] > 65536 || v.shape[2] > 65536)
        return vf_fail(err, "%s has an implausible shape (%lld, %lld, %lld, 3)", label, (long long)v.shape[0],
                       (long long)v.shape[1], (long long)v.shape[2]);
    d->n = (int)v.shape[0];
    d->h = (int)v.shape[1];
    d->w = (int)v.shape[2];
    d->pixels = v.data;

    snprintf(member, sizeof member, "%s_labels.npy", vf_split_name(s));
    if (load_member(ds, z, member, &buf, &v, label, sizeof label, err)) return -1;
    int rc = -1;
    int itemsize = vf_npy_itemsize(v.descr);
    char kind = v.descr[1];
    if (kind != 'i' && kind != 'u') {
        vf_fail(err, "%s has dtype %s; labels must be integers (uint8 or int64)", label, v.descr);
        goto done;
    }
    if (!(v.ndim == 1 || (v.ndim == 2 && v.shape[1] == 1))) {
        vf_fail(err, "%s has shape (%lld%s%lld); labels must be (N, 1) or (N)", label, (long long)v.shape[0],
                v.ndim > 1 ? ", " : "", v.ndim > 1 ? (long long)v.shape[1] : 0LL);
        goto done;
    }
    if (v.shape[0] != d->n) {
        vf_fail(err, "%s has %lld labels but %s_images.npy has %d images", label, (long long)v.shape[0],
                vf_split_name(s), d->n);
        goto done;
    }
    d->labels = malloc((size_t)(d->n ? d->n : 1) * sizeof *d->labels);
    if (!d->labels) { vf_fail(err, "%s: out of memory", label); goto done; }
    for (int i = 0; i < d->n; i++) {
        int64_t y = read_int(&v, itemsize, v.descr[0] == '>', kind == 'i', i);
        if (y < 0 || y >= ds->n_classes) {
            vf_fail(err, "%s row %d: label %lld is outside 0..%d", label, i, (long long)y, ds->n_classes - 1);
            goto done;
        }
        d->labels[i] = (int)y;
    }
    rc = 0;
done:
    free(buf);
    return rc;
}

/* libzip's open error, in this project's words. */
static int open_error(const char *path, int code, vf_error *err) {
    if (code == ZIP_ER_NOZIP)
        return vf_fail(err, "%s: no zip end-of-central-directory record: the file is truncated or not a zip archive "
                       "(an .npz is written by numpy.savez)", path);
    zip_error_t ze;
    zip_error_init_with_code(&ze, code);
    if (code == ZIP_ER_INCONS)   /* e.g. the central directory or a local header lies outside the file */
        vf_fail(err, "%s: the zip archive's directory is inconsistent with its contents: the file is corrupt or "
                "truncated", path);
    else
        vf_fail(err, "%s: %s", path, zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return -1;
}

int vf_dataset_open_npz(vf_dataset *ds, const char *path, int n_classes, vf_error *err) {
    ds->is_npz = 1;
    int code = 0;
    /* CHECKCONS: the local headers must agree with the central directory. */
    zip_t *z = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &code);
    if (!z) return open_error(path, code, err);
    int rc = 0;
    for (int s = 0; s < VF_SPLIT_COUNT && rc == 0; s++) rc = load_split(ds, z, (vf_split)s, err);
    zip_discard(z);   /* read-only: nothing to write back */
    return rc;
}
