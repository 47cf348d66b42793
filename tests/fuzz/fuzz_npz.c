/* fuzz_npz: a MedMNIST .npz opened as a data set (libzip, every member's
 * .npy header, the images and labels of each split), and each image hashed
 * as the parties do before sending embeddings. */
#include "data/dataset.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("dermamnist.npz", data, size);
    vf_dataset ds;
    vf_error err;
    if (vf_dataset_open(&ds, path, NULL, &err)) return 0;
    for (int s = 0; s < VF_SPLIT_COUNT; s++) {
        int counts[VF_DATASET_MAX_CLASSES];
        vf_dataset_label_counts(&ds, (vf_split)s, counts);
        unsigned char h[32];
        for (int i = 0; i < ds.split[s].n && i < 4; i++) vf_dataset_image_hash(&ds, (vf_split)s, i, h, &err);
    }
    vf_dataset_close(&ds);
    return 0;
}
