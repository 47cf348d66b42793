/* dataset_internal: what the npz and CSV loaders share inside common/data. */
#ifndef VF_DATASET_INTERNAL_H
#define VF_DATASET_INTERNAL_H

#include "data/dataset.h"

typedef struct vf_dataset_priv {
    unsigned char *images[VF_SPLIT_COUNT];     /* npz-backed: each split's images member, read whole */
    char *strings;                             /* CSV-backed: one block for all ids and paths */
} vf_dataset_priv;

int vf_dataset_open_npz(vf_dataset *ds, const char *path, int n_classes, vf_error *err);
int vf_dataset_open_csv(vf_dataset *ds, const char *csv_path, const char *image_dir, const char *const *codes,
                        int n_classes, unsigned long long seed, vf_error *err);

#endif
