/* check: shared helpers of the GPU-vs-CPU checker (tests/gpu/gpu_check.c and
 * tests/unit/test_cuda_ops.c): a seeded RNG, error measures, the PASS/FAIL
 * report line, random CLIP towers in the project's C structs, and timing.
 *
 * Every check prints one line
 *   CHECK <name> <PASS|FAIL> rel=<|a-b|/|b|> max_abs=<max |a-b|> [cos=<min cosine>] tol=<tol>
 * and also appends it as a JSON object to the results file when one is open. */
#ifndef VF_GPU_CHECK_H
#define VF_GPU_CHECK_H

#include <stdint.h>
#include <stdio.h>

#include "cpu/clip_text.h"
#include "cpu/clip_vit.h"
#include "cpu/resnet.h"

typedef struct vf_rng { uint64_t s; } vf_rng;
void vf_rng_seed(vf_rng *r, uint64_t seed);
float vf_rng_uniform(vf_rng *r);                       /* [0, 1) */
void vf_rng_fill(vf_rng *r, float *x, size_t n, float lo, float hi);
void vf_rng_normalish(vf_rng *r, float *x, size_t n, float std);  /* uniform with that std */

/* Report destination: lines go to stdout, JSON to `results` (may be NULL). */
extern FILE *vf_check_results;
extern int vf_check_failures;

/* Compares got against ref (n values): relative L2 error and max abs diff;
 * PASS when rel <= tol and everything is finite.  Returns 1 on PASS. */
int vf_check_close(const char *name, const float *got, const float *ref, size_t n, double tol);
/* Rows of (rows, dim): PASS when every row's cosine similarity >= min_cos. */
int vf_check_cosine(const char *name, const float *got, const float *ref, int rows, int dim, double min_cos);
/* Free-form result line (benchmarks): prints "RESULT name key=value ..." and a JSON object. */
void vf_check_result(const char *name, const char *json_fields);
double vf_now_s(void);

/* ---- random towers (one malloc'd block each; free with the matching call) ---- */
typedef struct vf_rand_vit { vf_vit_weights w; float *block; } vf_rand_vit;
int vf_rand_vit_make(vf_rand_vit *m, const vf_clip_vision_config *cfg, int proj_dim, uint64_t seed);
void vf_rand_vit_free(vf_rand_vit *m);
/* Writes the tower as an HF CLIPVisionModelWithProjection safetensors file (F32). */
int vf_rand_vit_save(const vf_rand_vit *m, const char *path);

typedef struct vf_rand_text { vf_clip_text_weights w; float *block; } vf_rand_text;
int vf_rand_text_make(vf_rand_text *m, const vf_clip_text_config *cfg, int proj_dim, uint64_t seed);
void vf_rand_text_free(vf_rand_text *m);

/* Fills an initialised vf_resnet's weights (BatchNorm already "folded"). */
void vf_rand_resnet_fill(vf_resnet *r, uint64_t seed);

#endif
