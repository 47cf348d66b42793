/* dataset: opening a data set by path, the class tables, content hashes. */
#include "data/dataset.h"
#include "data/dataset_internal.h"
#include "util/fileio.h"
#include "util/sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

const char *const vf_dermamnist_codes[7] = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"};
const char *const vf_dermamnist_names[7] = {
    "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
    "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
};

const char *vf_split_name(vf_split s) {
    static const char *const names[] = {"train", "val", "test"};
    return s >= 0 && s < VF_SPLIT_COUNT ? names[s] : "?";
}

int vf_split_parse(const char *s, vf_split *out) {
    if (!strcasecmp(s, "train")) *out = VF_SPLIT_TRAIN;
    else if (!strcasecmp(s, "val") || !strcasecmp(s, "valid") || !strcasecmp(s, "validation")) *out = VF_SPLIT_VAL;
    else if (!strcasecmp(s, "test")) *out = VF_SPLIT_TEST;
    else return -1;
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

int vf_dataset_open(vf_dataset *ds, const char *path, const vf_dataset_options *opt, vf_error *err) {
    memset(ds, 0, sizeof *ds);
    vf_dataset_options defaults = {0};
    if (!opt) opt = &defaults;
    const char *const *codes = opt->class_codes ? opt->class_codes : vf_dermamnist_codes;
    int n_classes = opt->n_classes ? opt->n_classes : 7;
    if (n_classes < 2 || n_classes > VF_DATASET_MAX_CLASSES)
        return vf_fail(err, "%s: %d classes (need 2..%d)", path, n_classes, VF_DATASET_MAX_CLASSES);
    snprintf(ds->source, sizeof ds->source, "%s", path);
    ds->n_classes = n_classes;
    ds->priv = calloc(1, sizeof(vf_dataset_priv));
    if (!ds->priv) return vf_fail(err, "%s: out of memory", path);

    struct stat st;
    if (stat(path, &st) != 0) { vf_fail_errno(err, path); goto fail; }
    int rc;
    if (S_ISDIR(st.st_mode)) {
        char csv[4200];
        snprintf(csv, sizeof csv, "%s/labels.csv", path);
        if (stat(csv, &st) != 0) { vf_fail(err, "%s: a data directory needs a labels.csv (image_id,dx[,split])", path); goto fail; }
        rc = vf_dataset_open_csv(ds, csv, opt->image_dir ? opt->image_dir : path, codes, n_classes, opt->split_seed, err);
    } else if (ends_with(path, ".npz")) {
        rc = vf_dataset_open_npz(ds, path, n_classes, err);
    } else if (ends_with(path, ".csv")) {
        rc = vf_dataset_open_csv(ds, path, opt->image_dir, codes, n_classes, opt->split_seed, err);
    } else {
        vf_fail(err, "%s: unknown data format (expected a MedMNIST .npz, a labels .csv or a directory with labels.csv)", path);
        goto fail;
    }
    if (rc == 0) return 0;
fail:
    vf_dataset_close(ds);
    return -1;
}

void vf_dataset_close(vf_dataset *ds) {
    vf_dataset_priv *p = ds->priv;
    for (int s = 0; s < VF_SPLIT_COUNT; s++) {
        free(ds->split[s].labels);
        free(ds->split[s].paths);
        free(ds->split[s].ids);
    }
    if (p) {
        for (int s = 0; s < VF_SPLIT_COUNT; s++) free(p->images[s]);
        free(p->strings);
        free(p);
    }
    memset(ds, 0, sizeof *ds);
}

int vf_dataset_image_hash(const vf_dataset *ds, vf_split s, int i, unsigned char hash[32], vf_error *err) {
    const vf_split_data *d = &ds->split[s];
    if (i < 0 || i >= d->n) return vf_fail(err, "%s: %s image %d out of range (%d images)", ds->source, vf_split_name(s), i, d->n);
    vf_sha256_ctx c;
    vf_sha256_begin(&c);
    if (d->pixels) {
        unsigned char dims[8] = {d->h, d->h >> 8, d->h >> 16, d->h >> 24, d->w, d->w >> 8, d->w >> 16, d->w >> 24};
        size_t bytes = (size_t)d->h * d->w * 3;
        vf_sha256_add(&c, dims, sizeof dims);
        vf_sha256_add(&c, d->pixels + (size_t)i * bytes, bytes);
    } else {
        char *data;
        size_t len;
        if (vf_read_file(d->paths[i], &data, &len, err)) { vf_sha256_end(&c, hash); return -1; }
        vf_sha256_add(&c, (const unsigned char *)data, len);
        free(data);
    }
    vf_sha256_end(&c, hash);
    return 0;
}

void vf_dataset_label_counts(const vf_dataset *ds, vf_split s, int *counts) {
    memset(counts, 0, (size_t)ds->n_classes * sizeof *counts);
    for (int i = 0; i < ds->split[s].n; i++) counts[ds->split[s].labels[i]]++;
}
