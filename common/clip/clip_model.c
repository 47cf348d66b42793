/* clip_model: tower loading, fingerprint, vision dispatch (see clip_model.h). */
#include "clip/clip_model.h"
#include "clip/open_clip_model.h" /* issue 5: OpenCLIP checkpoint directories */
#include "clip/weight_binder.h"
#include "util/sha256.h"

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

/* Opens config.json + model.safetensors of model_dir. */
static int open_model(const char *model_dir, vf_clip_config *cfg, vf_safetensors *st, vf_error *err) {
    if (vf_clip_config_load(model_dir, cfg, err) != 0) return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", model_dir);
    return vf_st_open(st, path, err);
}

static int bind_text_cb(vf_binder *b, void *w, vf_error *err) { return bind_text(b, w, err); }
static int bind_vit_cb(vf_binder *b, void *w, vf_error *err) { return bind_vit(b, w, err); }

/* ---- text tower -------------------------------------------------------------- */
int vf_clip_text_load(vf_clip_text_tower *t, const char *model_dir, vf_error *err) {
    memset(t, 0, sizeof *t);
    if (vf_open_clip_is_dir(model_dir)) return vf_open_clip_text_load(t, model_dir, err); /* issue 5 */
    if (open_model(model_dir, &t->cfg, &t->st, err) != 0) return -1;
    t->w.cfg = t->cfg.text;
    t->w.projection_dim = t->cfg.projection_dim;
    if (vf_bind_all(&t->st, &t->params, bind_text_cb, &t->w, err) != 0 ||
        vf_st_read_f32(&t->st, "logit_scale", 0, NULL, &t->logit_scale, err) != 0 ||
        vf_clip_fingerprint(&t->st, &t->cfg, t->fingerprint, err) != 0) {
        vf_clip_text_free(t);
        return -1;
    }
    if (!isfinite(t->logit_scale)) {
        vf_fail(err, "%s: logit_scale is not finite", t->st.path);
        vf_clip_text_free(t);
        return -1;
    }
    return 0;
}

void vf_clip_text_free(vf_clip_text_tower *t) {
    vf_arena_free(&t->params);
    vf_st_close(&t->st);
    memset(t, 0, sizeof *t);
}

/* ---- vision tower ------------------------------------------------------------- */
int vf_vision_load(vf_vision_tower *t, const char *model_dir, int max_batch, vf_error *err) {
    memset(t, 0, sizeof *t);
    if (vf_open_clip_is_dir(model_dir)) return vf_open_clip_vision_load(t, model_dir, max_batch, err); /* issue 5 */
    if (open_model(model_dir, &t->cfg, &t->st, err) != 0) return -1;
    t->kind = VF_VISION_VIT;
    t->image_size = t->cfg.vision.image_size;
    t->embed_dim = t->cfg.projection_dim;
    t->max_batch = max_batch;
    t->random_weights = t->cfg.random_weights;
    vf_vit_weights *w = &t->u.vit.w;
    w->cfg = t->cfg.vision;
    w->projection_dim = t->cfg.projection_dim;
    if (vf_bind_all(&t->st, &t->params, bind_vit_cb, w, err) != 0 ||
        vf_clip_fingerprint(&t->st, &t->cfg, t->fingerprint, err) != 0 ||
        vf_vit_acts_init(&t->u.vit.acts, w, max_batch, err) != 0) {
        vf_vision_free(t);
        return -1;
    }
    return 0;
}

void vf_vision_free(vf_vision_tower *t) {
    vf_vision_set_cpu_bf16(t, 0, NULL);
    if (t->kind == VF_VISION_VIT) vf_vit_acts_free(&t->u.vit.acts);
    if (t->kind == VF_VISION_RESNET) { vf_resnet_acts_free(&t->u.resnet.acts); vf_resnet_free(&t->u.resnet.net); } /* issue 5 */
    vf_arena_free(&t->params);
    vf_st_close(&t->st);
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

/* ---- fingerprint ------------------------------------------------------------- */
static void sha_u64(vf_sha256_ctx *c, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    vf_sha256_add(c, b, 8);
}

int vf_clip_fingerprint(const vf_safetensors *st, const vf_clip_config *cfg, unsigned char out[VF_FINGERPRINT_LEN], vf_error *err) {
    char *json = vf_clip_config_to_json(cfg);
    if (!json) return vf_fail(err, "fingerprint: out of memory");
    vf_sha256_ctx c;
    vf_sha256_begin(&c);
    vf_sha256_add(&c, (const unsigned char *)json, strlen(json) + 1);
    free(json);
    /* Tensors are sorted by name, so both towers hash the same sequence.  Sample
     * 64 bytes from the start, middle and end of each: a different checkpoint
     * with the same shapes differs there with overwhelming probability. */
    for (int i = 0; i < st->n_tensors; i++) {
        const vf_st_tensor *t = &st->tensors[i];
        vf_sha256_add(&c, (const unsigned char *)t->name, strlen(t->name) + 1);
        sha_u64(&c, (uint64_t)t->dtype);
        sha_u64(&c, (uint64_t)t->ndim);
        for (int d = 0; d < t->ndim; d++) sha_u64(&c, (uint64_t)t->shape[d]);
        size_t n = t->end - t->begin, k = n < 64 ? n : 64;
        vf_sha256_add(&c, t->data, k);
        vf_sha256_add(&c, t->data + (n - k) / 2, k);
        vf_sha256_add(&c, t->data + n - k, k);
    }
    vf_sha256_end(&c, out);
    return 0;
}

void vf_fingerprint_hex(const unsigned char fp[VF_FINGERPRINT_LEN], char hex[2 * VF_FINGERPRINT_LEN + 1]) {
    for (int i = 0; i < VF_FINGERPRINT_LEN; i++) snprintf(hex + 2 * i, 3, "%02x", fp[i]);
}
