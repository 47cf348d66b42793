/* weight_binder: points a tower's weight struct at the tensors of a
 * safetensors file (Hugging Face and OpenCLIP layouts alike).  The layout's
 * bind function runs twice over the same code, the two passes of the one
 * parameter arena (util/arena.h): a sizing pass (the arena's counting pass)
 * checks every tensor (present, shape, float dtype) while the arena counts
 * what the function carves, then a binding pass sets the pointers: F32
 * tensors in place in the mapped file, F16/BF16/F64 converted into the
 * arena.  A non-finite weight is an error (it would poison every output). */
#ifndef VF_CLIP_WEIGHT_BINDER_H
#define VF_CLIP_WEIGHT_BINDER_H

#include <stddef.h>
#include <stdint.h>
#include "formats/safetensors.h"
#include "util/arena.h"
#include "util/vf_error.h"

typedef struct vf_binder {
    const vf_safetensors *st;
    vf_arena *arena;
    int sizing;  /* 1: only check (the arena is counting); 0: bind pointers */
} vf_binder;

/* *dst = the tensor named by fmt, of this shape. */
int vf_bind(vf_binder *b, const float **dst, vf_error *err, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* The tensor `name` when it exists with this shape and a float dtype; NULL and err otherwise. */
const vf_st_tensor *vf_bind_check(vf_binder *b, const char *name, int ndim, const int64_t *shape, vf_error *err);
/* -1 and err naming the first non-finite element of p[0..n). */
int vf_bind_check_finite(const vf_safetensors *st, const char *name, const float *p, int64_t n, vf_error *err);

typedef int (*vf_bind_fn)(vf_binder *b, void *weights, vf_error *err);
/* Runs fn's sizing pass (counting the arena), reserves the arena, then runs
 * its binding pass. */
int vf_bind_all(const vf_safetensors *st, vf_arena *arena, vf_bind_fn fn, void *weights, vf_error *err);

#endif
