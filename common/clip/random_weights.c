/* random_weights: two-pass random-weight safetensors files (see random_weights.h). */
#include "clip/random_weights.h"

#include <stdio.h>
#include <stdlib.h>

static float *reserve(vf_random_weights *g, size_t n) {
    if (g->sizing) {
        g->cap += n;
        return NULL;
    }
    float *p = g->buf + g->used;
    g->used += n;
    return p;
}

int vf_random_weights_vadd(vf_random_weights *g, vf_random_fill fill, const void *how, vf_error *err, int ndim,
                           const int64_t *shape, const char *fmt, va_list ap) {
    char name[256];
    vsnprintf(name, sizeof name, fmt, ap);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *values = reserve(g, n);
    if (!values) return 0;
    vf_rng stream;
    vf_rng_seed(&stream, vf_rng_name_seed(g->seed, name));
    fill(values, n, &stream, how);
    return vf_st_writer_add_f32(&g->w, name, g->dtype, ndim, shape, values, err);
}

int vf_random_weights_add_fixed(vf_random_weights *g, const char *name, int ndim, const int64_t *shape, float **values,
                                vf_error *err) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    *values = reserve(g, n);
    if (!*values) return 0;
    return vf_st_writer_add_f32(&g->w, name, g->dtype, ndim, shape, *values, err);
}

int vf_random_weights_write(const char *path, vf_dtype dtype, uint64_t seed, vf_random_weights_table table,
                            const void *cfg, vf_error *err) {
    vf_random_weights g = {.dtype = dtype, .seed = seed, .sizing = 1};
    vf_st_writer_init(&g.w);
    int rc = table(&g, cfg, err);
    if (!rc && !(g.buf = malloc(sizeof(float) * g.cap)))
        rc = vf_fail(err, "out of memory for %zu parameters", g.cap);
    g.sizing = 0;
    if (!rc) rc = table(&g, cfg, err);
    if (!rc) rc = vf_st_writer_meta(&g.w, "format", "pt", err);
    if (!rc) rc = vf_st_writer_meta(&g.w, "vflclip_random_weights", "true", err);
    if (!rc) rc = vf_st_writer_save(&g.w, path, err);
    vf_st_writer_free(&g.w);
    free(g.buf);
    return rc;
}
