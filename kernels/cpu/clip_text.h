/* clip_text: CLIP's causal text tower forward, plain C (the specification
 * that the CoOp backward is written against).
 *
 *   emb    (B, T, C)  input embeddings: vf_clip_text_embed_tokens, or CoOp's
 *                     mix of token embeddings and learnable context vectors
 *   hidden[0] = emb + position_embedding[0:T]                         (B, T, C)
 *   hidden[l+1] = layer_l(hidden[l]), causal                          (B, T, C)
 *   pooled[b]   = hidden[L][b, eot[b]]                                 (B, C)
 *   pooled_ln   = final_layer_norm(pooled)                             (B, C)
 *   out         = pooled_ln @ text_projection^T                        (B, D)
 *
 * Because attention is causal, tokens after the EOT never influence it, so
 * T only needs to reach the longest prompt's EOT (T <= max_positions = 77).
 * LayerNorm is per token, so applying final_layer_norm to the EOT rows only
 * is the same as HF applying it to every token and then picking the EOT. */
#ifndef VF_CPU_CLIP_TEXT_H
#define VF_CPU_CLIP_TEXT_H

#include <stdint.h>
#include "cpu/clip_shapes.h"
#include "cpu/transformer.h"
#include "util/arena.h"
#include "util/vf_error.h"

typedef struct vf_clip_text_weights {
    vf_clip_text_config cfg;       // C = cfg.enc.hidden_size, L = cfg.enc.num_layers, V, P
    int projection_dim;            // D
    const float *token_embedding;  // (V, C)  text_model.embeddings.token_embedding.weight
    const float *position_embedding; // (P, C) text_model.embeddings.position_embedding.weight
    vf_tfm_layer *layers;          // (L)     text_model.encoder.layers.N.*
    const float *final_ln_w, *final_ln_b; // (C) text_model.final_layer_norm
    const float *projection;       // (D, C)  text_projection.weight
} vf_clip_text_weights;

/* Every activation of a forward, kept for the backward pass.  One arena,
 * sized at init for (B_max, T_max); a forward with B <= B_max, T <= T_max
 * uses each buffer densely as (B, T, ...) and never allocates. */
typedef struct vf_clip_text_acts {
    int B_max, T_max, L;
    vf_arena arena;
    float **hidden;      // (L+1) pointers to (B, T, C): hidden[0] = emb + pos, hidden[l+1] = layer l output
    vf_tfm_acts *layers; // (L) per-layer activations (att kept: (B, NH, T, T))
    int *eot;            // (B)     the EOT position of each sequence, as given
    float *pooled;       // (B, C)  hidden[L] rows at eot (final LN input)
    float *pooled_ln;    // (B, C)  final_layer_norm(pooled) (projection input)
    float *pooled_mean, *pooled_rstd; // (B) final LN statistics
    int B, T;            // shape of the last forward
} vf_clip_text_acts;

int vf_clip_text_acts_init(vf_clip_text_acts *a, const vf_clip_text_weights *w, int B_max, int T_max, vf_error *err);
void vf_clip_text_acts_free(vf_clip_text_acts *a);

/* emb (B, T, C) = token_embedding[ids (B, T)].  Fails naming the first id
 * outside the vocabulary. */
int vf_clip_text_embed_tokens(const vf_clip_text_weights *w, const int32_t *ids, int B, int T, float *emb, vf_error *err);

/* EOT position per sequence (B) of ids (B, T), the way transformers pools:
 * the first eos_token_id, or for configs with the pre-2023 eos_token_id 2,
 * the position of the largest id.  Fails if a sequence has no EOT. */
int vf_clip_text_eot_positions(const vf_clip_text_config *cfg, const int32_t *ids, int B, int T, int *eot, vf_error *err);

/* out (B, D) = projected text features (not normalised) of emb (B, T, C)
 * pooled at eot (B).  Checks B, T and eot against the activations' limits. */
int vf_clip_text_forward(const vf_clip_text_weights *w, vf_clip_text_acts *a, const float *emb, const int *eot,
                         int B, int T, float *out, vf_error *err);

#endif
