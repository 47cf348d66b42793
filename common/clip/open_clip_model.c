/* open_clip_model: OpenCLIP tensor names -> the project's tower weights
 * (see open_clip_model.h).  Binding runs twice over the same code: a sizing
 * pass that checks every tensor while the parameter arena counts, then a
 * binding pass that sets the pointers (clip/weight_binder.h). */
#include "clip/open_clip_model.h"
#include "cpu/clip_text.h"
#include "cpu/clip_vit.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// *dst (cols, rows) = transpose of the (rows, cols) tensor `name`: open_clip
// stores projections as x @ P, the kernels take nn.Linear's (out, in).
static int bind_transposed(vf_binder *b, const float **dst, const char *name, int64_t rows, int64_t cols, vf_error *err) {
    const int64_t shape[2] = {rows, cols};
    const vf_st_tensor *t = vf_bind_check(b, name, 2, shape, err);
    if (!t) return -1;
    size_t n = (size_t)rows * cols;
    float *out = vf_arena_floats(b->arena, n);
    if (b->sizing) return 0;
    float *tmp = malloc(n * sizeof(float));
    if (!tmp) return vf_fail(err, "%s: out of memory at %s", b->st->path, name);
    int rc = vf_st_read_f32(b->st, name, 2, shape, tmp, err) || vf_bind_check_finite(b->st, name, tmp, (int64_t)n, err) ? -1 : 0;
    for (int64_t r = 0; !rc && r < rows; r++)
        for (int64_t c = 0; c < cols; c++) out[(size_t)c * rows + r] = tmp[(size_t)r * cols + c];
    free(tmp);
    *dst = out;
    return rc;
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}

// open_clip's ResidualAttentionBlock: ln_1, attn (fused in_proj), ln_2, mlp.c_fc / c_proj
static int bind_resblocks(vf_binder *b, vf_tfm_layer **layers, const vf_clip_encoder_config *e, const char *prefix,
                          vf_error *err) {
    const int64_t C = e->hidden_size, F = e->intermediate_size;
    *layers = vf_arena_alloc(b->arena, sizeof(vf_tfm_layer) * e->num_layers);  // NULL while sizing
    for (int l = 0; l < e->num_layers; l++) {
        vf_tfm_layer scratch = {0}, *w = b->sizing ? &scratch : &(*layers)[l];
        const float *in_w = NULL, *in_b = NULL;
        const char *p = prefix;
        if (vf_bind(b, &w->ln1_w, err, 1, SHAPE(C), "%stransformer.resblocks.%d.ln_1.weight", p, l) ||
            vf_bind(b, &w->ln1_b, err, 1, SHAPE(C), "%stransformer.resblocks.%d.ln_1.bias", p, l) ||
            vf_bind(b, &in_w, err, 2, SHAPE(3 * C, C), "%stransformer.resblocks.%d.attn.in_proj_weight", p, l) ||
            vf_bind(b, &in_b, err, 1, SHAPE(3 * C), "%stransformer.resblocks.%d.attn.in_proj_bias", p, l) ||
            vf_bind(b, &w->o_w, err, 2, SHAPE(C, C), "%stransformer.resblocks.%d.attn.out_proj.weight", p, l) ||
            vf_bind(b, &w->o_b, err, 1, SHAPE(C), "%stransformer.resblocks.%d.attn.out_proj.bias", p, l) ||
            vf_bind(b, &w->ln2_w, err, 1, SHAPE(C), "%stransformer.resblocks.%d.ln_2.weight", p, l) ||
            vf_bind(b, &w->ln2_b, err, 1, SHAPE(C), "%stransformer.resblocks.%d.ln_2.bias", p, l) ||
            vf_bind(b, &w->fc1_w, err, 2, SHAPE(F, C), "%stransformer.resblocks.%d.mlp.c_fc.weight", p, l) ||
            vf_bind(b, &w->fc1_b, err, 1, SHAPE(F), "%stransformer.resblocks.%d.mlp.c_fc.bias", p, l) ||
            vf_bind(b, &w->fc2_w, err, 2, SHAPE(C, F), "%stransformer.resblocks.%d.mlp.c_proj.weight", p, l) ||
            vf_bind(b, &w->fc2_b, err, 1, SHAPE(C), "%stransformer.resblocks.%d.mlp.c_proj.bias", p, l))
            return -1;
        if (!b->sizing) {  // [q; k; v] rows of the fused projection
            w->q_w = in_w, w->k_w = in_w + C * C, w->v_w = in_w + 2 * C * C;
            w->q_b = in_b, w->k_b = in_b + C, w->v_b = in_b + 2 * C;
        }
    }
    // one layer too many in the file means the config and the weights disagree
    char extra[256];
    snprintf(extra, sizeof extra, "%stransformer.resblocks.%d.ln_1.weight", prefix, e->num_layers);
    if (vf_st_find(b->st, extra))
        return vf_fail(err, "%s: tensor %s is present but the config has %d layers (config and weights disagree)",
                       b->st->path, extra, e->num_layers);
    return 0;
}

int vf_open_clip_bind_vit(vf_binder *b, void *wp, vf_error *err) {
    vf_vit_weights *w = wp;
    const vf_clip_vision_config *c = &w->cfg;
    const int64_t C = c->enc.hidden_size, P = c->patch_size, G = c->image_size / c->patch_size;
    return vf_bind(b, &w->patch_w, err, 4, SHAPE(C, 3, P, P), "visual.conv1.weight") ||
           vf_bind(b, &w->class_emb, err, 1, SHAPE(C), "visual.class_embedding") ||
           vf_bind(b, &w->pos_emb, err, 2, SHAPE(G * G + 1, C), "visual.positional_embedding") ||
           vf_bind(b, &w->pre_ln_w, err, 1, SHAPE(C), "visual.ln_pre.weight") ||
           vf_bind(b, &w->pre_ln_b, err, 1, SHAPE(C), "visual.ln_pre.bias") ||
           bind_resblocks(b, &w->layers, &c->enc, "visual.", err) ||
           vf_bind(b, &w->post_ln_w, err, 1, SHAPE(C), "visual.ln_post.weight") ||
           vf_bind(b, &w->post_ln_b, err, 1, SHAPE(C), "visual.ln_post.bias") ||
           bind_transposed(b, &w->projection, "visual.proj", C, w->projection_dim, err)
               ? -1 : 0;
}

int vf_open_clip_bind_text(vf_binder *b, void *wp, vf_error *err) {
    vf_clip_text_weights *w = wp;
    const vf_clip_text_config *c = &w->cfg;
    const int64_t C = c->enc.hidden_size;
    return vf_bind(b, &w->token_embedding, err, 2, SHAPE(c->vocab_size, C), "token_embedding.weight") ||
           vf_bind(b, &w->position_embedding, err, 2, SHAPE(c->max_positions, C), "positional_embedding") ||
           bind_resblocks(b, &w->layers, &c->enc, "", err) ||
           vf_bind(b, &w->final_ln_w, err, 1, SHAPE(C), "ln_final.weight") ||
           vf_bind(b, &w->final_ln_b, err, 1, SHAPE(C), "ln_final.bias") ||
           bind_transposed(b, &w->projection, "text_projection", C, w->projection_dim, err)
               ? -1 : 0;
}
