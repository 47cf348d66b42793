/* random_weights: the safetensors file behind both make-model layouts (Hugging
 * Face and OpenCLIP).  A layout's tensor table runs twice: a sizing pass counts
 * every float, then a writing pass carves each tensor from one buffer, hands it
 * to the caller to fill from the tensor's own seeded stream and adds it to the
 * file.  How a tensor is filled (scales, log-normal BatchNorm variances) stays
 * with the layout. */
#ifndef VF_CLIP_RANDOM_WEIGHTS_H
#define VF_CLIP_RANDOM_WEIGHTS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "formats/safetensors.h"
#include "util/rng.h"
#include "util/vf_error.h"

typedef struct vf_random_weights {
    vf_st_writer w;
    vf_dtype dtype;
    uint64_t seed;
    float *buf;     /* one allocation for every float tensor */
    size_t used, cap;
    int sizing;
} vf_random_weights;

/* Fills values[0..n) from the tensor's own stream, seeded by (seed, name) so
 * the file does not depend on the table's order; `how` is the layout's
 * (scales, kind of distribution). */
typedef void (*vf_random_fill)(float *values, size_t n, vf_rng *stream, const void *how);

/* Counts the tensor named by fmt/ap (sizing pass), or adds it to the file and
 * fills it (writing pass). */
int vf_random_weights_vadd(vf_random_weights *g, vf_random_fill fill, const void *how, vf_error *err, int ndim,
                           const int64_t *shape, const char *fmt, va_list ap);

/* A tensor the layout sets itself (a scalar such as logit_scale): *values is
 * NULL on the sizing pass. */
int vf_random_weights_add_fixed(vf_random_weights *g, const char *name, int ndim, const int64_t *shape, float **values,
                                vf_error *err);

typedef int (*vf_random_weights_table)(vf_random_weights *g, const void *cfg, vf_error *err);

/* Runs table over cfg twice and writes path (F32, F16 or BF16) atomically with
 * the metadata format=pt and vflclip_random_weights=true. */
int vf_random_weights_write(const char *path, vf_dtype dtype, uint64_t seed, vf_random_weights_table table,
                            const void *cfg, vf_error *err);

#endif
