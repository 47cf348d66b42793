/* arena: bump allocator over one aligned block, sized by a counting pass
 * over the code that carves it (see arena.h). */
#include "util/arena.h"

#include <stdlib.h>
#include <string.h>

static size_t round64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

void vf_arena_plan(vf_arena *a) {
    a->base = NULL;
    a->size = a->used = 0;
    a->counting = 1;
}

int vf_arena_commit(vf_arena *a, vf_error *err) {
    size_t size = a->used ? a->used : 64;
    a->counting = 0;
    a->used = 0;
    a->base = aligned_alloc(64, size);
    if (!a->base) {
        a->size = 0;
        return vf_fail(err, "out of memory reserving %zu bytes", size);
    }
    a->size = size;
    memset(a->base, 0, size);
    return 0;
}

int vf_arena_counting(const vf_arena *a) { return a->counting; }

void *vf_arena_alloc(vf_arena *a, size_t bytes) {
    size_t need = round64(bytes);
    if (a->counting) {
        a->used += need;
        return NULL;
    }
    if (!a->base || need > a->size - a->used) return NULL; /* a carve pass that differs from its count */
    void *p = a->base + a->used;
    a->used += need;
    return p;
}

float *vf_arena_floats(vf_arena *a, size_t n) { return vf_arena_alloc(a, n * sizeof(float)); }

void vf_arena_free(vf_arena *a) {
    free(a->base);
    a->base = NULL;
    a->size = a->used = 0;
    a->counting = 0;
}
