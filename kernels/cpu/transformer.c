/* transformer: one pre-LN encoder layer forward (see transformer.h). */
#include "cpu/transformer.h"
#include "cpu/activation.h"
#include "cpu/attention.h"
#include "cpu/layernorm.h"
#include "cpu/matmul.h"
#include "cpu/matmul_bf16.h"

#include <math.h>

void vf_tfm_acts_carve(vf_tfm_acts *a, vf_arena *arena, const vf_clip_encoder_config *cfg, int B, int T, int keep_att) {
    size_t BT = (size_t)B * T, C = (size_t)cfg->hidden_size, F = (size_t)cfg->intermediate_size;
    a->ln1 = vf_arena_floats(arena, BT * C);
    a->ln1_mean = vf_arena_floats(arena, BT);
    a->ln1_rstd = vf_arena_floats(arena, BT);
    if (keep_att) {
        a->q = vf_arena_floats(arena, BT * C);
        a->k = vf_arena_floats(arena, BT * C);
        a->v = vf_arena_floats(arena, BT * C);
        a->qkv = NULL;
    } else {
        a->q = a->k = a->v = NULL;
        a->qkv = vf_arena_floats(arena, 3 * BT * C);
    }
    a->att = keep_att ? vf_arena_floats(arena, (size_t)B * cfg->num_heads * T * T) : NULL;
    a->att_scratch = keep_att ? NULL : vf_arena_floats(arena, vf_attention_scratch_floats(T, cfg->hidden_size, cfg->num_heads));
    a->atty = vf_arena_floats(arena, BT * C);
    a->res1 = vf_arena_floats(arena, BT * C);
    a->ln2 = vf_arena_floats(arena, BT * C);
    a->ln2_mean = vf_arena_floats(arena, BT);
    a->ln2_rstd = vf_arena_floats(arena, BT);
    a->fch = vf_arena_floats(arena, BT * F);
    a->fch_act = vf_arena_floats(arena, BT * F);
}

/* The inference layer with bf16 products (cpu/matmul_bf16.h): the residual
 * stream (x_in, res1, x_out) stays fp32; what only a product reads (layer
 * norms, q;k;v, the attention output, fc1 after its activation) is written
 * in bf16, into the fp32 buffers' memory (a bf16 value takes half a float). */
static void layer_forward_bf16(const vf_tfm_layer *w, const vf_clip_encoder_config *cfg, vf_tfm_acts *a,
                               const float *x_in, float *x_out, int B, int T, int causal) {
    const int BT = B * T, C = cfg->hidden_size, NH = cfg->num_heads;
    const float eps = cfg->layer_norm_eps, scale = 1.0f / sqrtf((float)(C / NH));
    const vf_bf16_linear *lin = w->bf16;
    uint16_t *ln1 = (uint16_t *)a->ln1, *qkv = (uint16_t *)a->qkv, *atty = (uint16_t *)a->atty;
    uint16_t *ln2 = (uint16_t *)a->ln2, *fch = (uint16_t *)a->fch;
    vf_layernorm_forward_bf16(ln1, x_in, w->ln1_w, w->ln1_b, BT, C, eps);                                    // (B, T, C)
    vf_bf16_linear_forward(&lin[VF_TFM_BF16_QKV], qkv, 1, NULL, ln1, w->qkv_w ? w->qkv_b : w->q_b, BT, NULL); // (B, T, 3C)
    vf_attention_forward_bf16(atty, a->att_scratch, qkv, B, T, C, NH, scale, causal);                       // (B, T, C)
    vf_bf16_linear_forward(&lin[VF_TFM_BF16_O], a->res1, 0, x_in, atty, w->o_b, BT, NULL);                 // x + attn
    vf_layernorm_forward_bf16(ln2, a->res1, w->ln2_w, w->ln2_b, BT, C, eps);
    vf_bf16_linear_forward(&lin[VF_TFM_BF16_FC1], fch, 1, NULL, ln2, w->fc1_b, BT, &cfg->act);            // (B, T, F) act(fc1)
    vf_bf16_linear_forward(&lin[VF_TFM_BF16_FC2], x_out, 0, a->res1, fch, w->fc2_b, BT, NULL);             // res1 + mlp
}

void vf_tfm_layer_forward(const vf_tfm_layer *w, const vf_clip_encoder_config *cfg, vf_tfm_acts *a,
                          const float *x_in, float *x_out, int B, int T, int causal) {
    /* bf16 Linear layers: inference only; they hold q;k;v stacked, which for a layer without qkv_w the bf16
     * set-up (clip/vision_bf16.c) checked are contiguous (q_w, q_b start the stacked rows) */
    if (w->bf16 && !a->att) {
        layer_forward_bf16(w, cfg, a, x_in, x_out, B, T, causal);
        return;
    }
    const int BT = B * T, C = cfg->hidden_size, F = cfg->intermediate_size, NH = cfg->num_heads;
    const float eps = cfg->layer_norm_eps, scale = 1.0f / sqrtf((float)(C / NH));
    vf_layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, x_in, w->ln1_w, w->ln1_b, BT, C, eps); // (B, T, C)
    if (a->att) { /* kept for the backward pass: separate (B, T, C) projections */
        vf_matmul_forward(a->q, a->ln1, w->q_w, w->q_b, BT, C, C);                                 // (B, T, C)
        vf_matmul_forward(a->k, a->ln1, w->k_w, w->k_b, BT, C, C);
        vf_matmul_forward(a->v, a->ln1, w->v_w, w->v_b, BT, C, C);
        vf_attention_forward(a->atty, a->att, a->q, a->k, a->v, B, T, C, NH, C, scale, causal);   // (B, T, C)
    } else if (w->qkv_w) { /* inference, stacked weights: one (B, T, 3C) projection */
        vf_matmul_forward(a->qkv, a->ln1, w->qkv_w, w->qkv_b, BT, C, 3 * C);                       // (B, T, 3C)
        vf_attention_forward_nosave(a->atty, a->att_scratch, a->qkv, a->qkv + C, a->qkv + 2 * C, B, T, C, NH, 3 * C, scale, causal);
    } else {
        float *q = a->qkv, *k = q + (long)BT * C, *v = k + (long)BT * C;
        vf_matmul_forward(q, a->ln1, w->q_w, w->q_b, BT, C, C);
        vf_matmul_forward(k, a->ln1, w->k_w, w->k_b, BT, C, C);
        vf_matmul_forward(v, a->ln1, w->v_w, w->v_b, BT, C, C);
        vf_attention_forward_nosave(a->atty, a->att_scratch, q, k, v, B, T, C, NH, C, scale, causal);
    }
    vf_matmul_residual_forward(a->res1, x_in, a->atty, w->o_w, w->o_b, BT, C, C);                // (B, T, C) x + attn
    vf_layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res1, w->ln2_w, w->ln2_b, BT, C, eps);
    vf_matmul_forward(a->fch, a->ln2, w->fc1_w, w->fc1_b, BT, C, F);                             // (B, T, F)
    vf_activation_forward(cfg->act, a->fch_act, a->fch, (long)BT * F);
    vf_matmul_residual_forward(x_out, a->res1, a->fch_act, w->fc2_w, w->fc2_b, BT, F, C);       // res1 + mlp
}
