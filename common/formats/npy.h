/* npy: the NumPy .npy array format (versions 1.0, 2.0 and 3.0) as numpy.save
 * writes it:
 *   "\x93NUMPY" | major | minor | header length (u16 LE for v1, u32 LE for
 *   v2/v3) | Python dict literal {'descr': '<f4', 'fortran_order': False,
 *   'shape': (3, 4), } padded with spaces and '\n' | raw data
 *
 * The parser checks everything a truncated or hostile file can get wrong
 * (bad magic, header past the end, malformed dict, structured or unknown
 * dtype, negative or overflowing shape, data size not matching the shape)
 * and names the file in its errors.  Readers accept any simple numeric dtype
 * in either byte order and C or Fortran order; the writer writes v1.0
 * little-endian float32 in C order, atomically. */
#ifndef VF_NPY_H
#define VF_NPY_H

#include <stddef.h>
#include <stdint.h>
#include "util/vf_error.h"

#define VF_NPY_MAX_DIMS 8

/* Writes a (ndim, shape) float32 array as a v1.0 '<f4' C-order .npy
 * (temp + fsync + rename). ndim may be 0 (a scalar: one float). */
int vf_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape, vf_error *err);

/* Reads any simple numeric .npy (f2/f4/f8, i1..i8, u1..u8, b1; either byte
 * order; C or Fortran order) into a malloc'd float32 array in C order.
 * shape must hold VF_NPY_MAX_DIMS entries. */
int vf_npy_read_f32(const char *path, float **data, int *ndim, int64_t *shape, vf_error *err);

typedef struct vf_npy_view {
    char descr[16];              /* as in the header, e.g. "<f4", "|u1" */
    int ndim;
    int64_t shape[VF_NPY_MAX_DIMS];
    int fortran_order;
    const unsigned char *data;   /* points into the caller's buffer */
    size_t nbytes;               /* = product(shape) * itemsize, exactly what follows the header */
} vf_npy_view;

/* Parses an in-memory .npy (e.g. an npz member); `name` is used in errors.
 * Validates descr/shape/size. */
int vf_npy_parse(const void *buf, size_t len, const char *name, vf_npy_view *v, vf_error *err);

/* Element count of a parsed view (product of its shape; 1 for a scalar). */
int64_t vf_npy_numel(const vf_npy_view *v);
/* Bytes per element of a descr the parser accepts (e.g. "<f4" -> 4); 0 if unknown. */
int vf_npy_itemsize(const char *descr);
/* Converts a parsed view to float32 in C order into dst (vf_npy_numel floats). */
int vf_npy_view_to_f32(const vf_npy_view *v, float *dst, const char *name, vf_error *err);

#endif
