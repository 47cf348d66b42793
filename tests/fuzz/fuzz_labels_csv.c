/* fuzz_labels_csv: a labels CSV in HAM10000's layout opened as a data set
 * (libcsv records, the header's columns, dx codes, splits, lesion grouping,
 * the seeded stratified split) with a few images beside it, so rows that name
 * them get all the way through. */
#include "data/dataset.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int once;
    if (!once++) {
        static const char *const names[] = {"ISIC_0000000.jpg", "ISIC_0000001.jpg", "ISIC_0000002.png", "a.jpg", "b.png", "c.jpeg"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) fuzz_write(names[i], (const uint8_t *)"x", 1);
    }
    const char *path = fuzz_write("labels.csv", data, size);
    vf_dataset ds;
    vf_error err;
    vf_dataset_options opt = {0};
    opt.split_seed = size;
    if (vf_dataset_open(&ds, path, &opt, &err)) return 0;
    for (int s = 0; s < VF_SPLIT_COUNT; s++) {
        for (int i = 0; i < ds.split[s].n; i++)
            if (ds.split[s].labels[i] < 0 || ds.split[s].labels[i] >= ds.n_classes) abort();
    }
    vf_dataset_close(&ds);
    return 0;
}
