/* dataset: labelled image sets split into train / val / test, from
 *   - a MedMNIST .npz (dermamnist.npz, _64/_128/_224): members
 *     {train,val,test}_images uint8 (N,H,W,3) and {train,val,test}_labels
 *     (N,1) or (N) of any integer dtype; or
 *   - an image folder with a labels CSV in HAM10000's layout: a header row
 *     naming at least `image_id` and `dx` (and optionally `split` with
 *     train/val/test); dx codes map to label indices through the class codes
 *     (DermaMNIST order by default).  Without a split column the rows are
 *     split 7:1:2 per class (MedMNIST's ratio) by a seeded shuffle; with a
 *     `lesion_id` column, all images of one lesion land in the same split.
 * Images of an npz are read whole into one buffer per split (the archive is
 * closed once read); folder images are read when asked for.  Errors name the
 * file and the member or CSV line. */
#ifndef VF_DATASET_H
#define VF_DATASET_H

#include <stdint.h>
#include "util/vf_error.h"

typedef enum { VF_SPLIT_TRAIN = 0, VF_SPLIT_VAL = 1, VF_SPLIT_TEST = 2, VF_SPLIT_COUNT = 3 } vf_split;

typedef struct vf_split_data {
    int n;
    int *labels;                   /* (n) in 0..n_classes-1 */
    /* array-backed (npz): all images h x w, RGB interleaved */
    int h, w;
    const unsigned char *pixels;   /* (n, h, w, 3), NULL when file-backed */
    /* file-backed (folder): one path and id per image */
    char **paths, **ids;
} vf_split_data;

#define VF_DATASET_MAX_CLASSES 64

typedef struct vf_dataset_options {
    /* dx code of each label index, e.g. {"akiec","bcc",...}; NULL = DermaMNIST's */
    const char *const *class_codes;
    int n_classes;                 /* 0 = len(class_codes) or 7 */
    const char *image_dir;         /* folder images; NULL = the CSV's directory */
    unsigned long long split_seed; /* for the seeded split of a CSV without a split column */
} vf_dataset_options;

typedef struct vf_dataset {
    char source[4096];
    int is_npz;
    int n_classes;
    vf_split_data split[VF_SPLIT_COUNT];
    void *priv;                    /* npz image buffers / CSV strings */
} vf_dataset;

/* DermaMNIST's class codes in label order: akiec bcc bkl df mel nv vasc. */
extern const char *const vf_dermamnist_codes[7];
/* ... and their full names (DESIGN.md). */
extern const char *const vf_dermamnist_names[7];

const char *vf_split_name(vf_split s);
int vf_split_parse(const char *s, vf_split *out);   /* train | val | valid | validation | test */

/* Opens PATH: a .npz file, a .csv file (images beside it or in opt->image_dir)
 * or a directory holding labels.csv.  opt may be NULL. */
int vf_dataset_open(vf_dataset *ds, const char *path, const vf_dataset_options *opt, vf_error *err);
void vf_dataset_close(vf_dataset *ds);

/* SHA-256 of one image's content: for an array-backed image, its height,
 * width and pixels; for a file-backed one, the file's bytes. */
int vf_dataset_image_hash(const vf_dataset *ds, vf_split s, int i, unsigned char hash[32], vf_error *err);

/* Counts of each label in a split into counts[n_classes]. */
void vf_dataset_label_counts(const vf_dataset *ds, vf_split s, int *counts);

#endif
