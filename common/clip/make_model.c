/* make_model: random-weight CLIP model directories (see make_model.h). */
#include "clip/make_model.h"
#include "clip/clip_config.h"
#include "clip/random_weights.h"
#include "clip/tokenizer.h"
#include "util/fileio.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the tensor table --------------------------------------------------------- */
typedef vf_random_weights gen;

typedef struct normal_init { float mean, std; } normal_init;

/* values[i] = mean + std * N(0, 1) */
static void fill_normal(float *values, size_t n, vf_rng *stream, const void *how) {
    const normal_init *p = how;
    for (size_t i = 0; i < n; i += 2) {
        double radius, angle;
        vf_rng_box_muller(stream, &radius, &angle);
        values[i] = (float)(p->mean + p->std * radius * cos(angle));
        if (i + 1 < n) values[i + 1] = (float)(p->mean + p->std * radius * sin(angle));
    }
}

static int add(gen *g, float mean, float std, vf_error *err, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static int add(gen *g, float mean, float std, vf_error *err, int ndim, const int64_t *shape, const char *fmt, ...) {
    const normal_init how = {mean, std};
    va_list ap;
    va_start(ap, fmt);
    int rc = vf_random_weights_vadd(g, fill_normal, &how, err, ndim, shape, fmt, ap);
    va_end(ap);
    return rc;
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}
/* Scales of transformers' CLIPPreTrainedModel._init_weights (factor 1), so a
 * random model's outputs depend on its input the way a freshly initialised
 * CLIP's do (with N(0, 0.02) everywhere the pooled features are nearly
 * constant and nothing can be learned on them).  Biases are N(0, 0.02) rather
 * than zero so the tests exercise them; LayerNorm weights lie around 1. */
#define W 0.0f, 0.02f
#define LNW 1.0f, 0.05f

static int add_encoder(gen *g, const char *p, const vf_clip_encoder_config *e, vf_error *err) {
    const int64_t C = e->hidden_size, F = e->intermediate_size;
    const float in_std = (float)(pow((double)C, -0.5) * pow(2.0 * e->num_layers, -0.5));
    const float out_std = (float)pow((double)C, -0.5), fc1_std = (float)pow(2.0 * (double)C, -0.5);
    for (int l = 0; l < e->num_layers; l++) {
        static const char *proj[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
        for (int j = 0; j < 4; j++)
            if (add(g, 0.0f, j == 3 ? out_std : in_std, err, 2, SHAPE(C, C), "%s.encoder.layers.%d.self_attn.%s.weight", p, l, proj[j]) ||
                add(g, W, err, 1, SHAPE(C), "%s.encoder.layers.%d.self_attn.%s.bias", p, l, proj[j]))
                return -1;
        if (add(g, LNW, err, 1, SHAPE(C), "%s.encoder.layers.%d.layer_norm1.weight", p, l) ||
            add(g, W, err, 1, SHAPE(C), "%s.encoder.layers.%d.layer_norm1.bias", p, l) ||
            add(g, 0.0f, fc1_std, err, 2, SHAPE(F, C), "%s.encoder.layers.%d.mlp.fc1.weight", p, l) ||
            add(g, W, err, 1, SHAPE(F), "%s.encoder.layers.%d.mlp.fc1.bias", p, l) ||
            add(g, 0.0f, in_std, err, 2, SHAPE(C, F), "%s.encoder.layers.%d.mlp.fc2.weight", p, l) ||
            add(g, W, err, 1, SHAPE(C), "%s.encoder.layers.%d.mlp.fc2.bias", p, l) ||
            add(g, LNW, err, 1, SHAPE(C), "%s.encoder.layers.%d.layer_norm2.weight", p, l) ||
            add(g, W, err, 1, SHAPE(C), "%s.encoder.layers.%d.layer_norm2.bias", p, l))
            return -1;
    }
    return 0;
}

static int add_all(gen *g, const void *cfg_v, vf_error *err) {
    const vf_clip_config *cfg = cfg_v;
    const vf_clip_text_config *t = &cfg->text;
    const vf_clip_vision_config *v = &cfg->vision;
    const int64_t TC = t->enc.hidden_size, VC = v->enc.hidden_size, D = cfg->projection_dim, P = v->patch_size;
    const int64_t G = v->image_size / v->patch_size;
    if (add(g, W, err, 2, SHAPE(t->vocab_size, TC), "text_model.embeddings.token_embedding.weight") ||
        add(g, 0.0f, 0.01f, err, 2, SHAPE(t->max_positions, TC), "text_model.embeddings.position_embedding.weight") ||
        add_encoder(g, "text_model", &t->enc, err) ||
        add(g, LNW, err, 1, SHAPE(TC), "text_model.final_layer_norm.weight") ||
        add(g, W, err, 1, SHAPE(TC), "text_model.final_layer_norm.bias") ||
        add(g, 0.0f, (float)pow((double)TC, -0.5), err, 2, SHAPE(D, TC), "text_projection.weight") ||
        add(g, 0.0f, (float)pow((double)VC, -0.5), err, 1, SHAPE(VC), "vision_model.embeddings.class_embedding") ||
        add(g, W, err, 4, SHAPE(VC, 3, P, P), "vision_model.embeddings.patch_embedding.weight") ||
        add(g, 0.0f, 0.01f, err, 2, SHAPE(G * G + 1, VC), "vision_model.embeddings.position_embedding.weight") ||
        add(g, LNW, err, 1, SHAPE(VC), "vision_model.pre_layrnorm.weight") ||
        add(g, W, err, 1, SHAPE(VC), "vision_model.pre_layrnorm.bias") ||
        add_encoder(g, "vision_model", &v->enc, err) ||
        add(g, LNW, err, 1, SHAPE(VC), "vision_model.post_layernorm.weight") ||
        add(g, W, err, 1, SHAPE(VC), "vision_model.post_layernorm.bias") ||
        add(g, 0.0f, (float)pow((double)VC, -0.5), err, 2, SHAPE(D, VC), "visual_projection.weight"))
        return -1;
    /* logit_scale: a scalar holding the config's initial value. */
    float *ls;
    if (vf_random_weights_add_fixed(g, "logit_scale", 0, NULL, &ls, err)) return -1;
    if (ls) *ls = cfg->logit_scale_init;
    return 0;
}

static int write_text(const char *dir, const char *file, const char *text, vf_error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return vf_write_atomic(path, text, strlen(text), err);
}

static int write_preprocessor(const char *dir, int size, vf_error *err) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\n  \"crop_size\": {\"height\": %d, \"width\": %d},\n  \"do_center_crop\": true,\n  \"do_convert_rgb\": true,\n"
             "  \"do_normalize\": true,\n  \"do_rescale\": true,\n  \"do_resize\": true,\n"
             "  \"image_mean\": [0.48145466, 0.4578275, 0.40821073],\n  \"image_processor_type\": \"CLIPImageProcessor\",\n"
             "  \"image_std\": [0.26862954, 0.26130258, 0.27577711],\n  \"processor_class\": \"CLIPProcessor\",\n"
             "  \"resample\": 3,\n  \"rescale_factor\": 0.00392156862745098,\n  \"size\": {\"shortest_edge\": %d}\n}\n",
             size, size, size);
    return write_text(dir, "preprocessor_config.json", json, err);
}

int vf_make_model(const char *like, uint64_t seed, vf_dtype dtype, const char *out_dir, int config_only, vf_error *err) {
    vf_clip_config cfg;
    if (vf_clip_config_preset(like, &cfg, err) != 0) return -1;
    if (dtype != VF_DT_F32 && dtype != VF_DT_F16 && dtype != VF_DT_BF16)
        return vf_fail(err, "make-model: dtype %s is not one of F32, F16, BF16", vf_dtype_name(dtype));
    cfg.random_weights = 1;
    if (vf_mkdirs(out_dir, 0755, err) != 0) return -1;
    int vocab = 0, sot = 0, eot = 0;
    if (!config_only && vf_tokenizer_write_tiny(out_dir, &vocab, &sot, &eot, err) != 0) return -1;
    if (config_only) { vocab = cfg.text.vocab_size; sot = cfg.text.bos_token_id; eot = cfg.text.eos_token_id; }
    /* tiny uses the small vocabulary's size; full presets keep 49408 rows so
     * every shape is the real one (the extra rows are never looked up). */
    if (strcmp(like, "tiny") == 0) cfg.text.vocab_size = vocab;
    if (vocab > cfg.text.vocab_size) return vf_fail(err, "make-model: vocabulary of %d exceeds vocab_size %d", vocab, cfg.text.vocab_size);
    cfg.text.bos_token_id = sot;
    cfg.text.eos_token_id = eot;
    cfg.text.pad_token_id = eot;
    if (eot == 2) return vf_fail(err, "make-model: eos id 2 would trigger transformers' legacy pooling rule");
    char *config_json = vf_clip_config_to_json(&cfg);
    if (!config_json) return vf_fail(err, "make-model: out of memory");
    int rc = 0;
    if (!config_only) {
        char path[4200];
        snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
        rc = vf_random_weights_write(path, dtype, seed, add_all, &cfg, err);
        if (rc == 0) rc = write_preprocessor(out_dir, cfg.vision.image_size, err);
    }
    /* config.json last: its presence means the directory is complete. */
    if (rc == 0) rc = write_text(out_dir, "config.json", config_json, err);
    free(config_json);
    return rc;
}
