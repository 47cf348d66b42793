/* transformer: one CLIP encoder layer (pre-LN), forward, plain C:
 *
 *   ln1  = LayerNorm1(x)
 *   q, k, v = ln1 @ Wq^T + bq, ...            separate projections, as in HF
 *   atty = attention(q, k, v)                  (causal for text, full for ViT)
 *   res1 = x + atty @ Wo^T + bo
 *   ln2  = LayerNorm2(res1)
 *   fch  = ln2 @ W1^T + b1;  fch_act = act(fch)
 *   out  = res1 + fch_act @ W2^T + b2
 *
 * Weights point into a model's parameter arena or its safetensors mapping;
 * activations into one activation arena sized for (B_max, T_max).  Buffers
 * are used densely with the actual (B, T) of a call. */
#ifndef VF_CPU_TRANSFORMER_H
#define VF_CPU_TRANSFORMER_H

#include <stddef.h>
#include "cpu/clip_shapes.h"
#include "util/arena.h"

/* Weights of one layer, PyTorch Linear layout (out, in). */
typedef struct vf_tfm_layer {
    const float *ln1_w, *ln1_b;           // (C)      layer_norm1
    const float *q_w, *k_w, *v_w, *o_w;   // (C, C)   self_attn.{q,k,v,out}_proj.weight
    const float *q_b, *k_b, *v_b, *o_b;   // (C)
    const float *ln2_w, *ln2_b;           // (C)      layer_norm2
    const float *fc1_w, *fc1_b;           // (F, C), (F)  mlp.fc1
    const float *fc2_w, *fc2_b;           // (C, F), (C)  mlp.fc2
    const float *qkv_w, *qkv_b;           // (3C, C), (3C) q;k;v stacked, or NULL: lets
                                          // inference run one projection matmul instead of three
    const struct vf_bf16_linear *bf16;    // qkv, o, fc1, fc2 weights in bf16 (cpu/matmul_bf16.h, VF_TFM_BF16_*)
                                          // for inference, or NULL: fp32
} vf_tfm_layer;

enum { VF_TFM_BF16_QKV, VF_TFM_BF16_O, VF_TFM_BF16_FC1, VF_TFM_BF16_FC2, VF_TFM_BF16_COUNT };

/* Everything one layer's forward writes, all kept for the backward pass. */
typedef struct vf_tfm_acts {
    float *ln1;                // (B, T, C)  LayerNorm1 output
    float *ln1_mean, *ln1_rstd; // (B, T)
    float *q, *k, *v;          // (B, T, C)  projections (q not yet scaled); kept acts only
    float *qkv;                // (B, T, 3C) the same, interleaved per row; inference acts only
    float *att;                // (B, NH, T, T) softmax probabilities; NULL when not kept
    float *att_scratch;        // (threads, T, T) per-thread probabilities when att is not kept
    float *atty;               // (B, T, C)  attention output before out_proj
    float *res1;               // (B, T, C)  x + out_proj(atty)
    float *ln2;                // (B, T, C)  LayerNorm2 output
    float *ln2_mean, *ln2_rstd; // (B, T)
    float *fch;                // (B, T, F)  fc1 output, before the activation
    float *fch_act;            // (B, T, F)  after the activation
} vf_tfm_acts;

/* Carves one layer's buffers for (B, T) out of `arena`, in both of its
 * passes (util/arena.h).  keep_att: the backward layout (att, separate
 * q/k/v); otherwise the inference layout (per-thread attention scratch, one
 * qkv buffer). */
void vf_tfm_acts_carve(vf_tfm_acts *a, vf_arena *arena, const vf_clip_encoder_config *cfg, int B, int T, int keep_att);

/* x_out (B, T, C) = layer(x_in (B, T, C)).  x_out must not alias x_in. */
void vf_tfm_layer_forward(const vf_tfm_layer *w, const vf_clip_encoder_config *cfg, vf_tfm_acts *a,
                          const float *x_in, float *x_out, int B, int T, int causal);

#endif
