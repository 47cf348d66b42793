/* weight_binder: two-pass binding of tower weights (see weight_binder.h). */
#include "clip/weight_binder.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static int in_place(const vf_st_tensor *t) { return t->dtype == VF_DT_F32 && ((uintptr_t)t->data & 3u) == 0; }

const vf_st_tensor *vf_bind_check(vf_binder *b, const char *name, int ndim, const int64_t *shape, vf_error *err) {
    const vf_st_tensor *t = vf_st_require(b->st, name, err);
    if (!t || vf_st_check_shape(b->st, t, ndim, shape, err)) return NULL;
    if (t->dtype != VF_DT_F32 && t->dtype != VF_DT_F16 && t->dtype != VF_DT_BF16 && t->dtype != VF_DT_F64) {
        vf_fail(err, "%s: tensor %s has dtype %s, a float type is needed", b->st->path, name, vf_dtype_name(t->dtype));
        return NULL;
    }
    return t;
}

int vf_bind_check_finite(const vf_safetensors *st, const char *name, const float *p, int64_t n, vf_error *err) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(p[i]))
            return vf_fail(err, "%s: tensor %s has a non-finite value at element %lld", st->path, name, (long long)i);
    return 0;
}

int vf_bind(vf_binder *b, const float **dst, vf_error *err, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const vf_st_tensor *t = vf_bind_check(b, name, ndim, shape, err);
    if (!t) return -1;
    if (in_place(t)) {
        if (!b->sizing) *dst = (const float *)t->data;
        return 0;
    }
    float *p = vf_arena_floats(b->arena, (size_t)t->numel);
    if (b->sizing) return 0;
    if (vf_st_read_f32(b->st, name, ndim, shape, p, err) || vf_bind_check_finite(b->st, name, p, t->numel, err))
        return -1;
    *dst = p;
    return 0;
}

int vf_bind_all(const vf_safetensors *st, vf_arena *arena, vf_bind_fn fn, void *weights, vf_error *err) {
    vf_binder b = {.st = st, .arena = arena, .sizing = 1};
    vf_arena_plan(arena);
    if (fn(&b, weights, err)) return -1;
    if (vf_arena_commit(arena, err)) return vf_error_prefix(err, "%s", st->path);
    b.sizing = 0;
    return fn(&b, weights, err);
}
