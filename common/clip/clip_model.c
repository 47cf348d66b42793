/* clip_model: towers from a checkpoint, vision dispatch (see clip_model.h). */
#include "clip/clip_model.h"
#include "clip/open_clip_model.h" /* issue 5: OpenCLIP tensor names */
#include "clip/open_clip_resnet.h"
#include "clip/weight_binder.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- binding tensors: a sizing pass, then a binding pass (weight_binder.h) ---- */
#define SHAPE(...) (const int64_t[]){__VA_ARGS__}

static int bind_layers(vf_binder *b, vf_tfm_layer *layers, const vf_clip_encoder_config *e, const char *prefix, vf_error *err) {
    const int64_t C = e->hidden_size, F = e->intermediate_size;
    for (int l = 0; l < e->num_layers; l++) {
        vf_tfm_layer scratch, *w = layers ? &layers[l] : &scratch;
        const char *p = prefix;
        if (vf_bind(b, &w->ln1_w, err, 1, SHAPE(C), "%s.encoder.layers.%d.layer_norm1.weight", p, l) ||
            vf_bind(b, &w->ln1_b, err, 1, SHAPE(C), "%s.encoder.layers.%d.layer_norm1.bias", p, l) ||
            vf_bind(b, &w->q_w, err, 2, SHAPE(C, C), "%s.encoder.layers.%d.self_attn.q_proj.weight", p, l) ||
            vf_bind(b, &w->q_b, err, 1, SHAPE(C), "%s.encoder.layers.%d.self_attn.q_proj.bias", p, l) ||
            vf_bind(b, &w->k_w, err, 2, SHAPE(C, C), "%s.encoder.layers.%d.self_attn.k_proj.weight", p, l) ||
            vf_bind(b, &w->k_b, err, 1, SHAPE(C), "%s.encoder.layers.%d.self_attn.k_proj.bias", p, l) ||
            vf_bind(b, &w->v_w, err, 2, SHAPE(C, C), "%s.encoder.layers.%d.self_attn.v_proj.weight", p, l) ||
            vf_bind(b, &w->v_b, err, 1, SHAPE(C), "%s.encoder.layers.%d.self_attn.v_proj.bias", p, l) ||
            vf_bind(b, &w->o_w, err, 2, SHAPE(C, C), "%s.encoder.layers.%d.self_attn.out_proj.weight", p, l) ||
            vf_bind(b, &w->o_b, err, 1, SHAPE(C), "%s.encoder.layers.%d.self_attn.out_proj.bias", p, l) ||
            vf_bind(b, &w->ln2_w, err, 1, SHAPE(C), "%s.encoder.layers.%d.layer_norm2.weight", p, l) ||
            vf_bind(b, &w->ln2_b, err, 1, SHAPE(C), "%s.encoder.layers.%d.layer_norm2.bias", p, l) ||
            vf_bind(b, &w->fc1_w, err, 2, SHAPE(F, C), "%s.encoder.layers.%d.mlp.fc1.weight", p, l) ||
            vf_bind(b, &w->fc1_b, err, 1, SHAPE(F), "%s.encoder.layers.%d.mlp.fc1.bias", p, l) ||
            vf_bind(b, &w->fc2_w, err, 2, SHAPE(C, F), "%s.encoder.layers.%d.mlp.fc2.weight", p, l) ||
            vf_bind(b, &w->fc2_b, err, 1, SHAPE(C), "%s.encoder.layers.%d.mlp.fc2.bias", p, l))
            return -1;
    }
    return 0;
}

static int bind_text(vf_binder *b, vf_clip_text_weights *w, vf_error *err) {
    const vf_clip_text_config *c = &w->cfg;
    const int64_t C = c->enc.hidden_size, D = w->projection_dim;
    w->layers = vf_arena_alloc(b->arena, sizeof(vf_tfm_layer) * c->enc.num_layers);  // NULL while sizing
    if (vf_bind(b, &w->token_embedding, err, 2, SHAPE(c->vocab_size, C), "text_model.embeddings.token_embedding.weight") ||
        vf_bind(b, &w->position_embedding, err, 2, SHAPE(c->max_positions, C), "text_model.embeddings.position_embedding.weight") ||
        bind_layers(b, w->layers, &c->enc, "text_model", err) ||
        vf_bind(b, &w->final_ln_w, err, 1, SHAPE(C), "text_model.final_layer_norm.weight") ||
        vf_bind(b, &w->final_ln_b, err, 1, SHAPE(C), "text_model.final_layer_norm.bias") ||
        vf_bind(b, &w->projection, err, 2, SHAPE(D, C), "text_projection.weight"))
        return -1;
    return 0;
}

/* The image tower only runs inference, so its q/k/v weights are also stacked
 * into one (3C, C) matrix: one projection matmul per layer instead of three. */
static void stack_qkv(vf_binder *b, vf_tfm_layer *layers, const vf_clip_encoder_config *e) {
    const size_t C = (size_t)e->hidden_size;
    for (int l = 0; l < e->num_layers; l++) {
        float *qkv_w = vf_arena_floats(b->arena, 3 * C * C), *qkv_b = vf_arena_floats(b->arena, 3 * C);
        if (b->sizing) continue;
        vf_tfm_layer *w = &layers[l];
        const float *ws[3] = {w->q_w, w->k_w, w->v_w}, *bs[3] = {w->q_b, w->k_b, w->v_b};
        for (int j = 0; j < 3; j++) {
            memcpy(qkv_w + j * C * C, ws[j], C * C * 4);
            memcpy(qkv_b + j * C, bs[j], C * 4);
        }
        w->qkv_w = qkv_w;
        w->qkv_b = qkv_b;
    }
}

static int bind_vit(vf_binder *b, vf_vit_weights *w, vf_error *err) {
    const vf_clip_vision_config *c = &w->cfg;
    const int64_t C = c->enc.hidden_size, D = w->projection_dim, P = c->patch_size, G = c->image_size / c->patch_size;
    w->layers = vf_arena_alloc(b->arena, sizeof(vf_tfm_layer) * c->enc.num_layers);  // NULL while sizing
    if (vf_bind(b, &w->patch_w, err, 4, SHAPE(C, c->num_channels, P, P), "vision_model.embeddings.patch_embedding.weight") ||
        vf_bind(b, &w->class_emb, err, 1, SHAPE(C), "vision_model.embeddings.class_embedding") ||
        vf_bind(b, &w->pos_emb, err, 2, SHAPE(G * G + 1, C), "vision_model.embeddings.position_embedding.weight") ||
        vf_bind(b, &w->pre_ln_w, err, 1, SHAPE(C), "vision_model.pre_layrnorm.weight") ||
        vf_bind(b, &w->pre_ln_b, err, 1, SHAPE(C), "vision_model.pre_layrnorm.bias") ||
        bind_layers(b, w->layers, &c->enc, "vision_model", err) ||
        vf_bind(b, &w->post_ln_w, err, 1, SHAPE(C), "vision_model.post_layernorm.weight") ||
        vf_bind(b, &w->post_ln_b, err, 1, SHAPE(C), "vision_model.post_layernorm.bias") ||
        vf_bind(b, &w->projection, err, 2, SHAPE(D, C), "visual_projection.weight"))
        return -1;
    stack_qkv(b, w->layers, &c->enc);
    return 0;
}

static int bind_text_cb(vf_binder *b, void *w, vf_error *err) { return bind_text(b, w, err); }
static int bind_vit_cb(vf_binder *b, void *w, vf_error *err) { return bind_vit(b, w, err); }

static int weights_open(const vf_checkpoint *ck, vf_error *err) {
    return ck->has_weights ? 0 : vf_fail(err, "%s: the checkpoint was opened without its weights", ck->dir);
}

/* A directory-taking loader's own checkpoint (the tower frees it). */
static vf_checkpoint *open_own(const char *model_dir, vf_error *err) {
    vf_checkpoint *ck = malloc(sizeof *ck);
    if (!ck) {
        vf_fail(err, "%s: out of memory", model_dir);
        return NULL;
    }
    if (vf_checkpoint_open(ck, model_dir, err)) {
        free(ck);
        return NULL;
    }
    return ck;
}

static void close_own(vf_checkpoint *ck) {
    if (!ck) return;
    vf_checkpoint_close(ck);
    free(ck);
}

/* ---- text tower -------------------------------------------------------------- */
int vf_clip_text_load_from(vf_clip_text_tower *t, const vf_checkpoint *ck, vf_error *err) {
    memset(t, 0, sizeof *t);
    if (weights_open(ck, err)) return -1;
    t->cfg = ck->cfg;
    t->st = &ck->st;
    memcpy(t->fingerprint, ck->fingerprint, sizeof t->fingerprint);
    t->w.cfg = t->cfg.text;
    t->w.projection_dim = t->cfg.projection_dim;
    vf_bind_fn bind = ck->layout == VF_CKPT_OPEN_CLIP ? vf_open_clip_bind_text : bind_text_cb;
    if (vf_bind_all(t->st, &t->params, bind, &t->w, err) != 0 ||
        vf_st_read_f32(t->st, "logit_scale", 0, NULL, &t->logit_scale, err) != 0) {
        vf_clip_text_free(t);
        return -1;
    }
    if (!isfinite(t->logit_scale)) {
        vf_fail(err, "%s: logit_scale is not finite", t->st->path);
        vf_clip_text_free(t);
        return -1;
    }
    return 0;
}

int vf_clip_text_load(vf_clip_text_tower *t, const char *model_dir, vf_error *err) {
    memset(t, 0, sizeof *t);
    vf_checkpoint *ck = open_own(model_dir, err);
    if (!ck) return -1;
    if (vf_clip_text_load_from(t, ck, err)) {
        close_own(ck);
        return -1;
    }
    t->own = ck;
    return 0;
}

void vf_clip_text_free(vf_clip_text_tower *t) {
    vf_arena_free(&t->params);
    close_own(t->own);
    memset(t, 0, sizeof *t);
}

/* ---- vision tower ------------------------------------------------------------- */
int vf_vision_load_from(vf_vision_tower *t, const vf_checkpoint *ck, int max_batch, vf_error *err) {
    memset(t, 0, sizeof *t);
    if (weights_open(ck, err)) return -1;
    t->cfg = ck->cfg;
    t->st = &ck->st;
    memcpy(t->fingerprint, ck->fingerprint, sizeof t->fingerprint);
    t->image_size = t->cfg.vision.image_size;
    t->embed_dim = t->cfg.projection_dim;
    t->max_batch = max_batch;
    t->random_weights = ck->random_weights;
    int rc;
    if (ck->layout == VF_CKPT_OPEN_CLIP && ck->oc.is_resnet) { /* issue 5 */
        t->kind = VF_VISION_RESNET;
        rc = vf_open_clip_resnet_load(&t->u.resnet.net, &ck->oc, t->st, err) ||
             vf_resnet_acts_init(&t->u.resnet.acts, &t->u.resnet.net, max_batch, err);
    } else {
        t->kind = VF_VISION_VIT;
        vf_vit_weights *w = &t->u.vit.w;
        w->cfg = t->cfg.vision;
        w->projection_dim = t->cfg.projection_dim;
        vf_bind_fn bind = ck->layout == VF_CKPT_OPEN_CLIP ? vf_open_clip_bind_vit : bind_vit_cb;
        rc = vf_bind_all(t->st, &t->params, bind, w, err) || vf_vit_acts_init(&t->u.vit.acts, w, max_batch, err);
    }
    if (rc) {
        vf_vision_free(t);
        return -1;
    }
    return 0;
}

int vf_vision_load(vf_vision_tower *t, const char *model_dir, int max_batch, vf_error *err) {
    memset(t, 0, sizeof *t);
    vf_checkpoint *ck = open_own(model_dir, err);
    if (!ck) return -1;
    if (vf_vision_load_from(t, ck, max_batch, err)) {
        close_own(ck);
        return -1;
    }
    t->own = ck;
    return 0;
}

void vf_vision_free(vf_vision_tower *t) {
    vf_vision_set_cpu_bf16(t, 0, NULL);
    if (t->kind == VF_VISION_VIT) vf_vit_acts_free(&t->u.vit.acts);
    if (t->kind == VF_VISION_RESNET) { vf_resnet_acts_free(&t->u.resnet.acts); vf_resnet_free(&t->u.resnet.net); } /* issue 5 */
    vf_arena_free(&t->params);
    close_own(t->own);
    memset(t, 0, sizeof *t);
}

int vf_vision_encode(vf_vision_tower *t, const float *pixels, int B, float *out, vf_error *err) {
    const long per_image = 3L * t->image_size * t->image_size;
    if (B < 0) return vf_fail(err, "image batch of %d", B);
    for (long i = 0; i < B * per_image; i++)
        if (!isfinite(pixels[i]))
            return vf_fail(err, "image %ld: pixel value %g at element %ld is not finite", i / per_image, pixels[i], i % per_image);
    for (int b0 = 0; b0 < B; b0 += t->max_batch) {
        int n = B - b0 < t->max_batch ? B - b0 : t->max_batch;
        switch (t->kind) {
        case VF_VISION_VIT: vf_vit_forward(&t->u.vit.w, &t->u.vit.acts, pixels + b0 * per_image, n, out + (long)b0 * t->embed_dim); break;
        case VF_VISION_RESNET: vf_resnet_forward(&t->u.resnet.net, &t->u.resnet.acts, pixels + b0 * per_image, n, out + (long)b0 * t->embed_dim); break; /* issue 5 */
        default: return vf_fail(err, "vision tower kind %d is not supported", (int)t->kind);
        }
    }
    return 0;
}
