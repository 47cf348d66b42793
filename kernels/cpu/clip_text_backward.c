/* clip_text_backward: input-embedding gradient of the CLIP text tower and of
 * one pre-LN encoder layer (see clip_text_backward.h). */
#include "cpu/clip_text_backward.h"

#include <math.h>
#include <string.h>

#include "cpu/backward.h"

size_t vf_tfm_grads_bytes(const vf_clip_encoder_config *cfg, int B, int T) {
    size_t BT = (size_t)B * T, C = cfg->hidden_size, F = cfg->intermediate_size, NH = cfg->num_heads;
    return 6 * vf_arena_round(BT * C * sizeof(float)) + 2 * vf_arena_round(BT * F * sizeof(float)) +
           vf_arena_round((size_t)B * NH * T * T * sizeof(float));
}

int vf_tfm_grads_carve(vf_tfm_grads *g, vf_arena *arena, const vf_clip_encoder_config *cfg, int B, int T) {
    size_t BT = (size_t)B * T, C = cfg->hidden_size, F = cfg->intermediate_size, NH = cfg->num_heads;
    g->dres1 = vf_arena_floats(arena, BT * C);
    g->dln = vf_arena_floats(arena, BT * C);
    g->datty = vf_arena_floats(arena, BT * C);
    g->dq = vf_arena_floats(arena, BT * C);
    g->dk = vf_arena_floats(arena, BT * C);
    g->dv = vf_arena_floats(arena, BT * C);
    g->dfch_act = vf_arena_floats(arena, BT * F);
    g->dfch = vf_arena_floats(arena, BT * F);
    g->att = vf_arena_floats(arena, (size_t)B * NH * T * T);
    return g->dres1 && g->dln && g->datty && g->dq && g->dk && g->dv && g->dfch_act && g->dfch && g->att ? 0 : -1;
}

static void activation_backward(vf_activation act, float *dinp, const float *inp, const float *dout, long N) {
    switch (act) {
    case VF_ACT_QUICK_GELU: vf_quick_gelu_backward(dinp, inp, dout, N); break;
    case VF_ACT_GELU: vf_gelu_backward(dinp, inp, dout, N); break;
    case VF_ACT_GELU_TANH: vf_gelu_tanh_backward(dinp, inp, dout, N); break;
    }
}

void vf_tfm_layer_backward(const vf_tfm_layer *w, const vf_clip_encoder_config *cfg, const vf_tfm_acts *a,
                           const float *x_in, const float *dx_out, float *dx_in, vf_tfm_grads *g, int B, int T) {
    const int BT = B * T, C = cfg->hidden_size, F = cfg->intermediate_size, NH = cfg->num_heads;
    const float eps = cfg->layer_norm_eps, scale = 1.0f / sqrtf((float)(C / NH));
    const size_t nC = (size_t)BT * C * sizeof(float), nF = (size_t)BT * F * sizeof(float);
    /* out = res1 + fc2(act(fc1(ln2(res1)))) */
    memcpy(g->dres1, dx_out, nC);                                              // (B, T, C) residual path
    memset(g->dfch_act, 0, nF);
    vf_matmul_backward_input(g->dfch_act, dx_out, w->fc2_w, BT, F, C);         // (B, T, F)
    memset(g->dfch, 0, nF);
    activation_backward(cfg->act, g->dfch, a->fch, g->dfch_act, (long)BT * F); // (B, T, F)
    memset(g->dln, 0, nC);
    vf_matmul_backward_input(g->dln, g->dfch, w->fc1_w, BT, C, F);             // (B, T, C)
    vf_layernorm_backward(g->dres1, g->dln, a->res1, w->ln2_w, a->ln2_mean, a->ln2_rstd, eps, BT, C);
    /* res1 = x_in + out_proj(attention(q, k, v)), q/k/v = proj(ln1(x_in)) */
    memcpy(dx_in, g->dres1, nC);                                               // (B, T, C) residual path
    memset(g->datty, 0, nC);
    vf_matmul_backward_input(g->datty, g->dres1, w->o_w, BT, C, C);            // (B, T, C)
    memset(g->dq, 0, nC);
    memset(g->dk, 0, nC);
    memset(g->dv, 0, nC);
    vf_attention_backward(g->dq, g->dk, g->dv, g->att, g->datty, a->q, a->k, a->v, a->att, B, T, C, NH, C, scale);
    memset(g->dln, 0, nC);
    vf_matmul_backward_input(g->dln, g->dq, w->q_w, BT, C, C);                 // (B, T, C)
    vf_matmul_backward_input(g->dln, g->dk, w->k_w, BT, C, C);
    vf_matmul_backward_input(g->dln, g->dv, w->v_w, BT, C, C);
    vf_layernorm_backward(dx_in, g->dln, x_in, w->ln1_w, a->ln1_mean, a->ln1_rstd, eps, BT, C);
}

int vf_clip_text_grads_init(vf_clip_text_grads *g, const vf_clip_text_weights *w, int B_max, int T_max, vf_error *err) {
    memset(g, 0, sizeof *g);
    const vf_clip_encoder_config *e = &w->cfg.enc;
    size_t C = e->hidden_size;
    size_t bytes = vf_tfm_grads_bytes(e, B_max, T_max) + 2 * vf_arena_round((size_t)B_max * T_max * C * sizeof(float)) +
                   2 * vf_arena_round((size_t)B_max * C * sizeof(float));
    if (vf_arena_init(&g->arena, bytes, err) != 0) return vf_error_prefix(err, "text backward buffers");
    g->B_max = B_max;
    g->T_max = T_max;
    int ok = vf_tfm_grads_carve(&g->layer, &g->arena, e, B_max, T_max) == 0;
    ok = ok && (g->dx_a = vf_arena_floats(&g->arena, (size_t)B_max * T_max * C));
    ok = ok && (g->dx_b = vf_arena_floats(&g->arena, (size_t)B_max * T_max * C));
    ok = ok && (g->dpooled_ln = vf_arena_floats(&g->arena, (size_t)B_max * C));
    ok = ok && (g->dpooled = vf_arena_floats(&g->arena, (size_t)B_max * C));
    if (!ok) { vf_arena_free(&g->arena); return vf_fail(err, "text backward buffers: arena sizing bug"); }
    return 0;
}

void vf_clip_text_grads_free(vf_clip_text_grads *g) { vf_arena_free(&g->arena); }

int vf_clip_text_backward(const vf_clip_text_weights *w, const vf_clip_text_acts *a, vf_clip_text_grads *g,
                          const float *dout, float *demb, vf_error *err) {
    const vf_clip_encoder_config *e = &w->cfg.enc;
    const int B = a->B, T = a->T, C = e->hidden_size, L = e->num_layers, D = w->projection_dim;
    if (B <= 0 || T <= 0) return vf_fail(err, "text backward: no forward pass to differentiate");
    if (B > g->B_max || T > g->T_max)
        return vf_fail(err, "text backward: batch %d x length %d exceeds the buffers' %d x %d", B, T, g->B_max, g->T_max);
    // out (B, D) = pooled_ln (B, C) @ projection^T
    memset(g->dpooled_ln, 0, (size_t)B * C * sizeof(float));
    vf_matmul_backward_input(g->dpooled_ln, dout, w->projection, B, C, D);    // (B, C)
    memset(g->dpooled, 0, (size_t)B * C * sizeof(float));
    vf_layernorm_backward(g->dpooled, g->dpooled_ln, a->pooled, w->final_ln_w, a->pooled_mean, a->pooled_rstd,
                          e->layer_norm_eps, B, C);                              // (B, C)
    float *dx = g->dx_a, *dx_next = g->dx_b;                                   // (B, T, C)
    memset(dx, 0, (size_t)B * T * C * sizeof(float));
    for (int b = 0; b < B; b++)
        memcpy(dx + ((size_t)b * T + a->eot[b]) * C, g->dpooled + (size_t)b * C, (size_t)C * sizeof(float));
    for (int l = L - 1; l >= 0; l--) {
        float *target = l == 0 ? demb : dx_next;
        vf_tfm_layer_backward(&w->layers[l], e, &a->layers[l], a->hidden[l], dx, target, &g->layer, B, T);
        dx_next = dx;
        dx = target;
    }
    if (L == 0) memcpy(demb, dx, (size_t)B * T * C * sizeof(float));
    return 0;
}
