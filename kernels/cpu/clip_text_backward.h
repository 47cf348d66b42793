/* clip_text_backward: CLIP's text tower backward to its INPUT EMBEDDINGS,
 * plain C — the gradient CoOp needs for its context vectors.  CLIP stays
 * frozen, so no weight gradient is ever formed.
 *
 * Written against the forward in cpu/clip_text.h and cpu/transformer.h: it
 * reads the activations that forward kept (vf_clip_text_acts) and walks the
 * same graph in reverse:
 *   dout (B, D) -> text_projection -> final_layer_norm (EOT rows only)
 *   -> placed at each sequence's EOT row of dhidden[L]
 *   -> layer L-1 ... layer 0 (pre-LN blocks, causal attention)
 *   -> demb (B, T, C)   (the position-embedding add passes the gradient through)
 * Only the rows that can carry a wanted gradient are computed: t in
 * [lo[b], eot[b]] of sequence b (causal attention: row t's gradient depends
 * only on rows >= t, and rows past the EOT feed nothing that is pooled).
 * CoOp wants the context rows only, so lo is the first context position and
 * the prompt's prefix tokens and the padding after short prompts cost
 * nothing.  The residual-stream gradient is kept packed, (R, C) with R the
 * number of such rows (see vf_row_ranges in cpu/backward.h).
 * All scratch lives in one arena sized at init for (B_max, T_max). */
#ifndef VF_CPU_CLIP_TEXT_BACKWARD_H
#define VF_CPU_CLIP_TEXT_BACKWARD_H

#include "cpu/backward.h"
#include "cpu/clip_text.h"
#include "cpu/transformer.h"
#include "util/arena.h"
#include "util/vf_error.h"

/* Gradient buffers of one encoder layer's backward, sized for (B_max, T_max)
 * rows; used packed, (R, ...) for the R rows computed. */
typedef struct vf_tfm_grads {
    float *dres1;     // (R, C)  d res1 (the residual stream after attention)
    float *dln;       // (R, C)  d ln1 / d ln2 output (one at a time)
    float *datty;     // (R, C)  d attention output
    float *dq, *dk, *dv; // (R, C)
    float *dfch_act;  // (R, F)
    float *dfch;      // (R, F)
    float *rows_c;    // (R, C)  the forward's res1 / x_in rows, gathered
    float *rows_f;    // (R, F)  the forward's fc1 output rows, gathered
    float *rows_mean, *rows_rstd; // (R) layer-norm statistics, gathered
    float *att;       // (B, NH, T, T) recomputed probabilities when the forward did not keep them
} vf_tfm_grads;

/* Carves one layer's gradient buffers for (B, T) out of `arena`, in both of
 * its passes (util/arena.h). */
void vf_tfm_grads_carve(vf_tfm_grads *g, vf_arena *arena, const vf_clip_encoder_config *cfg, int B, int T);

/* dx_in = d/dx_in of sum(dx_out * layer(x_in)) on the R rows of `rows`, for
 * the forward that filled `a` from x_in (B, T, C).  dx_out and dx_in are
 * packed (R, C); dx_in is overwritten and must not alias dx_out. */
void vf_tfm_layer_backward(const vf_tfm_layer *w, const vf_clip_encoder_config *cfg, const vf_tfm_acts *a,
                           const float *x_in, const float *dx_out, float *dx_in, vf_tfm_grads *g, int B, int T,
                           const vf_row_ranges *rows, int R);

typedef struct vf_clip_text_grads {
    int B_max, T_max;
    vf_arena arena;
    vf_tfm_grads layer;   // shared by all layers (walked one at a time)
    float *dx_a, *dx_b;   // (R, C) ping-pong residual-stream gradients, packed
    float *dpooled_ln;    // (B, C)
    float *dpooled;       // (B, C)
    int *lo, *hi, *off;   // (B) the rows computed (vf_row_ranges)
} vf_clip_text_grads;

int vf_clip_text_grads_init(vf_clip_text_grads *g, const vf_clip_text_weights *w, int B_max, int T_max, vf_error *err);
void vf_clip_text_grads_free(vf_clip_text_grads *g);

/* demb (B, T, C) = d/demb of sum(dout (B, D) * features) for the last
 * vf_clip_text_forward that filled `a` (its B, T, eot).  lo (B) is the first
 * row of each sequence whose gradient is wanted (NULL = 0: all rows).
 * Overwrites demb; rows outside [lo[b], eot[b]] are written as zero (past
 * the EOT that is exact, below lo it is "not computed").  No allocation. */
int vf_clip_text_backward(const vf_clip_text_weights *w, const vf_clip_text_acts *a, vf_clip_text_grads *g,
                          const float *dout, const int *lo, float *demb, vf_error *err);

#endif
