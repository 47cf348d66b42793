/* cmd_dataset: `vflclip dataset` — opens a data set (npz or image folder +
 * labels CSV) exactly as `train` does and reports what it found: per split
 * the image count, size, labels and ids as JSON on stdout; --dump DIR also
 * writes each npz split's images and labels as float32 .npy for inspection. */
#include "util/name_list.h"
#include "cli/coop_options.h"
#include "cli/commands.h"
#include "data/dataset.h"
#include "formats/npy.h"
#include "util/fileio.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *o) {
    fprintf(o, "usage: vflclip dataset --data PATH [--class-codes CODE,CODE,...] [--image-dir DIR] [--split-seed N] [--dump DIR]\n"
               "  PATH: a MedMNIST .npz, a labels .csv (HAM10000 layout: image_id,dx[,split]) or a folder with labels.csv\n");
}

static int dump_split(const vf_dataset *ds, vf_split s, const char *dir, vf_error *err) {
    const vf_split_data *d = &ds->split[s];
    char path[4400];
    size_t n = (size_t)d->n * d->h * d->w * 3;
    float *f = malloc((n ? n : 1) * sizeof *f);
    if (!f) return vf_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) f[i] = d->pixels[i];
    int64_t shape[4] = {d->n, d->h, d->w, 3};
    snprintf(path, sizeof path, "%s/%s_images.npy", dir, vf_split_name(s));
    int rc = vf_npy_write_f32(path, f, 4, shape, err);
    for (int i = 0; i < d->n; i++) f[i] = (float)d->labels[i];
    snprintf(path, sizeof path, "%s/%s_labels.npy", dir, vf_split_name(s));
    if (rc == 0) rc = vf_npy_write_f32(path, f, 1, shape, err);
    free(f);
    return rc;
}

int vf_cmd_dataset(int argc, char **argv) {
    const char *data = NULL, *classes = NULL, *image_dir = NULL, *dump = NULL;
    unsigned long long split_seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (i + 1 >= argc) { fprintf(stderr, "vflclip dataset: %s needs a value (or is unknown)\n", a); usage(stderr); return 2; }
        const char *v = argv[++i];
        if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--class-codes")) classes = v;
        else if (!strcmp(a, "--image-dir")) image_dir = v;
        else if (!strcmp(a, "--dump")) dump = v;
        else if (!strcmp(a, "--split-seed")) { if (vf_cli_parse_u64(a, v, &split_seed)) return 2; }
        else { fprintf(stderr, "vflclip dataset: unknown option %s\n", a); usage(stderr); return 2; }
    }
    if (!data) { usage(stderr); return 2; }
    vf_error err = {{0}};
    vf_name_list codes;
    if (vf_name_list_parse(&codes, classes, "class list", 2, &err)) { fprintf(stderr, "vflclip dataset: %s\n", err.msg); return 2; }
    vf_dataset_options opt = {.class_codes = (const char *const *)codes.names, .n_classes = codes.n,
                              .image_dir = image_dir, .split_seed = split_seed};
    vf_dataset ds;
    if (vf_dataset_open(&ds, data, &opt, &err)) {
        fprintf(stderr, "vflclip dataset: %s\n", err.msg);
        vf_name_list_free(&codes);
        return 1;
    }
    int rc = 0;
    if (dump && vf_mkdirs(dump, 0755, &err)) rc = 1;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "source", ds.source);
    cJSON_AddStringToObject(root, "format", ds.is_npz ? "npz" : "csv");
    cJSON_AddNumberToObject(root, "n_classes", ds.n_classes);
    for (int s = 0; s < VF_SPLIT_COUNT && rc == 0; s++) {
        const vf_split_data *d = &ds.split[s];
        cJSON *o = cJSON_AddObjectToObject(root, vf_split_name((vf_split)s));
        cJSON_AddNumberToObject(o, "n", d->n);
        if (d->pixels) { cJSON_AddNumberToObject(o, "height", d->h); cJSON_AddNumberToObject(o, "width", d->w); }
        cJSON *labels = cJSON_AddArrayToObject(o, "labels");
        for (int i = 0; i < d->n; i++) cJSON_AddItemToArray(labels, cJSON_CreateNumber(d->labels[i]));
        if (d->ids) {
            cJSON *ids = cJSON_AddArrayToObject(o, "ids");
            for (int i = 0; i < d->n; i++) cJSON_AddItemToArray(ids, cJSON_CreateString(d->ids[i]));
        }
        if (dump && d->pixels && dump_split(&ds, (vf_split)s, dump, &err)) rc = 1;
    }
    if (rc == 0) {
        char *js = cJSON_PrintUnformatted(root);
        puts(js);
        free(js);
    } else {
        fprintf(stderr, "vflclip dataset: %s\n", err.msg);
    }
    cJSON_Delete(root);
    vf_dataset_close(&ds);
    vf_name_list_free(&codes);
    return rc;
}
