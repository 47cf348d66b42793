/* safetensors: reading (mmap, validated) and writing (atomic) of the
 * Hugging Face safetensors format:
 *   8-byte little-endian header length N | N bytes of JSON | tensor data
 * JSON maps tensor names to {"dtype","shape","data_offsets":[begin,end]}
 * (offsets relative to the data section) plus an optional "__metadata__"
 * map of strings.
 *
 * The reader checks everything a hostile or truncated file can get wrong
 * (header past the end, malformed JSON or text after it, a key repeated in
 * any object of the header (tensor names, "__metadata__", fields of an
 * entry, metadata keys), a NUL that would cut a name short, unknown dtype,
 * offsets that are not whole numbers or out of range, overlapping or gapped
 * data, size not matching shape, a path that is not a regular file) and
 * reports it naming the file.  F32 tensors are used in place from the mapping; F16/BF16 are
 * converted into caller-provided buffers. */
#ifndef VF_SAFETENSORS_H
#define VF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "util/vf_error.h"

typedef enum vf_dtype {
    VF_DT_F32, VF_DT_F16, VF_DT_BF16, VF_DT_F64,
    VF_DT_I64, VF_DT_I32, VF_DT_I16, VF_DT_I8, VF_DT_U8, VF_DT_BOOL,
} vf_dtype;

#define VF_ST_MAX_DIMS 8

typedef struct vf_st_tensor {
    char *name;
    vf_dtype dtype;
    int ndim;
    int64_t shape[VF_ST_MAX_DIMS];
    int64_t numel;
    size_t begin, end;           /* byte offsets within the data section */
    const unsigned char *data;   /* points into the mapping */
} vf_st_tensor;

typedef struct vf_safetensors {
    char path[4096];
    unsigned char *map;
    size_t map_len;
    int n_tensors;
    vf_st_tensor *tensors;       /* sorted by name */
    int n_meta;
    char **meta_keys, **meta_vals;
} vf_safetensors;

const char *vf_dtype_name(vf_dtype dt);
size_t vf_dtype_size(vf_dtype dt);
int vf_dtype_parse(const char *s, vf_dtype *dt);

/* Validates the header and the layout, and the data against
 * "vflclip_data_sha256" where the file carries one. */
int vf_st_open(vf_safetensors *st, const char *path, vf_error *err);
void vf_st_close(vf_safetensors *st);
/* NULL when absent. */
const vf_st_tensor *vf_st_find(const vf_safetensors *st, const char *name);
/* Like vf_st_find but fails with "<file>: missing tensor <name>". */
const vf_st_tensor *vf_st_require(const vf_safetensors *st, const char *name, vf_error *err);
/* Checks that the tensor has exactly this shape; error names file, tensor,
 * expected and found shapes. */
int vf_st_check_shape(const vf_safetensors *st, const vf_st_tensor *t, int ndim,
                      const int64_t *shape, vf_error *err);
/* Finds `name`, checks its shape and converts it to float32 into dst
 * (numel floats).  Works for F32, F16, BF16 and F64. */
int vf_st_read_f32(const vf_safetensors *st, const char *name, int ndim, const int64_t *shape,
                   float *dst, vf_error *err);
/* Metadata value or NULL. */
const char *vf_st_meta(const vf_safetensors *st, const char *key);

/* float <-> half conversions, exact round-to-nearest-even. */
float vf_f16_to_f32(uint16_t h);
float vf_bf16_to_f32(uint16_t h);
uint16_t vf_f32_to_f16(float f);
uint16_t vf_f32_to_bf16(float f);

/* ---- writer ------------------------------------------------------------ */
typedef struct vf_st_writer_entry {
    char *name;
    vf_dtype dtype;            /* on-disk dtype: F32, F16 or BF16 from float data; others raw */
    int ndim;
    int64_t shape[VF_ST_MAX_DIMS];
    const void *src;           /* float32 when dtype is F32/F16/BF16 and src_is_f32 */
    int src_is_f32;
    size_t nbytes;             /* on disk */
} vf_st_writer_entry;

typedef struct vf_st_writer {
    int n, cap;
    vf_st_writer_entry *e;
    int n_meta;
    char **meta_keys, **meta_vals;
    int checksum;        /* vf_st_writer_checksum: seal the data section */
} vf_st_writer;

void vf_st_writer_init(vf_st_writer *w);
/* Adds a float32 array stored as `dtype` (F32, F16 or BF16).  The data must
 * stay valid until vf_st_writer_save. */
int vf_st_writer_add_f32(vf_st_writer *w, const char *name, vf_dtype dtype, int ndim,
                         const int64_t *shape, const float *data, vf_error *err);
/* Adds raw bytes of any dtype (e.g. I64 position ids). */
int vf_st_writer_add_raw(vf_st_writer *w, const char *name, vf_dtype dtype, int ndim,
                         const int64_t *shape, const void *data, vf_error *err);
int vf_st_writer_meta(vf_st_writer *w, const char *key, const char *value, vf_error *err);
/* State files (checkpoints, context files, caches) ask for this: the SHA-256
 * of the data section goes into __metadata__ as "vflclip_data_sha256", and
 * vf_st_open refuses a file whose data no longer matches it (a torn or
 * bit-flipped state file is named, never trained on). */
void vf_st_writer_checksum(vf_st_writer *w);
/* Writes the file atomically (temp + fsync + rename). */
int vf_st_writer_save(vf_st_writer *w, const char *path, vf_error *err);
void vf_st_writer_free(vf_st_writer *w);

#endif
