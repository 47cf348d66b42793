/* clip_text: causal text tower forward (see clip_text.h). */
#include "cpu/clip_text.h"
#include "cpu/layernorm.h"
#include "cpu/matmul.h"

#include <string.h>

/* The activation arena's layout, for both of its passes (util/arena.h).
 * While counting, the tables hidden and layers do not exist yet. */
static void text_acts_carve(vf_clip_text_acts *a, const vf_clip_encoder_config *e, int B_max, int T_max) {
    const int L = e->num_layers;
    const size_t BT = (size_t)B_max * T_max, C = (size_t)e->hidden_size;
    a->hidden = vf_arena_alloc(&a->arena, sizeof(float *) * (L + 1));
    a->layers = vf_arena_alloc(&a->arena, sizeof(vf_tfm_acts) * L);
    for (int l = 0; l <= L; l++) {
        float *h = vf_arena_floats(&a->arena, BT * C);
        if (a->hidden) a->hidden[l] = h;
    }
    for (int l = 0; l < L; l++) {
        vf_tfm_acts scratch;
        vf_tfm_acts_carve(a->layers ? &a->layers[l] : &scratch, &a->arena, e, B_max, T_max, 1);
    }
    a->eot = vf_arena_alloc(&a->arena, sizeof(int) * B_max);
    a->pooled = vf_arena_floats(&a->arena, (size_t)B_max * C);
    a->pooled_ln = vf_arena_floats(&a->arena, (size_t)B_max * C);
    a->pooled_mean = vf_arena_floats(&a->arena, B_max);
    a->pooled_rstd = vf_arena_floats(&a->arena, B_max);
}

int vf_clip_text_acts_init(vf_clip_text_acts *a, const vf_clip_text_weights *w, int B_max, int T_max, vf_error *err) {
    memset(a, 0, sizeof *a);
    const vf_clip_encoder_config *e = &w->cfg.enc;
    if (B_max <= 0 || T_max <= 0 || T_max > w->cfg.max_positions)
        return vf_fail(err, "text activations: batch %d / length %d out of range (length 1..%d)", B_max, T_max, w->cfg.max_positions);
    vf_arena_plan(&a->arena);
    text_acts_carve(a, e, B_max, T_max);
    if (vf_arena_commit(&a->arena, err) != 0) return vf_error_prefix(err, "text activations");
    text_acts_carve(a, e, B_max, T_max);
    a->B_max = B_max;
    a->T_max = T_max;
    a->L = e->num_layers;
    return 0;
}

void vf_clip_text_acts_free(vf_clip_text_acts *a) {
    vf_arena_free(&a->arena);
    memset(a, 0, sizeof *a);
}

int vf_clip_text_embed_tokens(const vf_clip_text_weights *w, const int32_t *ids, int B, int T, float *emb, vf_error *err) {
    const int C = w->cfg.enc.hidden_size, V = w->cfg.vocab_size;
    for (long i = 0; i < (long)B * T; i++) {
        if (ids[i] < 0 || ids[i] >= V)
            return vf_fail(err, "token id %d (sequence %ld, position %ld) is outside the vocabulary of %d", ids[i], i / T, i % T, V);
        memcpy(emb + i * C, w->token_embedding + (long)ids[i] * C, sizeof(float) * C);
    }
    return 0;
}

int vf_clip_text_eot_positions(const vf_clip_text_config *cfg, const int32_t *ids, int B, int T, int *eot, vf_error *err) {
    for (int b = 0; b < B; b++) {
        const int32_t *s = ids + (long)b * T;
        eot[b] = -1;
        if (cfg->eos_token_id == 2) { /* transformers' legacy rule: EOT is the largest id */
            eot[b] = 0;
            for (int t = 1; t < T; t++)
                if (s[t] > s[eot[b]]) eot[b] = t;
        } else {
            for (int t = 0; t < T && eot[b] < 0; t++)
                if (s[t] == cfg->eos_token_id) eot[b] = t;
        }
        if (eot[b] < 0) return vf_fail(err, "sequence %d has no end-of-text token (id %d)", b, cfg->eos_token_id);
    }
    return 0;
}

int vf_clip_text_forward(const vf_clip_text_weights *w, vf_clip_text_acts *a, const float *emb, const int *eot,
                         int B, int T, float *out, vf_error *err) {
    const vf_clip_encoder_config *e = &w->cfg.enc;
    const int C = e->hidden_size, L = e->num_layers, D = w->projection_dim;
    if (B <= 0 || B > a->B_max || T <= 0 || T > a->T_max)
        return vf_fail(err, "text forward: batch %d x length %d exceeds the activations' %d x %d", B, T, a->B_max, a->T_max);
    for (int b = 0; b < B; b++)
        if (eot[b] < 0 || eot[b] >= T) return vf_fail(err, "text forward: EOT position %d of sequence %d is outside 0..%d", eot[b], b, T - 1);
    a->B = B;
    a->T = T;
    float *x0 = a->hidden[0]; // (B, T, C)
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *src = emb + ((long)b * T + t) * C, *pos = w->position_embedding + (long)t * C;
            float *dst = x0 + ((long)b * T + t) * C;
            for (int i = 0; i < C; i++) dst[i] = src[i] + pos[i];
        }
    for (int l = 0; l < L; l++) vf_tfm_layer_forward(&w->layers[l], e, &a->layers[l], a->hidden[l], a->hidden[l + 1], B, T, 1);
    for (int b = 0; b < B; b++) {
        a->eot[b] = eot[b];
        memcpy(a->pooled + (long)b * C, a->hidden[L] + ((long)b * T + eot[b]) * C, sizeof(float) * C); // (B, C)
    }
    vf_layernorm_forward(a->pooled_ln, a->pooled_mean, a->pooled_rstd, a->pooled, w->final_ln_w, w->final_ln_b, B, C, e->layer_norm_eps);
    vf_matmul_forward(out, a->pooled_ln, w->projection, NULL, B, C, D); // (B, D)
    return 0;
}
