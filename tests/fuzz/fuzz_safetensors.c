/* fuzz_safetensors: vf_st_open on arbitrary bytes (the header JSON, dtypes,
 * shapes, offsets), then every tensor found converted to float32 as the
 * checkpoint loaders do, and a metadata look-up. */
#include "formats/safetensors.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("model.safetensors", data, size);
    vf_safetensors st;
    vf_error err;
    if (vf_st_open(&st, path, &err)) return 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const vf_st_tensor *t = &st.tensors[i];
        if (vf_st_find(&st, t->name) != t) abort();   /* sorted by name: the look-up finds it */
        if (t->dtype != VF_DT_F32 && t->dtype != VF_DT_F16 && t->dtype != VF_DT_BF16 && t->dtype != VF_DT_F64) continue;
        float *dst = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
        if (!dst) continue;
        vf_st_read_f32(&st, t->name, t->ndim, t->shape, dst, &err);
        free(dst);
    }
    vf_st_meta(&st, "format");
    vf_st_close(&st);
    return 0;
}
