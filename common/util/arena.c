/* arena: bump allocator over one aligned block (see arena.h). */
#include "util/arena.h"

#include <stdlib.h>
#include <string.h>

int vf_arena_init(vf_arena *a, size_t size, vf_error *err) {
    a->used = 0;
    a->size = vf_arena_round(size ? size : 64);
    a->base = aligned_alloc(64, a->size);
    if (!a->base) return vf_fail(err, "out of memory reserving %zu bytes", a->size);
    memset(a->base, 0, a->size);
    return 0;
}

void *vf_arena_alloc(vf_arena *a, size_t bytes) {
    size_t need = vf_arena_round(bytes);
    if (!a->base || a->used + need > a->size) return NULL;
    void *p = a->base + a->used;
    a->used += need;
    return p;
}

float *vf_arena_floats(vf_arena *a, size_t n) { return vf_arena_alloc(a, n * sizeof(float)); }

void vf_arena_reset(vf_arena *a) { a->used = 0; }

void vf_arena_free(vf_arena *a) {
    free(a->base);
    a->base = NULL;
    a->size = a->used = 0;
}
