/* clip_text_backward: CLIP's text tower backward to its INPUT EMBEDDINGS,
 * plain C — the gradient CoOp needs for its context vectors.  CLIP stays
 * frozen, so no weight gradient is ever formed.
 *
 * Written against the forward in cpu/clip_text.h and cpu/transformer.h: it
 * reads the activations that forward kept (vf_clip_text_acts) and walks the
 * same graph in reverse:
 *   dout (B, D) -> text_projection -> final_layer_norm (EOT rows only)
 *   -> scattered into dhidden[L] (B, T, C) at each sequence's EOT
 *   -> layer L-1 ... layer 0 (pre-LN blocks, causal attention)
 *   -> demb (B, T, C)   (the position-embedding add passes the gradient through)
 * All scratch lives in one arena sized at init for (B_max, T_max). */
#ifndef VF_CPU_CLIP_TEXT_BACKWARD_H
#define VF_CPU_CLIP_TEXT_BACKWARD_H

#include "cpu/clip_text.h"
#include "cpu/transformer.h"
#include "util/arena.h"
#include "util/vf_error.h"

/* Gradient buffers of one encoder layer's backward, (B_max, T_max) sized. */
typedef struct vf_tfm_grads {
    float *dres1;     // (B, T, C)  d res1 (the residual stream after attention)
    float *dln;       // (B, T, C)  d ln1 / d ln2 output (one at a time)
    float *datty;     // (B, T, C)  d attention output
    float *dq, *dk, *dv; // (B, T, C)
    float *dfch_act;  // (B, T, F)
    float *dfch;      // (B, T, F)
    float *att;       // (B, NH, T, T) recomputed probabilities when the forward did not keep them
} vf_tfm_grads;

size_t vf_tfm_grads_bytes(const vf_clip_encoder_config *cfg, int B, int T);
int vf_tfm_grads_carve(vf_tfm_grads *g, vf_arena *arena, const vf_clip_encoder_config *cfg, int B, int T);

/* dx_in (B, T, C) = d/dx_in of sum(dx_out * layer(x_in)), for the forward
 * that filled `a` from x_in.  dx_in is overwritten; it must not alias dx_out. */
void vf_tfm_layer_backward(const vf_tfm_layer *w, const vf_clip_encoder_config *cfg, const vf_tfm_acts *a,
                           const float *x_in, const float *dx_out, float *dx_in, vf_tfm_grads *g, int B, int T);

typedef struct vf_clip_text_grads {
    int B_max, T_max;
    vf_arena arena;
    vf_tfm_grads layer;   // shared by all layers (walked one at a time)
    float *dx_a, *dx_b;   // (B, T, C) ping-pong residual-stream gradients
    float *dpooled_ln;    // (B, C)
    float *dpooled;       // (B, C)
} vf_clip_text_grads;

int vf_clip_text_grads_init(vf_clip_text_grads *g, const vf_clip_text_weights *w, int B_max, int T_max, vf_error *err);
void vf_clip_text_grads_free(vf_clip_text_grads *g);

/* demb (B, T, C) = d/demb of sum(dout (B, D) * features) for the last
 * vf_clip_text_forward that filled `a` (its B, T, eot).  Overwrites demb.
 * No allocation. */
int vf_clip_text_backward(const vf_clip_text_weights *w, const vf_clip_text_acts *a, vf_clip_text_grads *g,
                          const float *dout, float *demb, vf_error *err);

#endif
