/* clip_vit: ViT image tower forward (see clip_vit.h). */
#include "cpu/clip_vit.h"
#include "cpu/layernorm.h"
#include "cpu/matmul.h"
#include "cpu/matmul_bf16.h"

#include <string.h>

static int vit_tokens(const vf_clip_vision_config *c) {
    int g = c->image_size / c->patch_size;
    return g * g + 1;
}

/* The activation arena's layout, for both of its passes (util/arena.h). */
static void vit_acts_carve(vf_vit_acts *a, const vf_clip_vision_config *c, int B_max) {
    const size_t T = (size_t)vit_tokens(c), C = (size_t)c->enc.hidden_size, K = (size_t)3 * c->patch_size * c->patch_size;
    const size_t B = (size_t)B_max;
    a->patches = vf_arena_floats(&a->arena, B * (T - 1) * K);
    a->patches_bf16 = (uint16_t *)vf_arena_floats(&a->arena, (B * (T - 1) * K + 1) / 2);
    a->x_embed = vf_arena_floats(&a->arena, B * T * C);
    a->x_a = vf_arena_floats(&a->arena, B * T * C);
    a->x_b = vf_arena_floats(&a->arena, B * T * C);
    vf_tfm_acts_carve(&a->layer, &a->arena, &c->enc, B_max, (int)T, 0);
    a->cls = vf_arena_floats(&a->arena, B * C);
    a->cls_ln = vf_arena_floats(&a->arena, B * C);
}

int vf_vit_acts_init(vf_vit_acts *a, const vf_vit_weights *w, int B_max, vf_error *err) {
    memset(a, 0, sizeof *a);
    if (B_max <= 0) return vf_fail(err, "image activations: batch %d must be positive", B_max);
    vf_arena_plan(&a->arena);
    vit_acts_carve(a, &w->cfg, B_max);
    if (vf_arena_commit(&a->arena, err) != 0) return vf_error_prefix(err, "image activations for batch %d", B_max);
    vit_acts_carve(a, &w->cfg, B_max);
    a->B_max = B_max;
    return 0;
}

void vf_vit_acts_free(vf_vit_acts *a) {
    vf_arena_free(&a->arena);
    memset(a, 0, sizeof *a);
}

/* patches (B, NP, 3*P*P), each row in the conv weight's (c, ky, kx) order. */
static void im2col_patches(float *patches, const float *pixels, int B, int H, int P) {
    const int G = H / P, NP = G * G, K = 3 * P * P;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int p = 0; p < NP; p++) {
            const int py = p / G, px = p % G;
            float *row = patches + ((long)b * NP + p) * K;
            for (int c = 0; c < 3; c++)
                for (int ky = 0; ky < P; ky++)
                    memcpy(row + (c * P + ky) * P, pixels + (((long)b * 3 + c) * H + py * P + ky) * H + px * P, sizeof(float) * P);
        }
}

void vf_vit_forward(const vf_vit_weights *w, vf_vit_acts *a, const float *pixels, int B, float *out) {
    const vf_clip_vision_config *c = &w->cfg;
    const int H = c->image_size, P = c->patch_size, T = vit_tokens(c), NP = T - 1, C = c->enc.hidden_size;
    const int L = c->enc.num_layers, D = w->projection_dim;
    im2col_patches(a->patches, pixels, B, H, P);                                   // (B, NP, 3PP)
    float *pe = a->x_a;                                                            // (B, NP, C) scratch
    if (w->patch_bf16) {
        vf_bf16_from_f32(a->patches_bf16, a->patches, (long)B * NP * 3 * P * P);
        vf_bf16_linear_forward(w->patch_bf16, pe, 0, NULL, a->patches_bf16, NULL, B * NP, NULL);
    } else {
        vf_matmul_forward(pe, a->patches, w->patch_w, NULL, B * NP, 3 * P * P, C);
    }
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *src = t == 0 ? w->class_emb : pe + ((long)b * NP + t - 1) * C, *pos = w->pos_emb + (long)t * C;
            float *dst = a->x_embed + ((long)b * T + t) * C;
            for (int i = 0; i < C; i++) dst[i] = src[i] + pos[i];
        }
    float *x = a->x_a, *y = a->x_b;
    vf_layernorm_forward(x, NULL, NULL, a->x_embed, w->pre_ln_w, w->pre_ln_b, B * T, C, c->enc.layer_norm_eps);
    for (int l = 0; l < L; l++) {
        vf_tfm_layer_forward(&w->layers[l], &c->enc, &a->layer, x, y, B, T, 0);
        float *s = x; x = y; y = s;
    }
    for (int b = 0; b < B; b++) memcpy(a->cls + (long)b * C, x + (long)b * T * C, sizeof(float) * C); // (B, C)
    vf_layernorm_forward(a->cls_ln, NULL, NULL, a->cls, w->post_ln_w, w->post_ln_b, B, C, c->enc.layer_norm_eps);
    vf_matmul_forward(out, a->cls_ln, w->projection, NULL, B, C, D); // (B, D)
}
