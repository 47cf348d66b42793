/* clip_vit: CLIP's ViT image tower forward, plain C, batched, inference only.
 *
 *   pixels (B, 3, H, W) preprocessed
 *   patches (B, NP, 3*P*P) = im2col, NP = (H/P)^2          (stride = patch)
 *   pe      (B, NP, C) = patches @ patch_embedding^T        (no bias, as CLIP; in bf16 too when the
 *                                                            tower's products are, cpu/matmul_bf16.h)
 *   x       (B, T, C), T = NP + 1: x[b,0] = class_embedding, x[b,1+p] = pe[b,p]; + position_embedding
 *   hidden  = pre_layrnorm(x); then L non-causal layers     (B, T, C)
 *   cls_ln  = post_layernorm(hidden[:, 0])                 (B, C)
 *   out     = cls_ln @ visual_projection^T                  (B, D)
 *
 * Activations for B_max images live in one arena made once; encoding a
 * batch never allocates. */
#ifndef VF_CPU_CLIP_VIT_H
#define VF_CPU_CLIP_VIT_H

#include <stdint.h>

#include "cpu/clip_shapes.h"
#include "cpu/transformer.h"
#include "util/arena.h"
#include "util/vf_error.h"

typedef struct vf_vit_weights {
    vf_clip_vision_config cfg;    // C, L, image_size H, patch_size P
    int projection_dim;           // D
    const float *patch_w;         // (C, 3, P, P) vision_model.embeddings.patch_embedding.weight
    const float *class_emb;       // (C)          vision_model.embeddings.class_embedding
    const float *pos_emb;         // (T, C)       vision_model.embeddings.position_embedding.weight
    const float *pre_ln_w, *pre_ln_b;   // (C)    vision_model.pre_layrnorm
    vf_tfm_layer *layers;         // (L)          vision_model.encoder.layers.N.*
    const float *post_ln_w, *post_ln_b; // (C)    vision_model.post_layernorm
    const float *projection;      // (D, C)       visual_projection.weight
    const struct vf_bf16_linear *patch_bf16; // patch_w in bf16 (cpu/matmul_bf16.h) for a bf16 tower, or NULL
} vf_vit_weights;

typedef struct vf_vit_acts {
    int B_max;
    vf_arena arena;
    float *patches;   // (B, NP, 3*P*P)
    uint16_t *patches_bf16; // (B, NP, 3*P*P) the same in bf16, when patch_bf16 is set
    float *x_embed;   // (B, T, C) embeddings + positions (pre_layrnorm input)
    float *x_a, *x_b; // (B, T, C) ping-pong layer inputs/outputs
    vf_tfm_acts layer; // one layer's buffers, reused by every layer (no att kept)
    float *cls, *cls_ln; // (B, C)
} vf_vit_acts;

int vf_vit_acts_init(vf_vit_acts *a, const vf_vit_weights *w, int B_max, vf_error *err);
void vf_vit_acts_free(vf_vit_acts *a);

/* out (B, D) from pixels (B, 3, H, W); B <= a->B_max. */
void vf_vit_forward(const vf_vit_weights *w, vf_vit_acts *a, const float *pixels, int B, float *out);

#endif
