/* arena: one allocation per model (parameters) and one per activation set.
 *
 * An arena is sized by the very code that carves it.  That code (a "carve
 * function": one per layer, containers call their children's) runs twice:
 *
 *     vf_arena_plan(&a);                  counting pass: every vf_arena_alloc
 *     carve(&a, ...);                     returns NULL and only adds up sizes
 *     if (vf_arena_commit(&a, err)) ...;  one block of exactly that size
 *     carve(&a, ...);                     the same calls, now real pointers
 *
 * so no byte count is ever written down separately.  A carve function must
 * make the same requests in both passes and, while counting, must not
 * write through what vf_arena_alloc returned (NULL); vf_arena_counting says
 * which pass it is in.  Nothing is freed piecewise, so the per-step hot
 * path never allocates. */
#ifndef VF_ARENA_H
#define VF_ARENA_H

#include <stddef.h>
#include "util/vf_error.h"

typedef struct vf_arena {
    unsigned char *base;
    size_t size, used;
    int counting;
} vf_arena;

/* Starts the counting pass on an empty arena (zero-initialised or freed). */
void vf_arena_plan(vf_arena *a);
/* Ends the counting pass: reserves exactly the bytes counted (64-byte
 * aligned, zeroed) and rewinds, ready for the carving pass. */
int vf_arena_commit(vf_arena *a, vf_error *err);
/* 1 during the counting pass, 0 otherwise. */
int vf_arena_counting(const vf_arena *a);
/* The next `bytes` (or `n` floats), 64-byte aligned.  NULL while counting;
 * after the commit the same requests always fit. */
void *vf_arena_alloc(vf_arena *a, size_t bytes);
float *vf_arena_floats(vf_arena *a, size_t n);
/* Releases the block; the arena is empty again. */
void vf_arena_free(vf_arena *a);

#endif
