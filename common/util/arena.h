/* arena: one allocation per model (parameters) and one per activation set.
 * Callers first size everything, then carve aligned pieces; nothing is freed
 * piecewise, so the per-step hot path never allocates. */
#ifndef VF_ARENA_H
#define VF_ARENA_H

#include <stddef.h>
#include "util/vf_error.h"

typedef struct vf_arena {
    unsigned char *base;
    size_t size, used;
} vf_arena;

/* Reserves `size` bytes (64-byte aligned, zeroed). */
int vf_arena_init(vf_arena *a, size_t size, vf_error *err);
/* Returns the next `n` floats/bytes, 64-byte aligned; NULL if the arena is full
 * (a sizing bug, reported by the caller). */
void *vf_arena_alloc(vf_arena *a, size_t bytes);
float *vf_arena_floats(vf_arena *a, size_t n);
void vf_arena_reset(vf_arena *a);
void vf_arena_free(vf_arena *a);
/* Bytes `bytes` occupies once aligned: for sizing passes. */
static inline size_t vf_arena_round(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

#endif
