/* npz_dataset: MedMNIST .npz members -> split arrays.  Image pixels are
 * used in place (stored members) or from one inflated buffer per member. */
#include "data/dataset_internal.h"
#include "formats/npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads integer element i of a parsed view (any integer dtype, either byte order). */
static int64_t read_int(const vf_npy_view *v, int itemsize, int big_endian, int is_signed, int64_t i) {
    const unsigned char *p = v->data + i * itemsize;
    uint64_t u = 0;
    for (int b = 0; b < itemsize; b++) u |= (uint64_t)p[big_endian ? itemsize - 1 - b : b] << (8 * b);
    if (is_signed && itemsize < 8 && (u >> (8 * itemsize - 1)) & 1) u |= ~0ull << (8 * itemsize);
    return (int64_t)u;
}

static int load_member(vf_dataset *ds, const char *member, const unsigned char **buf, size_t *len, int *owned,
                       vf_npy_view *v, char *label, size_t label_size, vf_error *err) {
    vf_dataset_priv *p = ds->priv;
    snprintf(label, label_size, "%s: member '%s'", ds->source, member);
    const vf_zip_member *m = vf_zip_find(&p->zip, member);
    if (!m) {
        char names[512] = "";
        for (int i = 0; i < p->zip.n_members && strlen(names) < sizeof names - 64; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", p->zip.members[i].name);
        return vf_fail(err, "%s: missing member '%s' (the archive holds: %s); a MedMNIST npz has "
                       "{train,val,test}_{images,labels}", ds->source, member, names[0] ? names : "nothing");
    }
    if (vf_zip_read(&p->zip, m, buf, len, owned, err)) return -1;
    if (vf_npy_parse(*buf, *len, label, v, err)) {
        if (*owned) free((void *)*buf);
        return -1;
    }
    if (v->fortran_order) {
        if (*owned) free((void *)*buf);
        return vf_fail(err, "%s is in Fortran order; expected C order as numpy.savez writes by default", label);
    }
    return 0;
}

static int load_split(vf_dataset *ds, vf_split s, vf_error *err) {
    vf_dataset_priv *p = ds->priv;
    vf_split_data *d = &ds->split[s];
    char member[64], label[4400];
    const unsigned char *buf;
    size_t len;
    int owned;
    vf_npy_view v;

    snprintf(member, sizeof member, "%s_images.npy", vf_split_name(s));
    if (load_member(ds, member, &buf, &len, &owned, &v, label, sizeof label, err)) return -1;
    if (owned) p->inflated[s] = (unsigned char *)buf;
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
    if (load_member(ds, member, &buf, &len, &owned, &v, label, sizeof label, err)) return -1;
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
    if (owned) free((void *)buf);
    return rc;
}

int vf_dataset_open_npz(vf_dataset *ds, const char *path, int n_classes, vf_error *err) {
    vf_dataset_priv *p = ds->priv;
    ds->is_npz = 1;
    if (vf_zip_open(&p->zip, path, err)) return -1;
    p->zip_open = 1;
    for (int s = 0; s < VF_SPLIT_COUNT; s++)
        if (load_split(ds, (vf_split)s, err)) return -1;
    return 0;
}
