/* fuzz_npy: the .npy parser from memory (vf_npy_parse, as npz members are
 * read) with the float32 conversion of what it accepts, and the file reader
 * vf_npy_read_f32 (the embedding caches and `vflclip` outputs). */
#include "formats/npy.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vf_npy_view v;
    vf_error err;
    if (vf_npy_parse(data, size, "fuzz.npy", &v, &err) == 0) {
        int64_t n = vf_npy_numel(&v);
        if (v.nbytes != (size_t)n * (size_t)vf_npy_itemsize(v.descr)) abort();   /* the documented invariant */
        float *dst = malloc(sizeof(float) * (size_t)(n ? n : 1));
        if (dst) vf_npy_view_to_f32(&v, dst, "fuzz.npy", &err);
        free(dst);
    }
    const char *path = fuzz_write("array.npy", data, size);
    float *arr = NULL;
    int ndim;
    int64_t shape[VF_NPY_MAX_DIMS];
    if (vf_npy_read_f32(path, &arr, &ndim, shape, &err) == 0) free(arr);
    return 0;
}
