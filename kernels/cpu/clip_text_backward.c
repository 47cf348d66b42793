/* clip_text_backward: input-embedding gradient of the CLIP text tower and of
 * one pre-LN encoder layer, on the rows that can carry a wanted gradient
 * (see clip_text_backward.h). */
#include "cpu/clip_text_backward.h"

#include <math.h>
#include <string.h>

void vf_tfm_grads_carve(vf_tfm_grads *g, vf_arena *arena, const vf_clip_encoder_config *cfg, int B, int T) {
    size_t BT = (size_t)B * T, C = cfg->hidden_size, F = cfg->intermediate_size, NH = cfg->num_heads;
    g->dres1 = vf_arena_floats(arena, BT * C);
    g->dln = vf_arena_floats(arena, BT * C);
    g->datty = vf_arena_floats(arena, BT * C);
    g->dq = vf_arena_floats(arena, BT * C);
    g->dk = vf_arena_floats(arena, BT * C);
    g->dv = vf_arena_floats(arena, BT * C);
    g->rows_c = vf_arena_floats(arena, BT * C);
    g->dfch_act = vf_arena_floats(arena, BT * F);
    g->dfch = vf_arena_floats(arena, BT * F);
    g->rows_f = vf_arena_floats(arena, BT * F);
    g->rows_mean = vf_arena_floats(arena, BT);
    g->rows_rstd = vf_arena_floats(arena, BT);
    g->att = vf_arena_floats(arena, (size_t)B * NH * T * T);
}

/* dst (R, W) = the rows of src (B, T, W) listed in `rows`, packed. */
static void gather_rows(float *dst, const float *src, const vf_row_ranges *rows, int B, int T, int W) {
    for (int b = 0; b < B; b++) {
        int n = rows->hi[b] - rows->lo[b];
        if (n > 0)
            memcpy(dst + (size_t)rows->off[b] * W, src + ((size_t)b * T + rows->lo[b]) * W, (size_t)n * W * sizeof(float));
    }
}

static void activation_backward(vf_activation act, float *dinp, const float *inp, const float *dout, long N) {
    switch (act) {
    case VF_ACT_QUICK_GELU: vf_quick_gelu_backward(dinp, inp, dout, N); break;
    case VF_ACT_GELU: vf_gelu_backward(dinp, inp, dout, N); break;
    case VF_ACT_GELU_TANH: vf_gelu_tanh_backward(dinp, inp, dout, N); break;
    }
}

void vf_tfm_layer_backward(const vf_tfm_layer *w, const vf_clip_encoder_config *cfg, const vf_tfm_acts *a,
                           const float *x_in, const float *dx_out, float *dx_in, vf_tfm_grads *g, int B, int T,
                           const vf_row_ranges *rows, int R) {
    const int C = cfg->hidden_size, F = cfg->intermediate_size, NH = cfg->num_heads;
    const float eps = cfg->layer_norm_eps, scale = 1.0f / sqrtf((float)(C / NH));
    const size_t nC = (size_t)R * C * sizeof(float), nF = (size_t)R * F * sizeof(float);
    /* out = res1 + fc2(act(fc1(ln2(res1)))) */
    memcpy(g->dres1, dx_out, nC);                                              // (R, C) residual path
    memset(g->dfch_act, 0, nF);
    vf_matmul_backward_input(g->dfch_act, dx_out, w->fc2_w, R, F, C);          // (R, F)
    gather_rows(g->rows_f, a->fch, rows, B, T, F);                             // (R, F) fc1 output
    memset(g->dfch, 0, nF);
    activation_backward(cfg->act, g->dfch, g->rows_f, g->dfch_act, (long)R * F);
    memset(g->dln, 0, nC);
    vf_matmul_backward_input(g->dln, g->dfch, w->fc1_w, R, C, F);              // (R, C)
    gather_rows(g->rows_c, a->res1, rows, B, T, C);
    gather_rows(g->rows_mean, a->ln2_mean, rows, B, T, 1);
    gather_rows(g->rows_rstd, a->ln2_rstd, rows, B, T, 1);
    vf_layernorm_backward(g->dres1, g->dln, g->rows_c, w->ln2_w, g->rows_mean, g->rows_rstd, eps, R, C);
    /* res1 = x_in + out_proj(attention(q, k, v)), q/k/v = proj(ln1(x_in)) */
    memcpy(dx_in, g->dres1, nC);                                               // (R, C) residual path
    memset(g->datty, 0, nC);
    vf_matmul_backward_input(g->datty, g->dres1, w->o_w, R, C, C);             // (R, C)
    memset(g->dq, 0, nC);
    memset(g->dk, 0, nC);
    memset(g->dv, 0, nC);
    vf_attention_backward(g->dq, g->dk, g->dv, g->att, g->datty, a->q, a->k, a->v, a->att, B, T, C, NH, C, scale, rows);
    memset(g->dln, 0, nC);
    vf_matmul_backward_input(g->dln, g->dq, w->q_w, R, C, C);                  // (R, C)
    vf_matmul_backward_input(g->dln, g->dk, w->k_w, R, C, C);
    vf_matmul_backward_input(g->dln, g->dv, w->v_w, R, C, C);
    gather_rows(g->rows_c, x_in, rows, B, T, C);
    gather_rows(g->rows_mean, a->ln1_mean, rows, B, T, 1);
    gather_rows(g->rows_rstd, a->ln1_rstd, rows, B, T, 1);
    vf_layernorm_backward(dx_in, g->dln, g->rows_c, w->ln1_w, g->rows_mean, g->rows_rstd, eps, R, C);
}

/* The scratch arena's layout, for both of its passes (util/arena.h). */
static void text_grads_carve(vf_clip_text_grads *g, const vf_clip_encoder_config *e, int B_max, int T_max) {
    const size_t C = (size_t)e->hidden_size;
    vf_tfm_grads_carve(&g->layer, &g->arena, e, B_max, T_max);
    g->dx_a = vf_arena_floats(&g->arena, (size_t)B_max * T_max * C);
    g->dx_b = vf_arena_floats(&g->arena, (size_t)B_max * T_max * C);
    g->dpooled_ln = vf_arena_floats(&g->arena, (size_t)B_max * C);
    g->dpooled = vf_arena_floats(&g->arena, (size_t)B_max * C);
    g->lo = vf_arena_alloc(&g->arena, (size_t)B_max * sizeof(int));
    g->hi = vf_arena_alloc(&g->arena, (size_t)B_max * sizeof(int));
    g->off = vf_arena_alloc(&g->arena, (size_t)B_max * sizeof(int));
}

int vf_clip_text_grads_init(vf_clip_text_grads *g, const vf_clip_text_weights *w, int B_max, int T_max, vf_error *err) {
    memset(g, 0, sizeof *g);
    const vf_clip_encoder_config *e = &w->cfg.enc;
    vf_arena_plan(&g->arena);
    text_grads_carve(g, e, B_max, T_max);
    if (vf_arena_commit(&g->arena, err) != 0) return vf_error_prefix(err, "text backward buffers");
    text_grads_carve(g, e, B_max, T_max);
    g->B_max = B_max;
    g->T_max = T_max;
    return 0;
}

void vf_clip_text_grads_free(vf_clip_text_grads *g) { vf_arena_free(&g->arena); }

int vf_clip_text_backward(const vf_clip_text_weights *w, const vf_clip_text_acts *a, vf_clip_text_grads *g,
                          const float *dout, const int *lo, float *demb, vf_error *err) {
    const vf_clip_encoder_config *e = &w->cfg.enc;
    const int B = a->B, T = a->T, C = e->hidden_size, L = e->num_layers, D = w->projection_dim;
    if (B <= 0 || T <= 0) return vf_fail(err, "text backward: no forward pass to differentiate");
    if (B > g->B_max || T > g->T_max)
        return vf_fail(err, "text backward: batch %d x length %d exceeds the buffers' %d x %d", B, T, g->B_max, g->T_max);
    /* The rows computed: [lo, eot] of each sequence, packed. */
    int R = 0;
    for (int b = 0; b < B; b++) {
        int first = lo ? lo[b] : 0;
        if (first < 0 || first > a->eot[b])
            return vf_fail(err, "text backward: first wanted row %d of sequence %d is outside 0..%d (its EOT)", first, b, a->eot[b]);
        g->lo[b] = first;
        g->hi[b] = a->eot[b] + 1;
        g->off[b] = R;
        R += g->hi[b] - g->lo[b];
    }
    const vf_row_ranges rows = {g->lo, g->hi, g->off};
    // out (B, D) = pooled_ln (B, C) @ projection^T
    memset(g->dpooled_ln, 0, (size_t)B * C * sizeof(float));
    vf_matmul_backward_input(g->dpooled_ln, dout, w->projection, B, C, D);    // (B, C)
    memset(g->dpooled, 0, (size_t)B * C * sizeof(float));
    vf_layernorm_backward(g->dpooled, g->dpooled_ln, a->pooled, w->final_ln_w, a->pooled_mean, a->pooled_rstd,
                          e->layer_norm_eps, B, C);                              // (B, C)
    float *dx = g->dx_a, *dx_next = g->dx_b;                                   // (R, C) packed
    memset(dx, 0, (size_t)R * C * sizeof(float));
    for (int b = 0; b < B; b++)   // the EOT row is the last of each sequence's range
        memcpy(dx + (size_t)(g->off[b] + a->eot[b] - g->lo[b]) * C, g->dpooled + (size_t)b * C, (size_t)C * sizeof(float));
    for (int l = L - 1; l >= 0; l--) {
        vf_tfm_layer_backward(&w->layers[l], e, &a->layers[l], a->hidden[l], dx, dx_next, &g->layer, B, T, &rows, R);
        float *t = dx; dx = dx_next; dx_next = t;
    }
    /* unpack into demb (B, T, C) */
    memset(demb, 0, (size_t)B * T * C * sizeof(float));
    for (int b = 0; b < B; b++)
        memcpy(demb + ((size_t)b * T + g->lo[b]) * C, dx + (size_t)g->off[b] * C, (size_t)(g->hi[b] - g->lo[b]) * C * sizeof(float));
    return 0;
}
